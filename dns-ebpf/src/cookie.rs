//! DNS cookies (RFC 7873) at XDP: a query with a COOKIE option gets our server cookie back in
//! its OPT record (RFC 9018: version 1, a timestamp and a SipHash-2-4 over the client cookie, the
//! header and the client's address), and a server cookie it brings is checked: a valid one
//! proves the source address, which exempts the response from rate limiting. A bad one counts
//! as none (RFC 7873 §5.2.3: answered as usual, with a new server cookie).
//!
//! The hash and the layout are `dns_common::limit`'s, which the fallback uses too: both paths
//! make the same cookie for the same client, time and secret.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use dns_common::{
    limit::{
        cookie_fresh, siphash24, LimitConfig, CLIENT_COOKIE_LEN, LIMIT_PREV_SECRET, OPTION_COOKIE,
        SERVER_COOKIE_LEN,
    },
    wire::OPT_RR_LEN,
    Scratch, Stat,
};

use crate::{
    reply::OPT_OUT,
    verifier::{launder, Packed},
};

/// Where our COOKIE option goes in `Scratch::out`: right after our OPT record.
pub const COOKIE_OUT: usize = OPT_OUT + OPT_RR_LEN;

/// Checks the server cookie in the option at `s.q[at..at + len]` and writes ours at
/// [`COOKIE_OUT`]; 1 if the one received is valid. A subprogram: the rounds of three hashes are
/// verified once, not along every path of the program.
#[inline(never)]
pub fn make(s: &mut Scratch, lim: &LimitConfig, at: u64, len: u64, v6: u64) -> Packed {
    let at = at as usize & 0x3ff;
    let len = len as usize;
    // The hash input is built in place in the scratch slot (the stack is shared with the
    // callers' frames): client cookie, version, reserved, timestamp, address.
    for i in 0..CLIENT_COOKIE_LEN {
        match s.q.get(at + i) {
            Some(x) => s.hash_in[i] = *x,
            None => return launder(s, Packed::err(Some(Stat::PassMalformed))),
        }
    }
    let src = s.src;
    s.hash_in[16..32].copy_from_slice(&src);
    // SAFETY: a helper without arguments.
    let mono = unsafe { bpf_ktime_get_ns() };
    let now = ((mono + lim.wall_offset_ns) / 1_000_000_000) as u32;
    let mut valid = false;
    if len == CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN {
        // The hash covers the received version, reserved bytes and timestamp as they came.
        let mut got = [0u8; 8];
        for (i, g) in got.iter_mut().enumerate() {
            match (s.q.get(at + 8 + i), s.q.get(at + 16 + i)) {
                (Some(h), Some(x)) => {
                    s.hash_in[8 + i] = *h;
                    *g = *x;
                }
                _ => return launder(s, Packed::err(Some(Stat::PassMalformed))),
            }
        }
        let ts = u32::from_be_bytes([s.hash_in[12], s.hash_in[13], s.hash_in[14], s.hash_in[15]]);
        let got = u64::from_le_bytes(got);
        if s.hash_in[8] == 1 && cookie_fresh(ts, now) {
            valid = hash(s, &lim.secret, v6) == got
                || (lim.flags & LIMIT_PREV_SECRET != 0 && hash(s, &lim.prev_secret, v6) == got);
        }
    }
    s.hash_in[8..12].copy_from_slice(&[1, 0, 0, 0]);
    s.hash_in[12..16].copy_from_slice(&now.to_be_bytes());
    let h = hash(s, &lim.secret, v6).to_le_bytes();
    let o = COOKIE_OUT;
    s.out[o..o + 2].copy_from_slice(&OPTION_COOKIE.to_be_bytes());
    s.out[o + 2..o + 4]
        .copy_from_slice(&((CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN) as u16).to_be_bytes());
    for i in 0..16 {
        s.out[o + 4 + i] = s.hash_in[i];
    }
    s.out[o + 20..o + 28].copy_from_slice(&h);
    launder(s, Packed::value(valid as u64))
}

/// SipHash-2-4 of `s.hash_in` under `key`: 20 bytes for an IPv4 client, 32 for IPv6.
#[inline(always)]
fn hash(s: &Scratch, key: &[u8; 16], v6: u64) -> u64 {
    if v6 != 0 {
        siphash24(key, &s.hash_in)
    } else {
        match s.hash_in.first_chunk::<20>() {
            Some(m) => siphash24(key, m),
            None => 0,
        }
    }
}
