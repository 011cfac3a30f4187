//! Response-rate limiting (RRL) and DNS cookies (RFC 7873, RFC 9018): the settings the XDP
//! program reads ([`LimitConfig`], in [`crate::map::LIMITS`]), the token bucket and the cookie
//! hash. The XDP program and the daemon's fallback both call these functions, so a response is
//! limited the same way and a server cookie has the same bytes whichever path answers.

/// EDNS option code of COOKIE (RFC 7873 §4).
pub const OPTION_COOKIE: u16 = 10;
/// A client cookie is 8 bytes (RFC 7873 §4).
pub const CLIENT_COOKIE_LEN: usize = 8;
/// An RFC 9018 server cookie: version, reserved (3), timestamp (4), hash (8).
pub const SERVER_COOKIE_LEN: usize = 16;
/// The COOKIE option we send: code, length, client cookie, server cookie.
pub const COOKIE_OPTION_LEN: usize = 4 + CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN;
/// RFC 9018 §4.3: a server cookie older than an hour, or more than 5 minutes in the future, is
/// not accepted.
pub const COOKIE_MAX_AGE: u32 = 3600;
pub const COOKIE_MAX_AHEAD: u32 = 300;

/// Whether a COOKIE option of `len` data bytes is well formed (RFC 7873 §5.2.2: a client cookie
/// alone, or with a server cookie of 8 to 32 bytes); a query with a malformed one gets FORMERR.
#[inline(always)]
pub const fn cookie_len_ok(len: usize) -> bool {
    len == CLIENT_COOKIE_LEN || (len >= 16 && len <= 40)
}

/// Response classes, counted in separate buckets (as Knot and NSD do): a flood of NXDOMAIN for
/// random names doesn't use up a prefix's positive answers.
pub const CLASS_POSITIVE: u8 = 0;
pub const CLASS_NXDOMAIN: u8 = 1;
pub const CLASS_NODATA: u8 = 2;
/// Referrals, errors and whatever else (the fallback's).
pub const CLASS_OTHER: u8 = 3;

/// [`LimitConfig::flags`]: answer COOKIE options with a server cookie.
pub const LIMIT_COOKIES: u32 = 1;
/// [`LimitConfig::flags`]: [`LimitConfig::prev_secret`] is still accepted.
pub const LIMIT_PREV_SECRET: u32 = 2;

/// RRL and cookie settings, at index 0 of [`crate::map::LIMITS`]. All zero: both off.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitConfig {
    /// Nanoseconds of credit one response costs: 10^9 / rate. 0: RRL off.
    pub rrl_interval_ns: u64,
    /// How far a bucket may run ahead of now: `rate` responses' worth (one second), the burst a
    /// fresh prefix gets.
    pub rrl_window_ns: u64,
    /// Every `slip`-th limited response goes out truncated (TC=1, no records); 0: none.
    pub rrl_slip: u32,
    /// Prefix lengths that make a bucket's source.
    pub rrl_v4_prefix: u8,
    pub rrl_v6_prefix: u8,
    pub _pad: u16,
    /// [`LIMIT_COOKIES`], [`LIMIT_PREV_SECRET`].
    pub flags: u32,
    pub _pad2: u32,
    /// Unix time in ns minus the monotonic clock (`bpf_ktime_get_ns`): the program stamps
    /// cookies with wall-clock seconds. The daemon refreshes it.
    pub wall_offset_ns: u64,
    /// SipHash-2-4 key of the server cookies made now, and the one before it (accepted).
    pub secret: [u8; 16],
    pub prev_secret: [u8; 16],
    /// The prefixes as byte masks (`mask_prefix` of all ones), so the program masks an address
    /// without a branch per byte.
    pub v4_mask: [u8; 16],
    pub v6_mask: [u8; 16],
}

impl LimitConfig {
    pub const fn zeroed() -> Self {
        Self {
            rrl_interval_ns: 0,
            rrl_window_ns: 0,
            rrl_slip: 0,
            rrl_v4_prefix: 0,
            rrl_v6_prefix: 0,
            _pad: 0,
            flags: 0,
            _pad2: 0,
            wall_offset_ns: 0,
            secret: [0; 16],
            prev_secret: [0; 16],
            v4_mask: [0; 16],
            v6_mask: [0; 16],
        }
    }

    /// The RRL part for `rate` responses a second per prefix and class (0: off).
    pub fn set_rate(&mut self, rate: u32, slip: u32, v4_prefix: u8, v6_prefix: u8) {
        if rate == 0 {
            self.rrl_interval_ns = 0;
            self.rrl_window_ns = 0;
        } else {
            self.rrl_interval_ns = (1_000_000_000 / u64::from(rate)).max(1);
            self.rrl_window_ns = self.rrl_interval_ns * u64::from(rate);
        }
        self.rrl_slip = slip;
        self.rrl_v4_prefix = v4_prefix.min(32);
        self.rrl_v6_prefix = v6_prefix.min(128);
        self.v4_mask = [0xff; 16];
        mask_prefix(&mut self.v4_mask, self.rrl_v4_prefix, 4);
        self.v6_mask = [0xff; 16];
        mask_prefix(&mut self.v6_mask, self.rrl_v6_prefix, 16);
    }
}

/// Key of [`crate::map::RRL`]: the source prefix (address masked, IPv4 in the first 4 bytes)
/// and the response class.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RrlKey {
    pub addr: [u8; 16],
    /// 4 or 6.
    pub family: u8,
    pub class: u8,
    pub _pad: [u8; 2],
}

/// A token bucket kept as a theoretical arrival time (GCRA): no division, one store.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct RrlBucket {
    /// When the bucket would be empty again at the rate (monotonic ns).
    pub tat_ns: u64,
    /// Responses limited so far (the slip count).
    pub limited: u64,
}

/// What to do with one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Send,
    Drop,
    /// Send it truncated (TC=1, no records): a real resolver retries over TCP.
    Slip,
}

/// Charges one response to `b` at monotonic time `now`: sent while the bucket has credit,
/// otherwise dropped, but every `slip`-th which is slipped.
#[inline(always)]
pub fn rrl_admit(b: &mut RrlBucket, now: u64, interval: u64, window: u64, slip: u32) -> Verdict {
    let tat = if b.tat_ns > now { b.tat_ns } else { now };
    let next = tat + interval;
    if next - now <= window {
        b.tat_ns = next;
        return Verdict::Send;
    }
    b.limited += 1;
    if slip != 0 && b.limited.is_multiple_of(slip as u64) {
        Verdict::Slip
    } else {
        Verdict::Drop
    }
}

/// The first `prefix` bits of `addr` (the rest zeroed).
#[inline(always)]
pub fn mask_prefix(addr: &mut [u8; 16], prefix: u8, bytes: usize) {
    let prefix = prefix as usize;
    for (i, b) in addr.iter_mut().enumerate() {
        let bit = i * 8;
        if i >= bytes || bit >= prefix {
            *b = 0;
        } else if bit + 8 > prefix {
            *b &= 0xffu8 << (8 - (prefix - bit));
        }
    }
}

/// Key data of [`crate::map::RRL_EXEMPT`] (an LPM trie): the family (4 or 6) in the first byte,
/// three zeros, then the address; a prefix of `n` bits is `32 + n` bits of it.
pub type ExemptData = [u8; 20];

/// Key of [`crate::map::RRL_EXEMPT`] as the kernel reads it: a prefix length in bits, then
/// [`ExemptData`].
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExemptKey {
    pub prefix_len: u32,
    pub data: ExemptData,
}

impl ExemptKey {
    /// The key of an address (`addr`, 4 or 16 bytes) and a prefix length `bits` of it.
    pub fn new(addr: &[u8], bits: u8) -> Self {
        let mut data = [0u8; 20];
        let n = addr.len().min(16);
        data[0] = if n == 4 { 4 } else { 6 };
        data[4..4 + n].copy_from_slice(&addr[..n]);
        Self {
            prefix_len: 32 + u32::from(bits),
            data,
        }
    }
}

/// SipHash-2-4 (Aumasson and Bernstein) of `m` under `key`, for the fixed lengths a cookie
/// uses: the rounds unroll and the program has no loop to verify.
#[inline(always)]
pub fn siphash24<const N: usize>(key: &[u8; 16], m: &[u8; N]) -> u64 {
    let k0 = u64::from_le_bytes([
        key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
    ]);
    let k1 = u64::from_le_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ]);
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let blocks = N / 8;
    for i in 0..blocks {
        let o = i * 8;
        let w = u64::from_le_bytes([
            m[o],
            m[o + 1],
            m[o + 2],
            m[o + 3],
            m[o + 4],
            m[o + 5],
            m[o + 6],
            m[o + 7],
        ]);
        v[3] ^= w;
        sipround(&mut v);
        sipround(&mut v);
        v[0] ^= w;
    }
    let mut last = (N as u64 & 0xff) << 56;
    for j in 0..N % 8 {
        last |= (m[blocks * 8 + j] as u64) << (8 * j);
    }
    v[3] ^= last;
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    sipround(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[inline(always)]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13);
    v[1] ^= v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16);
    v[3] ^= v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21);
    v[3] ^= v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17);
    v[1] ^= v[2];
    v[2] = v[2].rotate_left(32);
}

/// The hash input of an RFC 9018 server cookie for an IPv4 client: client cookie, version 1,
/// reserved, timestamp (big-endian), address.
pub type CookieInputV4 = [u8; 20];
/// The same for an IPv6 client.
pub type CookieInputV6 = [u8; 32];

/// Fills the fixed part of a cookie hash input (the first 16 bytes) and returns the hash input's
/// address part to fill.
#[inline(always)]
pub fn cookie_prefix(input: &mut [u8], client: &[u8; 8], ts: u32) {
    input[..8].copy_from_slice(client);
    input[8] = 1;
    input[9] = 0;
    input[10] = 0;
    input[11] = 0;
    input[12..16].copy_from_slice(&ts.to_be_bytes());
}

/// The server cookie (RFC 9018 §4.2) for a client cookie, a timestamp (Unix seconds) and a
/// client address (4 or 16 bytes; anything else is hashed as IPv6).
pub fn server_cookie(
    secret: &[u8; 16],
    client: &[u8; 8],
    ts: u32,
    addr: &[u8],
) -> [u8; SERVER_COOKIE_LEN] {
    let hash = if addr.len() == 4 {
        let mut m: CookieInputV4 = [0; 20];
        cookie_prefix(&mut m, client, ts);
        m[16..].copy_from_slice(addr);
        siphash24(secret, &m)
    } else {
        let mut m: CookieInputV6 = [0; 32];
        cookie_prefix(&mut m, client, ts);
        let n = addr.len().min(16);
        m[16..16 + n].copy_from_slice(&addr[..n]);
        siphash24(secret, &m)
    };
    let mut out = [0u8; SERVER_COOKIE_LEN];
    out[0] = 1;
    out[4..8].copy_from_slice(&ts.to_be_bytes());
    out[8..].copy_from_slice(&hash.to_le_bytes());
    out
}

/// Whether timestamp `ts` of a received server cookie is acceptable at `now` (serial number
/// arithmetic, RFC 1982, as RFC 9018 §4.3 asks).
#[inline(always)]
pub fn cookie_fresh(ts: u32, now: u32) -> bool {
    let age = now.wrapping_sub(ts) as i32;
    age <= COOKIE_MAX_AGE as i32 && age >= -(COOKIE_MAX_AHEAD as i32)
}

const _: () = assert!(core::mem::size_of::<LimitConfig>() == 104);
const _: () = assert!(core::mem::size_of::<ExemptKey>() == 24);
const _: () = assert!(core::mem::size_of::<RrlKey>() == 20);
const _: () = assert!(core::mem::size_of::<RrlBucket>() == 16);

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, string::String, vec::Vec};

    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // The reference implementation's vectors: key 00..0f, message 00..(n-1).
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, &[]), 0x726f_db47_dd0e_0e31);
        let m8: [u8; 8] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, &m8), 0x93f5_f579_9a93_2462);
        let m15: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(&key, &m15), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn server_cookies_match_rfc9018_appendix_a() {
        // A.1: client 2464c4abcf10c957, 198.51.100.100, secret e5e973e5a6b2a43f48e7dc849e37bfcf.
        let secret = hex16("e5e973e5a6b2a43f48e7dc849e37bfcf");
        let client = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];
        let c = server_cookie(&secret, &client, 1_559_731_985, &[198, 51, 100, 100]);
        assert_eq!(hex(&c), "010000005cf79f111f8130c3eee29480");
        // An IPv6 client hashes all 16 bytes of its address: another address, another cookie.
        let v6 = |last| {
            let mut a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            a[15] = last;
            server_cookie(&secret, &client, 1_559_731_985, &a)
        };
        assert_ne!(v6(1)[8..], v6(2)[8..]);
        assert_eq!(v6(1), v6(1));
    }

    fn hex16(s: &str) -> [u8; 16] {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    fn hex(b: &[u8]) -> String {
        let mut s = String::new();
        for x in b {
            s.push_str(&format!("{x:02x}"));
        }
        s
    }

    #[test]
    fn the_bucket_sends_a_burst_of_rate_then_slips_every_nth_and_refills() {
        let mut cfg = LimitConfig::zeroed();
        cfg.set_rate(10, 2, 24, 56);
        let mut b = RrlBucket::default();
        let t0 = 5_000_000_000;
        let got: Vec<Verdict> = (0..16)
            .map(|_| rrl_admit(&mut b, t0, cfg.rrl_interval_ns, cfg.rrl_window_ns, 2))
            .collect();
        assert!(got[..10].iter().all(|v| *v == Verdict::Send), "{got:?}");
        for (i, v) in got[10..].iter().enumerate() {
            let want = if i % 2 == 1 {
                Verdict::Slip
            } else {
                Verdict::Drop
            };
            assert_eq!(*v, want, "{got:?}");
        }
        // A tenth of a second later, one response's credit is back.
        let t1 = t0 + 100_000_000;
        assert_eq!(
            rrl_admit(&mut b, t1, cfg.rrl_interval_ns, cfg.rrl_window_ns, 0),
            Verdict::Send
        );
        assert_eq!(
            rrl_admit(&mut b, t1, cfg.rrl_interval_ns, cfg.rrl_window_ns, 0),
            Verdict::Drop
        );
    }

    #[test]
    fn prefixes_mask_the_host_bits() {
        let mut a = [10, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        mask_prefix(&mut a, 24, 4);
        assert_eq!(&a[..4], &[10, 1, 2, 0]);
        let mut a = [0xff; 16];
        mask_prefix(&mut a, 56, 16);
        assert_eq!(
            a,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut a = [0xff; 16];
        mask_prefix(&mut a, 20, 4);
        assert_eq!(&a[..4], &[0xff, 0xff, 0xf0, 0]);
        assert!(a[4..].iter().all(|b| *b == 0));
    }
}
