//! Response-rate limiting at XDP, the scheme of BIND, Knot and NSD: responses are counted per
//! source prefix (`/24` and `/56` by default) and response class in token buckets
//! (`dns_common::limit::rrl_admit`, shared with the fallback), kept in an LRU hash map. Over the
//! rate a response is dropped, but every `slip`-th goes out truncated (TC=1, no records) so that
//! a real resolver behind a spoofed flood still gets through over TCP. Prefixes in the exempt
//! trie and clients with a valid server cookie are never limited.
//!
//! The buckets are one map for all CPUs, updated without a lock: two CPUs charging the same
//! bucket at the same instant may both take the last credit, so a flood spread over CPUs can get
//! a few more responses through than the rate; it can't get fewer.

use aya_ebpf::{
    bindings::xdp_md,
    helpers::generated::{bpf_ktime_get_ns, bpf_xdp_load_bytes},
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use dns_common::{
    limit::{
        rrl_admit, ExemptData, ExemptKey, LimitConfig, RrlBucket, Verdict, CLASS_NODATA,
        CLASS_NXDOMAIN, CLASS_POSITIVE, LIMIT_COOKIES,
    },
    Scratch, Stat,
};

use crate::{
    answer::Answer,
    cookie,
    maps::{count, RRL, RRL_EXEMPT},
    parse::{Query, Udp},
    verifier::{launder, Packed},
    Pass,
};

/// The TC bit of the header's flags, in [`Answer::rcode`] for a slipped answer.
const TC: u16 = 0x0200;

/// The stages' bits: our COOKIE option is in `Scratch::out`; the response is to be slipped, or
/// dropped; (from [`cookies`] only) the client's server cookie is valid.
pub const COOKIE: u64 = 1;
pub const SLIP: u64 = 2;
pub const DROP: u64 = 4;
pub const VALID: u64 = 8;

const SEND: u64 = 0;

/// The first stage, before the lookup: the client's address into `s.src` and, if the query has a
/// COOKIE option and cookies are on, its check and our cookie into `Scratch::out`. The [`COOKIE`]
/// and [`VALID`] bits, for [`limit`]. It runs before the lookup because it doesn't need the
/// answer: the hashes are then verified once, not once for every kind of answer.
#[inline(always)]
pub fn cookies(
    ctx: &XdpContext,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
    lim: &LimitConfig,
) -> Result<u64, Pass> {
    let bits = (q.cookie_at as u64 & 0x3ff)
        | (q.cookie_len as u64 & 0x3f) << 16
        | (udp.v6 as u64) << 24
        | (udp.l3 as u64 & 0xff) << 32;
    cookies_inner(ctx.ctx, s, lim, bits).get()
}

/// [`cookies`], every exit laundered: what follows is one path for the verifier, whatever the
/// cookie said. Inlined, not a subprogram: the cookie's hash subprogram below it would take the
/// stack of three frames past the verifier's 512 bytes.
#[inline(always)]
fn cookies_inner(ctx: *mut xdp_md, s: &mut Scratch, lim: &LimitConfig, bits: u64) -> Packed {
    let cookie_at = bits & 0x3ff;
    let cookie_len = (bits >> 16) & 0x3f;
    let v6 = (bits >> 24) & 1;
    let l3 = ((bits >> 32) & 0xff) as u32;
    let rrl = lim.rrl_interval_ns != 0;
    let cookies = cookie_len != 0 && lim.flags & LIMIT_COOKIES != 0;
    if !rrl && !cookies {
        return launder(s, Packed::value(0));
    }
    s.src = [0; 16];
    // SAFETY: the helper checks the packet range; `s.src` holds 16 bytes.
    let r = unsafe {
        if v6 != 0 {
            bpf_xdp_load_bytes(ctx, l3 + 8, s.src.as_mut_ptr().cast(), 16)
        } else {
            bpf_xdp_load_bytes(ctx, l3 + 12, s.src.as_mut_ptr().cast(), 4)
        }
    };
    if r != 0 {
        return launder(s, Packed::err(Some(Stat::PassMalformed)));
    }
    if !cookies {
        return launder(s, Packed::value(0));
    }
    match cookie::make(s, lim, cookie_at, cookie_len, v6).get() {
        Ok(v) => launder(s, Packed::value(COOKIE | (v & 1) * VALID)),
        Err(p) => launder(s, Packed::err(p)),
    }
}

/// The second stage, after the answer: rate limiting for the answer `a`, given [`cookies`]'s
/// bits `c`. The [`COOKIE`], [`SLIP`] and [`DROP`] bits, laundered into one value so that the
/// reply that follows is one path for the verifier whatever the bucket said.
#[inline(always)]
pub fn limit(
    s: &mut Scratch,
    lim: &LimitConfig,
    udp: &Udp,
    a: &Answer,
    c: u64,
) -> Result<u64, Pass> {
    let mut r = c & COOKIE;
    if lim.rrl_interval_ns != 0 {
        let class = match a.stat {
            Stat::AnsweredNxdomain => CLASS_NXDOMAIN,
            Stat::AnsweredNodata => CLASS_NODATA,
            _ => CLASS_POSITIVE,
        };
        r |= check(s, lim, class as u64, udp.v6 as u64, c & VALID).get()? & (SLIP | DROP);
    }
    launder(s, Packed::value(r)).get()
}

/// Makes `a` a slip when `x` (the [`stage`]'s bits) has [`SLIP`]: TC=1, NOERROR, no records (the
/// question and OPT stay). Without a branch: the lengths, counts and sum are masked, so a slipped
/// and a sent answer are one path for the verifier through the rest of the program, not two.
#[inline(always)]
pub fn slip(a: &mut Answer, x: u64) {
    let slipped = (x & SLIP) >> 1;
    // All ones to keep the answer, zero to slip it.
    let keep = slipped.wrapping_sub(1);
    for p in a.pieces.iter_mut() {
        p.len &= keep as usize;
    }
    a.sum &= keep as u16;
    a.ancount &= keep as u16;
    a.nscount &= keep as u16;
    a.rcode = (a.rcode & keep as u16) | (TC & !keep as u16);
    a.slipped = slipped as u16;
}

/// The verdict for one response of `class` to `s.src`: [`SEND`], [`DROP`] or [`SLIP`]. Counts
/// the limited, exempt and cookie cases (a slip is counted once it is sent).
#[inline(never)]
fn check(s: &mut Scratch, lim: &LimitConfig, class: u64, v6: u64, cookie: u64) -> Packed {
    if cookie != 0 {
        count(Stat::RrlCookie);
        return launder(s, Packed::value(SEND));
    }
    let v6 = v6 != 0;
    // The keys are built in the scratch slot: the stack is shared with the callers' frames.
    s.exempt_key.prefix_len = if v6 { 32 + 128 } else { 32 + 32 };
    s.exempt_key.data = [0; 20];
    s.exempt_key.data[0] = if v6 { 6 } else { 4 };
    let src = s.src;
    s.exempt_key.data[4..20].copy_from_slice(&src);
    // SAFETY: `ExemptKey` has `Key<ExemptData>`'s layout (checked in maps.rs).
    let host = unsafe { &*(&s.exempt_key as *const ExemptKey as *const Key<ExemptData>) };
    if RRL_EXEMPT.get(host).is_some() {
        count(Stat::RrlExempt);
        return launder(s, Packed::value(SEND));
    }
    s.rrl_key.addr = src;
    s.rrl_key.family = if v6 { 6 } else { 4 };
    s.rrl_key.class = class as u8;
    s.rrl_key._pad = [0; 2];
    let mask = if v6 { &lim.v6_mask } else { &lim.v4_mask };
    for (b, m) in s.rrl_key.addr.iter_mut().zip(mask) {
        *b &= *m;
    }
    let key = &s.rrl_key;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let (interval, window, slip) = (lim.rrl_interval_ns, lim.rrl_window_ns, lim.rrl_slip);
    let verdict = match RRL.get_ptr_mut(key) {
        // SAFETY: the map value stays valid for the program's run (RCU); CPUs racing on one
        // bucket may lose an update, which the module's documentation accepts.
        Some(b) => rrl_admit(unsafe { &mut *b }, now, interval, window, slip),
        None => {
            s.bucket = RrlBucket::default();
            let v = rrl_admit(&mut s.bucket, now, interval, window, slip);
            // A full map evicts its least recently used bucket; a failure leaves this response
            // unlimited, which is what a lost bucket means anyway.
            let _ = RRL.insert(&s.rrl_key, &s.bucket, 0);
            v
        }
    };
    let r = match verdict {
        Verdict::Send => SEND,
        Verdict::Drop => {
            count(Stat::RrlLimited);
            DROP
        }
        Verdict::Slip => SLIP,
    };
    launder(s, Packed::value(r))
}
