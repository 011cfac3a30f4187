//! Response-rate limiting and DNS cookies on the daemon's side: the `serve` flags, the cookie
//! secrets (read from a file or drawn at start, the previous one still accepted after a
//! reload), the settings written to the XDP program's LIMITS map and exempt trie, and the
//! fallback's own rate limiter.
//!
//! The fallback keeps its buckets in process memory rather than sharing the program's LRU map: a
//! map lookup and update per response would be two system calls where a hash map costs a few
//! nanoseconds, and with `--xdp-mode off` there is no map at all. The arithmetic is the same
//! function (`dns_common::limit::rrl_admit`) on the same settings, so a flood that the fast path
//! passes up meets the same rate there: what the program would have answered within the rate,
//! the fallback answers within it too. A source sending both kinds of query gets up to the rate
//! from each path.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use arc_swap::ArcSwap;
use dns_common::limit::{
    cookie_fresh, mask_prefix, rrl_admit, server_cookie, LimitConfig, RrlBucket, RrlKey, Verdict,
    CLIENT_COOKIE_LEN, LIMIT_COOKIES, LIMIT_PREV_SECRET, SERVER_COOKIE_LEN,
};
use ipnet::IpNet;

/// The `serve` flags of rate limiting and cookies.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LimitArgs {
    /// Response-rate limiting: responses a second per source prefix and response class
    /// (positive, NXDOMAIN, NODATA, other) over UDP; 0 turns it off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rrl_rate: u32,
    /// Every N-th response over the rate goes out truncated (TC=1) instead of being dropped, so
    /// a real resolver retries over TCP; 0: drop them all.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub rrl_slip: u32,
    /// IPv4 prefix length that makes one source for rate limiting.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(0..=32))]
    pub rrl_ipv4_prefix: u8,
    /// IPv6 prefix length that makes one source for rate limiting.
    #[arg(long, default_value_t = 56, value_parser = clap::value_parser!(u8).range(0..=128))]
    pub rrl_ipv6_prefix: u8,
    /// Address or prefix never rate limited (repeatable).
    #[arg(long, value_name = "PREFIX", value_parser = crate::fallback::parse_prefix)]
    pub rrl_exempt: Vec<IpNet>,
    /// File holding the DNS cookie secret (RFC 9018 SipHash-2-4 key): 16 bytes as 32 hex
    /// digits. Servers sharing it accept each other's cookies. Without it, a random secret is
    /// drawn at start. SIGHUP re-reads it; the secret it replaces is still accepted.
    #[arg(long, value_name = "FILE")]
    pub cookie_secret_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("reading the cookie secret file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the cookie secret must be 32 hex digits (16 bytes)")]
    Format { path: PathBuf },
    #[error("drawing a random cookie secret")]
    Random(#[source] std::io::Error),
}

/// Reads a cookie secret: 32 hex digits, surrounding whitespace ignored.
pub fn read_secret(path: &Path) -> Result<[u8; 16], LimitError> {
    let text = std::fs::read_to_string(path).map_err(|source| LimitError::Read {
        path: path.to_owned(),
        source,
    })?;
    let hex = text.trim();
    let bad = || LimitError::Format {
        path: path.to_owned(),
    };
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn random_secret() -> Result<[u8; 16], LimitError> {
    let mut out = [0u8; 16];
    crate::random_bytes(&mut out).map_err(LimitError::Random)?;
    Ok(out)
}

/// The cookie secrets in force: the one cookies are made with, and the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secrets {
    pub current: [u8; 16],
    pub previous: Option<[u8; 16]>,
}

/// Rate limiting and cookies, shared by the fallback, the map writer and a reload.
pub struct Limits {
    pub rate: u32,
    pub slip: u32,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub exempt: Vec<IpNet>,
    secrets: ArcSwap<Secrets>,
    buckets: Mutex<HashMap<RrlKey, RrlBucket>>,
    epoch: Instant,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("rate", &self.rate)
            .field("slip", &self.slip)
            .field("exempt", &self.exempt)
            .finish_non_exhaustive()
    }
}

/// Most buckets the fallback keeps; past it, idle ones (full again) are forgotten.
const BUCKETS_MAX: usize = 128 * 1024;

impl Limits {
    /// From the flags: the secret from its file, or a random one.
    pub fn from_args(args: &LimitArgs) -> Result<Self, LimitError> {
        let current = match &args.cookie_secret_file {
            Some(path) => read_secret(path)?,
            None => random_secret()?,
        };
        Ok(Self::new(args, current))
    }

    pub fn new(args: &LimitArgs, secret: [u8; 16]) -> Self {
        Self {
            rate: args.rrl_rate,
            slip: args.rrl_slip,
            v4_prefix: args.rrl_ipv4_prefix,
            v6_prefix: args.rrl_ipv6_prefix,
            exempt: args.rrl_exempt.clone(),
            secrets: ArcSwap::from_pointee(Secrets {
                current: secret,
                previous: None,
            }),
            buckets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    pub fn secrets(&self) -> Secrets {
        **self.secrets.load()
    }

    /// Makes `secret` the current one; the one it replaces is still accepted (until the next
    /// rotation). The same secret again changes nothing.
    pub fn rotate(&self, secret: [u8; 16]) {
        let now = self.secrets();
        if now.current != secret {
            self.secrets.store(Arc::new(Secrets {
                current: secret,
                previous: Some(now.current),
            }));
        }
    }

    /// The XDP program's LIMITS value.
    pub fn map_config(&self) -> LimitConfig {
        let mut c = LimitConfig::zeroed();
        c.set_rate(self.rate, self.slip, self.v4_prefix, self.v6_prefix);
        let s = self.secrets();
        c.flags = LIMIT_COOKIES;
        c.secret = s.current;
        if let Some(p) = s.previous {
            c.prev_secret = p;
            c.flags |= LIMIT_PREV_SECRET;
        }
        c.wall_offset_ns = wall_offset_ns();
        c
    }

    /// The fallback's verdict on one UDP response of `class` to `peer` (whose server cookie was
    /// `cookie_valid`).
    pub fn admit(&self, peer: IpAddr, class: u8, cookie_valid: bool) -> Verdict {
        if self.rate == 0 || cookie_valid {
            return Verdict::Send;
        }
        let peer = peer.to_canonical();
        if self.exempt.iter().any(|n| n.contains(&peer)) {
            return Verdict::Send;
        }
        let mut c = LimitConfig::zeroed();
        c.set_rate(self.rate, self.slip, self.v4_prefix, self.v6_prefix);
        let (mut addr, family) = (src_bytes(peer), if peer.is_ipv4() { 4 } else { 6 });
        if family == 4 {
            mask_prefix(&mut addr, c.rrl_v4_prefix, 4);
        } else {
            mask_prefix(&mut addr, c.rrl_v6_prefix, 16);
        }
        let key = RrlKey {
            addr,
            family,
            class,
            _pad: [0; 2],
        };
        let now = self.epoch.elapsed().as_nanos() as u64 + 1;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(&key) {
            buckets.retain(|_, b| b.tat_ns > now);
            if buckets.len() >= BUCKETS_MAX {
                buckets.clear();
            }
        }
        let b = buckets.entry(key).or_default();
        rrl_admit(b, now, c.rrl_interval_ns, c.rrl_window_ns, c.rrl_slip)
    }

    /// The server cookie for a client cookie from `peer` now, and whether `server` (the server
    /// cookie the query brought, if any) is a valid one of ours.
    pub fn cookie(
        &self,
        peer: IpAddr,
        client: &[u8; CLIENT_COOKIE_LEN],
        server: Option<&[u8]>,
        now: u32,
    ) -> ([u8; SERVER_COOKIE_LEN], bool) {
        let addr = match peer.to_canonical() {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        };
        let s = self.secrets();
        let valid = server.is_some_and(|sc| valid_cookie(&s, client, sc, &addr, now));
        (server_cookie(&s.current, client, now, &addr), valid)
    }
}

/// Whether `sc` is an RFC 9018 server cookie of ours for this client, fresh at `now`. The hash
/// covers the version, reserved bytes and timestamp as received.
fn valid_cookie(s: &Secrets, client: &[u8; 8], sc: &[u8], addr: &[u8], now: u32) -> bool {
    if sc.len() != SERVER_COOKIE_LEN || sc[0] != 1 {
        return false;
    }
    let ts = u32::from_be_bytes([sc[4], sc[5], sc[6], sc[7]]);
    if !cookie_fresh(ts, now) {
        return false;
    }
    let check = |secret: &[u8; 16]| {
        let mine = server_cookie(secret, client, ts, addr);
        // Our cookie has reserved bytes of zero; one with others set isn't ours.
        mine[..] == sc[..]
    };
    check(&s.current) || s.previous.as_ref().is_some_and(check)
}

/// The client's address as the program keeps it (IPv4 in the first 4 bytes).
fn src_bytes(ip: IpAddr) -> [u8; 16] {
    let mut a = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => a = v6.octets(),
    }
    a
}

/// Unix time minus the monotonic clock the program reads (`bpf_ktime_get_ns`), in ns.
pub fn wall_offset_ns() -> u64 {
    crate::clock_ns(libc::CLOCK_REALTIME).saturating_sub(crate::clock_ns(libc::CLOCK_MONOTONIC))
}

/// Unix time in seconds, as cookies carry it.
pub fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32) -> Limits {
        let args = LimitArgs {
            rrl_rate: rate,
            rrl_slip: 2,
            rrl_ipv4_prefix: 24,
            rrl_ipv6_prefix: 56,
            rrl_exempt: vec!["192.0.2.0/28".parse().unwrap()],
            cookie_secret_file: None,
        };
        Limits::new(&args, [7; 16])
    }

    #[test]
    fn the_fallback_limits_per_prefix_with_the_slip_pattern() {
        let l = limits(5);
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let same_prefix: IpAddr = "198.51.100.200".parse().unwrap();
        let v: Vec<Verdict> = (0..9)
            .map(|i| l.admit(if i % 2 == 0 { a } else { same_prefix }, 0, false))
            .collect();
        use Verdict::*;
        assert_eq!(v, [Send, Send, Send, Send, Send, Drop, Slip, Drop, Slip]);
        // Another class, another prefix, an exempt address, a proved address: untouched.
        assert_eq!(l.admit(a, 1, false), Send);
        assert_eq!(l.admit("198.51.101.7".parse().unwrap(), 0, false), Send);
        for _ in 0..20 {
            assert_eq!(l.admit("192.0.2.3".parse().unwrap(), 0, false), Send);
            assert_eq!(l.admit(a, 0, true), Send);
        }
        assert_eq!(limits(0).admit(a, 0, false), Send);
    }

    #[test]
    fn cookies_verify_under_the_current_and_the_previous_secret_only() {
        let l = limits(0);
        let peer: IpAddr = "::ffff:198.51.100.7".parse().unwrap();
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let now = 1_800_000_000;
        let (sc, valid) = l.cookie(peer, &client, None, now);
        assert!(!valid);
        // The mapped address is the IPv4 one: the same cookie as for 198.51.100.7.
        let (v4, _) = l.cookie("198.51.100.7".parse().unwrap(), &client, None, now);
        assert_eq!(sc, v4);
        assert!(l.cookie(peer, &client, Some(&sc), now + 10).1);
        let mut forged = sc;
        forged[15] ^= 1;
        assert!(!l.cookie(peer, &client, Some(&forged), now).1);
        assert!(!l.cookie(peer, &client, Some(&sc), now + 3601).1);
        assert!(
            !l.cookie("198.51.100.8".parse().unwrap(), &client, Some(&sc), now)
                .1
        );
        l.rotate([9; 16]);
        assert!(l.cookie(peer, &client, Some(&sc), now).1, "previous secret");
        l.rotate([10; 16]);
        assert!(
            !l.cookie(peer, &client, Some(&sc), now).1,
            "two rotations ago"
        );
    }
}
