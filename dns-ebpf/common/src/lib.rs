//! The contract between the XDP program (`dns-ebpf`) and the daemon (`dns-user`): the maps
//! ([`map`], one declaration each), their key and value types (here), the counters ([`stat`]),
//! wire constants ([`wire`]) and the checksum arithmetic both sides share ([`csum`]).
//!
//! Everything in a map is `#[repr(C)]`, `Copy`, made of fixed-size integers and arrays with
//! explicit padding, so that both sides agree on every byte. Multi-byte integers are in host byte
//! order unless a field says otherwise.
//!
//! # How an answer is found
//! The daemon compiles every name it serves into one [`NameValue`]: the answer-section bytes for
//! each type the fast path serves (A, AAAA, CNAME), ready to be copied after the question. The XDP
//! program lowercases the query name into a [`NameKey`] (right-aligned, see there) and looks it
//! up: a name of at most [`SHORT_NAME_LEN`] wire bytes in [`map::NAMES_SHORT`], a longer one in
//! [`map::NAMES_SMALL`], then, if the answers are too big for a small value (the entry there is
//! then only an [`IN_LARGE`] marker), in [`map::NAMES_LARGE`]. A name found nowhere makes it find the closest enclosing zone among the
//! name's suffixes, looking up only those whose length [`map::ZONE_LENS`] says some zone has, in
//! [`map::ZONES_SHORT`] (apexes of at most [`SHORT_NAME_LEN`] bytes) or [`map::ZONES`], and answer
//! NXDOMAIN with the zone's SOA; a name found without the asked type gets NODATA with the same SOA. [`map::CONFIG`] holds the program's settings,
//! [`map::STATS`] its counters and [`map::SCRATCH`] its per-packet working memory.
#![no_std]

pub mod csum;
pub mod limit;
pub mod map;
pub mod stat;
pub mod wire;

pub use map::{NAMES_LARGE_MAX, NAMES_SHORT_MAX, NAMES_SMALL_MAX, ZONES_MAX};
pub use stat::{Stat, STAT_COUNT};
pub use wire::{CLASS_IN, DNS_HEADER_LEN, TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_OPT, TYPE_SOA};

/// The XDP program's name (the `#[xdp]` function).
pub const PROGRAM_NAME: &str = "edgedns_xdp";
/// The program for the peer end of a veth pair, which passes everything (see `edgedns xdp-pass`).
pub const PASS_PROGRAM_NAME: &str = "edgedns_pass";

/// Longest query name (wire form, root label included) that the fast path looks up. Longer names
/// are passed up and counted under [`Stat::PassLongName`]; the fallback answers them.
pub const KEY_NAME_LEN: usize = 96;
/// Largest DNS payload after the header ([`DNS_HEADER_LEN`]) that the program reads from a query.
pub const QUERY_MAX: usize = 512;
/// Answer bytes held by a [`NameValue`]: small in [`map::NAMES_SHORT`] and [`map::NAMES_SMALL`],
/// large in [`map::NAMES_LARGE`].
pub const BLOB_SMALL: usize = 64;
pub const BLOB_LARGE: usize = 1024;
/// In a blob of `N` bytes every segment starts before `N / 2` and is at most `N / 2` long: the
/// program checks both against these constants, which is what lets the verifier bound
/// `blob + off + len` inside the value.
pub const fn seg_max(blob: usize) -> usize {
    blob / 2
}
/// The zone's negative-answer SOA record: owner pointer, fixed fields, two names of up to 255
/// (542 bytes at most), rounded up to a power of two for the program's length mask.
pub const SOA_BLOB: usize = 1024;
/// Default UDP payload size the server advertises in its OPT record (DNS flag day 2020).
pub const DEFAULT_UDP_PAYLOAD: u16 = 1232;

/// Version of the map layout. Pinned maps live in a directory named after it, so a daemon whose
/// layout differs never takes over maps it can't read. Bump it with any change to the types here.
pub const LAYOUT_VERSION: u32 = 11;

/// Query types, as the index into [`NameValue::segs`]: 0 is the CNAME prefix copied before every
/// answer at a name that holds a CNAME.
pub const SEG_CNAME_PREFIX: usize = 0;
pub const SEG_A: usize = 1;
pub const SEG_AAAA: usize = 2;
pub const SEG_CNAME: usize = 3;

/// Maps a query type to its segment index, or `None` if the fast path does not serve it.
#[inline(always)]
pub fn seg_for_qtype(qtype: u16) -> Option<usize> {
    match qtype {
        TYPE_A => Some(SEG_A),
        TYPE_AAAA => Some(SEG_AAAA),
        TYPE_CNAME => Some(SEG_CNAME),
        _ => None,
    }
}

/// Lowercases one byte of a wire-form name. Label length bytes are at most 63, below `b'A'`, so
/// the whole wire name can be folded byte by byte without tracking label boundaries.
#[inline(always)]
pub fn fold_case(b: u8) -> u8 {
    if b.is_ascii_uppercase() {
        b | 0x20
    } else {
        b
    }
}

/// [`fold_case`] on the eight bytes of a word at once (SWAR): sets bit 5 of every byte in
/// `b'A'..=b'Z'` and leaves every other byte, high-bit ones included, as it is. The program folds
/// the key this way, twelve words instead of up to 96 bytes one by one.
#[inline(always)]
pub fn fold_case_word(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = w & (0x7f * ONES);
    // Bit 7 of each byte: its low seven bits are >= 'A', and > 'Z' (no carry between bytes:
    // 0x7f + 0x3f < 0x100).
    let ge_a = low7 + (0x80 - b'A' as u64) * ONES;
    let gt_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = ge_a & !gt_z & !w & (0x80 * ONES);
    w | (upper >> 2)
}

/// Key of [`map::NAMES_SMALL`], [`map::NAMES_LARGE`] and [`map::ZONES`]: a lowercased wire-form
/// name, root label included, placed at the *end* of the array with zeros before it.
///
/// Right alignment makes every suffix of a name (its parent zones) a key too: zeroing the bytes of
/// the leading labels turns the key of `a.b.example.` into the key of `b.example.`, which is how
/// the program walks up to the zone without copying. The form is unambiguous: a name's first byte
/// is a non-zero label length unless the name is the root.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct NameKey {
    pub name: [u8; KEY_NAME_LEN],
}

impl NameKey {
    pub const fn zeroed() -> Self {
        Self {
            name: [0; KEY_NAME_LEN],
        }
    }

    /// Builds a key from a wire-form name (root label included). `None` if it is too long.
    pub fn from_wire(wire: &[u8]) -> Option<Self> {
        if wire.is_empty() || wire.len() > KEY_NAME_LEN {
            return None;
        }
        let mut key = Self::zeroed();
        let start = KEY_NAME_LEN - wire.len();
        for (dst, src) in key.name[start..].iter_mut().zip(wire) {
            *dst = fold_case(*src);
        }
        Some(key)
    }
}

/// Names up to this long (wire form) are keyed by their last [`SHORT_NAME_LEN`] bytes in
/// [`map::NAMES_SHORT`]: most served names are short, and a 32-byte key instead of 96 takes 64
/// bytes off every such entry and hashes a third as much per lookup.
pub const SHORT_NAME_LEN: usize = 32;

/// Key of [`map::NAMES_SHORT`]: the last [`SHORT_NAME_LEN`] bytes of a [`NameKey`] whose other
/// bytes are all zero (right alignment makes it the same bytes, no copy needed).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ShortKey {
    pub name: [u8; SHORT_NAME_LEN],
}

impl NameKey {
    /// The short key of this name, if it is short enough.
    pub fn short(&self) -> Option<ShortKey> {
        let (head, tail) = self.name.split_at(KEY_NAME_LEN - SHORT_NAME_LEN);
        if head.iter().any(|b| *b != 0) {
            return None;
        }
        let mut name = [0u8; SHORT_NAME_LEN];
        name.copy_from_slice(tail);
        Some(ShortKey { name })
    }

    /// The full key of a short key.
    pub fn from_short(short: &ShortKey) -> Self {
        let mut k = Self::zeroed();
        k.name[KEY_NAME_LEN - SHORT_NAME_LEN..].copy_from_slice(&short.name);
        k
    }
}

/// Where one type's answer records sit in a blob.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Seg {
    /// Offset of the records in the blob.
    pub off: u16,
    /// Their length in bytes (0: none).
    pub len: u16,
    /// How many records (added to ANCOUNT).
    pub count: u16,
    /// One's-complement 16-bit sum of the bytes (network order words, folded, not inverted), as
    /// placed in the response: the CNAME prefix at the start of the answer section, a type segment
    /// right after the prefix. Computed as if the answer section began at an even UDP offset; the
    /// program swaps its bytes when it does not.
    pub sum: u16,
}

/// The bit of [`NameValue::pass_mask`] that sends queries of segment index `seg` (see
/// [`seg_for_qtype`]) to the fallback.
pub const fn pass_bit(seg: usize) -> u8 {
    1 << seg
}

/// `NameValue::pass_mask` of a [`map::NAMES_SHORT`] or [`map::NAMES_SMALL`] entry that only says
/// "this name's answers are in [`map::NAMES_LARGE`]": a name that misses the short map (a short
/// name) or the small map (a longer one) then needs no second lookup to be known absent, which
/// is most of the cost of an NXDOMAIN.
pub const IN_LARGE: u8 = 0x80;

/// Answers at one name, compiled by the daemon. `N` is [`BLOB_SMALL`] or [`BLOB_LARGE`].
///
/// For a qtype with segment index `t`, the answer section is `segs[0]` followed by `segs[t]`, and
/// ANCOUNT is the sum of their counts. If that sum is 0 the answer is NODATA: the program finds
/// the zone by the last `apex_len` bytes of the key and adds its SOA.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameValue<const N: usize> {
    /// Wire length of the zone's apex name, a suffix of this name.
    pub apex_len: u8,
    /// Bit `1 << t` set: the fast path must pass qtype index `t` up (see [`pass_bit`]).
    pub pass_mask: u8,
    pub _pad: u16,
    pub segs: [Seg; 4],
    pub blob: [u8; N],
}

pub type SmallValue = NameValue<BLOB_SMALL>;
pub type LargeValue = NameValue<BLOB_LARGE>;

impl<const N: usize> NameValue<N> {
    pub const fn zeroed() -> Self {
        Self {
            apex_len: 0,
            pass_mask: 0,
            _pad: 0,
            segs: [Seg {
                off: 0,
                len: 0,
                count: 0,
                sum: 0,
            }; 4],
            blob: [0; N],
        }
    }
}

/// `ZoneValue::flags`: negative answers (NXDOMAIN) in this zone go to the fallback, because the
/// zone has wildcards or delegations that the map does not model.
pub const ZONE_NEG_PASS: u32 = 1;

/// One served zone, keyed by its apex: a [`ShortKey`] in [`map::ZONES_SHORT`] for an apex of at
/// most [`SHORT_NAME_LEN`] wire bytes, a [`NameKey`] in [`map::ZONES`] for a longer one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ZoneValue {
    pub flags: u32,
    /// Length of the SOA record in `soa`.
    pub soa_len: u16,
    /// Sum of `soa` (as [`Seg::sum`]) with its first two bytes, the owner pointer, taken as zero:
    /// the program writes the pointer to the apex inside the question and adds it to the sum.
    pub soa_sum: u16,
    /// The SOA record for negative answers, TTL already min(SOA TTL, SOA MINIMUM) (RFC 2308 §3).
    pub soa: [u8; SOA_BLOB],
}

impl ZoneValue {
    pub const fn zeroed() -> Self {
        Self {
            flags: 0,
            soa_len: 0,
            soa_sum: 0,
            soa: [0; SOA_BLOB],
        }
    }
}

/// Which apex lengths the served zones have, at index 0 of [`map::ZONE_LENS`]: bit `n` (of
/// `bits[n / 64]`, bit `n % 64`) is set when some zone's apex is `n` wire bytes long. A name's
/// suffix of any other length is no zone, so the program looks up only the suffixes whose length
/// is set: one lookup for a name in a zone of its own length, whatever its number of labels.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneLens {
    pub bits: [u64; 2],
    /// The zone maps' generation: the daemon adds one after each write to [`map::ZONES_SHORT`]
    /// or [`map::ZONES`], and it is never 0 once the daemon has started. A zone the program
    /// keeps in [`Scratch::zone`] is good while this is the generation it was read in.
    pub gen: u64,
}

impl ZoneLens {
    /// The set of the given apex lengths (wire bytes; those over [`KEY_NAME_LEN`] are left out:
    /// the program never looks such a suffix up).
    pub fn of(lens: impl IntoIterator<Item = usize>) -> Self {
        // Generation 0: the daemon sets it when it writes the value.
        let mut z = Self::default();
        for len in lens {
            if len <= KEY_NAME_LEN {
                z.bits[len / 64] |= 1 << (len % 64);
            }
        }
        z
    }

    /// Whether some zone's apex is `len` wire bytes long. (Branches, not `bits[len / 64]`: the
    /// program calls this, and the verifier can't bound an index into the stack it can't follow.)
    #[inline(always)]
    pub fn has(&self, len: usize) -> bool {
        let word = if len < 64 { self.bits[0] } else { self.bits[1] };
        len < 128 && (word >> (len & 63)) & 1 != 0
    }

    /// Whether some zone's apex is at least `from` and shorter than `to` wire bytes.
    #[inline(always)]
    pub fn any_between(&self, from: usize, to: usize) -> bool {
        let (from, to) = (Self::below(from), Self::below(to));
        (self.bits[0] & to.0 & !from.0) | (self.bits[1] & to.1 & !from.1) != 0
    }

    /// The masks of `bits[0]` and `bits[1]` that select the lengths below `len`.
    #[inline(always)]
    fn below(len: usize) -> (u64, u64) {
        if len >= 128 {
            (u64::MAX, u64::MAX)
        } else if len >= 64 {
            (u64::MAX, (1u64 << (len & 63)) - 1)
        } else {
            ((1u64 << (len & 63)) - 1, 0)
        }
    }

    /// Whether some zone's apex is shorter than `len` wire bytes.
    #[inline(always)]
    pub fn any_below(&self, len: usize) -> bool {
        if len >= 128 {
            return self.bits[0] | self.bits[1] != 0;
        }
        if len <= 64 {
            // `len == 64` takes all of the low word; a shift by 64 would overflow.
            let mask = if len == 64 {
                u64::MAX
            } else {
                (1u64 << (len & 63)) - 1
            };
            return self.bits[0] & mask != 0;
        }
        self.bits[0] != 0 || self.bits[1] & ((1u64 << ((len - 64) & 63)) - 1) != 0
    }
}

/// Program settings, at index 0 of [`map::CONFIG`]. What is answered (addresses and ports) is
/// in [`map::SERVED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// UDP payload size advertised in our OPT record.
    pub udp_payload: u16,
    pub _pad: u16,
    /// 1: answer from the maps; 0: pass everything up (the fallback answers alone).
    pub enabled: u32,
    /// Behaviour switches: [`OPT_PASS_NSID`], [`OPT_LOOPBACK`], [`OPT_STALE_MISSES`],
    /// [`OPT_MISSES_UNTIL`], [`OPT_WILDCARD_V4`], [`OPT_WILDCARD_V6`].
    pub options: u32,
    /// One of the IPv4 entries of [`map::SERVED`] (`family` 0: none), which the program checks
    /// before any lookup in the map: the family's wildcard if it has one, else its first
    /// address. Most servers listen on one address or wildcard a family, and then a query
    /// to them costs no hash lookup.
    pub served_v4: ServedKey,
    /// The same for IPv6.
    pub served_v6: ServedKey,
    pub _pad2: u32,
    /// With [`OPT_MISSES_UNTIL`]: the CLOCK_MONOTONIC time (ns, as `bpf_ktime_get_ns` counts)
    /// after which negative answers are passed up as with [`OPT_STALE_MISSES`].
    pub misses_until_ns: u64,
}

/// Key of [`map::SERVED`]: one (family, address, port) the daemon listens on. The program
/// answers a query only if its destination is in the map, exactly or through the wildcard entry
/// of its family and port (`addr` all zero): a socket bound to 0.0.0.0 or [::] takes every
/// address of the host, one bound to an address only that one, and the fast path must answer
/// exactly what a socket of the daemon would get.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServedKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u16,
    /// UDP port, network byte order as in the packet.
    pub port_be: u16,
    /// The address as in the packet: IPv4 in the first four bytes, the rest zero; all zero for
    /// any address of the family.
    pub addr: [u8; 16],
}

impl ServedKey {
    pub const fn zeroed() -> Self {
        Self {
            family: 0,
            port_be: 0,
            addr: [0; 16],
        }
    }

    /// The wildcard entry of this key's family and port.
    pub const fn wildcard(&self) -> Self {
        Self {
            family: self.family,
            port_be: self.port_be,
            addr: [0; 16],
        }
    }

    /// Whether a query to `key` is served through this entry: same family and port, and this
    /// entry's address is `key`'s or the wildcard. (Word by word, without a branch per byte or
    /// a `memcmp`: the XDP program calls this.)
    #[inline(always)]
    pub fn covers(&self, key: &ServedKey) -> bool {
        let word = |a: &[u8; 16], i: usize| {
            u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
        };
        let (mut mine, mut diff) = (0u32, 0u32);
        for i in 0..4 {
            let w = word(&self.addr, i);
            mine |= w;
            diff |= w ^ word(&key.addr, i);
        }
        self.family != 0
            && self.family == key.family
            && self.port_be == key.port_be
            && (mine == 0 || diff == 0)
    }
}

/// [`XdpConfig::options`]: pass up queries that ask for the server's NSID (RFC 5001), which the
/// fallback answers, so that the fast path never leaves it out.
pub const OPT_PASS_NSID: u32 = 1;
/// [`XdpConfig::options`]: the program is attached to the loopback interface, where loopback
/// addresses are the host's own (elsewhere they are martians) and UDP checksums are left to
/// offload (only the pseudo-header's sum is in the field; the kernel doesn't check them there).
pub const OPT_LOOPBACK: u32 = 2;
/// [`XdpConfig::options`]: the SERVED map has a wildcard entry for IPv4 (a socket on 0.0.0.0 or
/// [::]), so the program looks the wildcard up first: a query to a wildcard listener then costs
/// one hash lookup, not a missed exact one and then the wildcard.
pub const OPT_WILDCARD_V4: u32 = 8;
/// [`OPT_WILDCARD_V4`] for IPv6.
pub const OPT_WILDCARD_V6: u32 = 16;
/// [`XdpConfig::options`]: pass up negative answers (NXDOMAIN, NODATA): a fleet edge cut off
/// from etcd answers them SERVFAIL from the fallback.
pub const OPT_STALE_MISSES: u32 = 4;
/// [`XdpConfig::options`]: negative answers are trusted only until
/// [`XdpConfig::misses_until_ns`]. A fleet edge's daemon moves that time forward as its lease
/// is renewed; a daemon that died with its program left answering (`--keep-xdp`) stops
/// moving it, and from the time its lease can run out (writes stop waiting for the edge) the
/// program passes misses up to no one rather than deny names created since.
pub const OPT_MISSES_UNTIL: u32 = 32;

/// [`ServedKey::family`].
pub const FAMILY_V4: u16 = 1;
pub const FAMILY_V6: u16 = 2;

/// Per-CPU scratch space (one slot): the stack is 512 bytes in all.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// The lookup key being built.
    pub key: NameKey,
    /// The query's DNS payload after the header ([`DNS_HEADER_LEN`]).
    pub q: [u8; QUERY_MAX],
    /// Response header ([`DNS_HEADER_LEN`]) and, from byte 16, our OPT record
    /// ([`wire::OPT_RR_LEN`]) followed by our COOKIE option, if any (padded).
    pub out: [u8; 80],
    /// The client's address (IPv4 in the first 4 bytes), for the rate limiter and cookies.
    pub src: [u8; 16],
    /// A cookie hash's input ([`limit::CookieInputV6`] at most); earlier in the packet's path,
    /// the served-address key.
    pub hash_in: [u8; 32],
    /// The rate limiter's keys and a new bucket (off the 512-byte stack).
    pub rrl_key: limit::RrlKey,
    pub exempt_key: limit::ExemptKey,
    pub bucket: limit::RrlBucket,
    /// A value passed through map memory, which the verifier treats as unknown: joins the states
    /// of a loop's many exits into one (see `launder` in dns-ebpf).
    pub tmp: u64,
    /// The last zone this CPU found for a negative answer, kept to answer the next ones without
    /// hashing its apex again.
    pub zone: ZoneCache,
}

/// Longest SOA record (owner pointer included) a [`ZoneCache`] holds; a zone with a longer one
/// is looked up in its map every time.
pub const SOA_CACHE: usize = 128;

/// A copy of one [`ZoneValue`] of [`map::ZONES_SHORT`] with its apex, in the per-CPU
/// [`Scratch`]: a missing name's zone found in the copy costs a comparison of four words instead
/// of a hash lookup. It is good while [`ZoneLens::gen`] is `gen` (the daemon moves that on after
/// each zone write); all zero (generation 0) is empty.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ZoneCache {
    pub gen: u64,
    pub apex: ShortKey,
    pub flags: u32,
    pub soa_len: u16,
    pub soa_sum: u16,
    /// The apex's wire length.
    pub apex_len: u32,
    pub _pad: u32,
    pub soa: [u8; SOA_CACHE],
}

const _: () = assert!(core::mem::size_of::<NameKey>() == KEY_NAME_LEN);
const _: () = assert!(core::mem::size_of::<ShortKey>() == SHORT_NAME_LEN);
const _: () = assert!(core::mem::size_of::<Seg>() == 8);
const _: () = assert!(core::mem::size_of::<SmallValue>() == 4 + 32 + BLOB_SMALL);
const _: () = assert!(core::mem::size_of::<LargeValue>() == 4 + 32 + BLOB_LARGE);
const _: () = assert!(core::mem::size_of::<ZoneValue>() == 8 + SOA_BLOB);
const _: () = assert!(core::mem::size_of::<XdpConfig>() == 64);
const _: () = assert!(core::mem::size_of::<ServedKey>() == 20);
const _: () = assert!(core::mem::size_of::<ZoneLens>() == 24);
const _: () = assert!(core::mem::size_of::<ZoneCache>() == 8 + SHORT_NAME_LEN + 16 + SOA_CACHE);
const _: () = assert!(core::mem::offset_of!(Scratch, zone).is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(ZoneValue, soa) == 8 && SOA_CACHE.is_multiple_of(8));
const _: () = assert!(KEY_NAME_LEN <= 255 && KEY_NAME_LEN.is_multiple_of(8));

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), Copy, without padding bytes, valid for any bit pattern.
    unsafe impl aya::Pod for NameKey {}
    unsafe impl aya::Pod for ShortKey {}
    unsafe impl aya::Pod for SmallValue {}
    unsafe impl aya::Pod for LargeValue {}
    unsafe impl aya::Pod for ZoneValue {}
    unsafe impl aya::Pod for XdpConfig {}
    unsafe impl aya::Pod for ZoneLens {}
    unsafe impl aya::Pod for limit::LimitConfig {}
    unsafe impl aya::Pod for limit::RrlKey {}
    unsafe impl aya::Pod for limit::RrlBucket {}
    unsafe impl aya::Pod for limit::ExemptKey {}
    unsafe impl aya::Pod for ServedKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_the_tail_of_the_key_of_names_up_to_32_bytes() {
        let short = NameKey::from_wire(b"\x04demo\x01t\x07example\x03net\x00").unwrap();
        let s = short.short().expect("20 bytes is short");
        assert_eq!(NameKey::from_short(&s), short);
        let wire32 = [&[30u8][..], &[b'a'; 30], &[0]].concat();
        assert!(NameKey::from_wire(&wire32).unwrap().short().is_some());
        let wire33 = [&[31u8][..], &[b'a'; 31], &[0]].concat();
        assert!(NameKey::from_wire(&wire33).unwrap().short().is_none());
    }

    #[test]
    fn a_served_entry_covers_its_address_or_any_with_a_wildcard() {
        let key = |family, port: u16, last: u8| {
            let mut addr = [0; 16];
            addr[3] = last;
            ServedKey {
                family,
                port_be: port.to_be(),
                addr,
            }
        };
        let exact = key(FAMILY_V4, 53, 1);
        assert!(exact.covers(&key(FAMILY_V4, 53, 1)));
        assert!(!exact.covers(&key(FAMILY_V4, 53, 2)));
        assert!(!exact.covers(&key(FAMILY_V4, 5300, 1)));
        assert!(!exact.covers(&key(FAMILY_V6, 53, 1)));
        let any = exact.wildcard();
        assert!(any.covers(&key(FAMILY_V4, 53, 1)));
        assert!(any.covers(&key(FAMILY_V4, 53, 0)));
        assert!(!any.covers(&key(FAMILY_V4, 5300, 1)));
        assert!(!any.covers(&key(FAMILY_V6, 53, 1)));
        let mut v6 = key(FAMILY_V6, 53, 1);
        v6.addr[15] = 9;
        let mut other = v6;
        other.addr[12] = 1;
        assert!(v6.covers(&v6) && !v6.covers(&other));
        // No entry (family 0) covers nothing, not even a key of family 0.
        assert!(!ServedKey::zeroed().covers(&ServedKey::zeroed()));
    }

    #[test]
    fn zone_lens_say_which_lengths_are_there_and_below() {
        let z = ZoneLens::of([1, 15, 32, 33, 63, 64, 65, 96, 97, 255]);
        for len in 0..=200 {
            let want = [1, 15, 32, 33, 63, 64, 65, 96].contains(&len);
            assert_eq!(z.has(len), want, "has({len})");
        }
        let only = |l: usize| ZoneLens::of([l]);
        for l in [1usize, 2, 31, 32, 33, 63, 64, 65, 95, 96] {
            for len in 0..=130 {
                assert_eq!(only(l).any_below(len), l < len, "{l} below {len}");
            }
        }
        assert!(!ZoneLens::default().any_below(200));
        for l in [1usize, 2, 31, 32, 33, 63, 64, 65, 95, 96] {
            for from in 0..=130 {
                for to in 0..=130 {
                    let want = from <= l && l < to;
                    assert_eq!(only(l).any_between(from, to), want, "{l} in {from}..{to}");
                }
            }
        }
    }

    #[test]
    fn fold_case_word_matches_fold_case_for_every_byte_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..8 {
                // The byte among neighbours that could carry into it, and alone.
                for fill in [0x00u8, 0x7f, 0xff, b'Z', b'A' - 1] {
                    let mut bytes = [fill; 8];
                    bytes[lane] = b;
                    let got = fold_case_word(u64::from_le_bytes(bytes)).to_le_bytes();
                    let want = bytes.map(fold_case);
                    assert_eq!(got, want, "byte {b:#04x} lane {lane} fill {fill:#04x}");
                }
            }
        }
    }
}
