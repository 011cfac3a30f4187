//! The XDP fast path: answers DNS queries for names in the maps at the NIC, passes the rest up.
//!
//! Everything not fully understood goes up with `XDP_PASS` (counted by reason) and the daemon's
//! fallback server answers it. See `dns-common` for the map layout. The modules follow the
//! packet: [`parse`] (L2 to the question), [`csum`] (the query's checksums), [`key`], [`lookup`],
//! [`answer`], [`reply`]; [`maps`] holds the maps and [`verifier`] the shapes of code the
//! verifier needs.
#![no_std]
#![no_main]
// `get_ptr(&s.key)` on purpose: by value, the 96-byte key would be copied onto the 512-byte BPF
// stack; by reference the lookup reads it where it is, in the per-CPU scratch slot.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys are passed by reference so they are read in place, not copied to the stack"
)]

mod answer;
mod cookie;
mod csum;
mod key;
mod lookup;
mod maps;
mod parse;
mod reply;
mod rrl;
mod verifier;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use dns_common::{
    limit::{COOKIE_OPTION_LEN, LIMIT_COOKIES},
    Stat, OPT_MISSES_UNTIL, OPT_STALE_MISSES,
};

/// Why a packet goes up: `None` for traffic that isn't ours (not counted).
type Pass = Option<Stat>;

#[xdp]
pub fn edgedns_xdp(ctx: XdpContext) -> u32 {
    match try_edgedns(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            if let Some(stat) = reason {
                // The first time a CPU meets a frame it can't grow, say so: answers are then
                // going up to the fallback for a reason the operator can act on (driver
                // headroom). Once per CPU, not per packet.
                if maps::count(stat) == 1 && stat as u32 == Stat::PassNoRoom as u32 {
                    warn!(
                        &ctx,
                        "no room to grow a frame for its answer on CPU {}; passing such queries up",
                        // SAFETY: a helper without arguments.
                        unsafe { bpf_get_smp_processor_id() }
                    );
                }
            }
            xdp_action::XDP_PASS
        }
    }
}

/// A program for the *peer* end of a veth pair: veth delivers `XDP_TX` frames only when the
/// receiving end runs an XDP program, and this one lets everything through.
#[xdp]
pub fn edgedns_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The packet's path: `XDP_TX` with the answer, or the reason to pass it up.
#[inline(always)]
fn try_edgedns(ctx: &XdpContext) -> Result<u32, Pass> {
    let cfg = maps::CONFIG.get(0).ok_or(None)?;
    let s = maps::scratch().ok_or(None)?;
    let udp = parse::l2_l4(ctx, cfg, s)?;
    if cfg.enabled == 0 {
        return Err(Some(Stat::PassDisabled));
    }
    let udp = udp.join(s);
    let lim = maps::LIMITS.get(0).ok_or(None)?;
    let cookies = lim.flags & LIMIT_COOKIES != 0;
    let h = parse::header(ctx, &udp)?;
    parse::load_question(ctx, &udp, &h, s)?;
    let rest_sum = csum::sum_scratch(s, h.qlen)?;
    let kept = csum::verify(ctx, &udp, rest_sum)?;
    let q = parse::question(s, &h, rest_sum, cfg, cookies)?;
    let c = rrl::cookies(ctx, &udp, s, &q, lim)?;
    key::build(ctx, &udp, s, &q)?;
    let hit = lookup::name(s, &q)?;
    let mut a = answer::answer(s, &q, hit)?;
    // A fleet edge cut off from its source of truth can't tell a miss from a name created since
    // it lost touch: negative answers go up (counted as `disabled`), the fallback says SERVFAIL.
    // Past the time its daemon last vouched for them (a daemon that died leaves the program
    // answering with `--keep-xdp`), they go up too.
    if a.soa_ptr.is_some()
        && (cfg.options & OPT_STALE_MISSES != 0
            || (cfg.options & OPT_MISSES_UNTIL != 0
                // SAFETY: a helper without arguments, callable from any XDP program.
                && unsafe { bpf_ktime_get_ns() } > cfg.misses_until_ns))
    {
        return Err(Some(Stat::PassDisabled));
    }
    let x = rrl::limit(s, lim, &udp, &a, c)?;
    if x & rrl::DROP != 0 {
        return Ok(xdp_action::XDP_DROP);
    }
    rrl::slip(&mut a, x);
    // Our COOKIE option's length, without a branch: both ways are one path for the verifier.
    let cookie_len = (x & rrl::COOKIE) as usize * COOKIE_OPTION_LEN;
    reply::respond(ctx, cfg, &udp, s, &q, &a, &kept, cookie_len)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
