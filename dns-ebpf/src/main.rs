//! The XDP fast path: answers DNS queries for names in the maps at the NIC, passes the rest up.
//!
//! Everything not fully understood goes up with `XDP_PASS` (counted by reason) and the daemon's
//! fallback server answers it. See `dns-common` for the map layout.
#![no_std]
#![no_main]
// `get_ptr(&s.key)` on purpose: by value, the 96-byte key would be copied onto the 512-byte BPF
// stack; by reference the lookup reads it where it is, in the per-CPU scratch slot.
#![allow(clippy::needless_borrows_for_generic_args)]

use aya_ebpf::{
    bindings::{xdp_action, xdp_md, BPF_F_NO_PREALLOC},
    helpers::generated::{
        bpf_csum_diff, bpf_get_smp_processor_id, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
        bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::warn;
use dns_common::{
    fold_case_word, seg_for_qtype, seg_max, NameKey, NameValue, Scratch, Seg, ShortKey, Stat,
    XdpConfig, ZoneValue, BLOB_LARGE, BLOB_SMALL, CLASS_IN, FAMILY_V4, FAMILY_V6, IN_LARGE,
    KEY_NAME_LEN, NAMES_LARGE_MAX, NAMES_SHORT_MAX, NAMES_SMALL_MAX, QUERY_MAX, SHORT_NAME_LEN,
    SOA_BLOB, STAT_COUNT, TYPE_OPT, ZONES_MAX, ZONE_NEG_PASS,
};

#[map]
static CONFIG: Array<XdpConfig> = Array::with_max_entries(1, 0);
#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);
// No prealloc: memory follows the number of names, not the capacity.
#[map]
static NAMES_SHORT: HashMap<ShortKey, NameValue<BLOB_SMALL>> =
    HashMap::with_max_entries(NAMES_SHORT_MAX, BPF_F_NO_PREALLOC);
#[map]
static NAMES_SMALL: HashMap<NameKey, NameValue<BLOB_SMALL>> =
    HashMap::with_max_entries(NAMES_SMALL_MAX, BPF_F_NO_PREALLOC);
#[map]
static NAMES_LARGE: HashMap<NameKey, NameValue<BLOB_LARGE>> =
    HashMap::with_max_entries(NAMES_LARGE_MAX, BPF_F_NO_PREALLOC);
#[map]
static ZONES: HashMap<NameKey, ZoneValue> = HashMap::with_max_entries(ZONES_MAX, BPF_F_NO_PREALLOC);
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
const DNS_HEADER: usize = 12;
const OPT_RR: usize = 11;
/// Where the answer section may start at the most: header, longest key name, type and class.
const MAX_ANSWER_OFF: usize = DNS_HEADER + KEY_NAME_LEN + 4;

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
                if count(stat) == 1 && stat as u32 == Stat::PassNoRoom as u32 {
                    warn!(
                        &ctx,
                        "no room to grow a frame for its answer on CPU {}; passing such queries up",
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

#[inline(always)]
fn count(stat: Stat) -> u64 {
    match STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// A bounds-checked pointer to a `T` at `off` in the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Pass> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(Some(Stat::PassMalformed));
    }
    Ok((start + off) as *mut T)
}

/// A helper's length argument the verifier can bound: `len` itself for `1 <= len <= max`
/// (`max` a power of two). LLVM folds range checks into forms the verifier can't follow; a mask
/// it can.
#[inline(always)]
fn helper_len(len: usize, max: usize) -> u32 {
    (((opaque(len) - 1) & (max - 1)) + 1) as u32
}

/// Passes a value through the per-CPU scratch slot. The verifier knows nothing of a value loaded
/// from map memory, so the states of a loop's many exits (each with its own range for the value)
/// become one state after this, and the rest of the program is verified once instead of once per
/// exit. Callers bound the result again with a check or mask.
#[inline(always)]
fn launder(s: &mut Scratch, x: u64) -> u64 {
    // SAFETY: a field of the per-CPU scratch slot, only this CPU uses it.
    unsafe {
        core::ptr::write_volatile(&mut s.tmp, x);
        core::ptr::read_volatile(&s.tmp)
    }
}

/// Hides a value from LLVM's range analysis, so that masks meant for the verifier stay in.
#[inline(always)]
fn opaque(x: usize) -> usize {
    // SAFETY: reads a local.
    unsafe { core::ptr::read_volatile(&x) }
}

#[inline(always)]
fn be16(b: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*b)
}

/// What the IP layer said about a UDP datagram to our port.
struct Udp {
    /// Offset of the L3 header.
    l3: usize,
    /// Offset of the UDP header.
    l4: usize,
    v6: bool,
    /// UDP length (header included) from the UDP header, checked against the IP length.
    udp_len: usize,
}

#[inline(always)]
fn try_edgedns(ctx: &XdpContext) -> Result<u32, Pass> {
    let cfg = CONFIG.get(0).ok_or(None)?;
    let udp = parse_l2_l4(ctx, cfg)?;
    if cfg.enabled == 0 {
        return Err(Some(Stat::PassDisabled));
    }
    answer(ctx, cfg, &udp)
}

#[inline(always)]
fn parse_l2_l4(ctx: &XdpContext, cfg: &XdpConfig) -> Result<Udp, Pass> {
    let mut l3 = 14;
    let mut proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 12).map_err(|_| None)? });
    if proto == ETH_P_8021Q {
        proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, 16).map_err(|_| None)? });
        l3 = 18;
    }
    let (l4, v6, ip_payload) = if proto == ETH_P_IPV4 && cfg.families & FAMILY_V4 != 0 {
        let ip = unsafe { &*ptr_at::<[u8; 20]>(ctx, l3).map_err(|_| None)? };
        if ip[9] != IPPROTO_UDP || ip[0] >> 4 != 4 {
            return Err(None);
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let frag = be16(&[ip[6], ip[7]]);
        let more_fragments = frag & 0x2000 != 0;
        let frag_off = frag & 0x1fff;
        if frag_off != 0 {
            // A later fragment has no UDP header: we can't tell whose it is.
            return Err(None);
        }
        let dport = unsafe { *ptr_at::<u16>(ctx, l3 + (ihl & 0x3c) + 2).map_err(|_| None)? };
        if dport != cfg.port_be {
            return Err(None);
        }
        if more_fragments {
            return Err(Some(Stat::PassFragment));
        }
        if ihl != 20 {
            return Err(Some(Stat::PassIpOptions));
        }
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        if cfg.ipv4 != [0; 4] && dst != cfg.ipv4 {
            return Err(None);
        }
        let tot = be16(&[ip[2], ip[3]]) as usize;
        if tot < 20 {
            return Err(Some(Stat::PassMalformed));
        }
        (l3 + 20, false, tot - 20)
    } else if proto == ETH_P_IPV6 && cfg.families & FAMILY_V6 != 0 {
        let ip = unsafe { &*ptr_at::<[u8; 40]>(ctx, l3).map_err(|_| None)? };
        if ip[0] >> 4 != 6 {
            return Err(None);
        }
        let next = ip[6];
        if next != IPPROTO_UDP {
            return match next {
                // Hop-by-hop, routing, fragment, destination options, mobility, HIP, shim6.
                0 | 43 | 44 | 60 | 135 | 139 | 140 => Err(Some(Stat::PassIpv6Ext)),
                _ => Err(None),
            };
        }
        let dport = unsafe { *ptr_at::<u16>(ctx, l3 + 40 + 2).map_err(|_| None)? };
        if dport != cfg.port_be {
            return Err(None);
        }
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        if cfg.ipv6 != [0; 16] && dst != cfg.ipv6 {
            return Err(None);
        }
        (l3 + 40, true, be16(&[ip[4], ip[5]]) as usize)
    } else {
        return Err(None);
    };
    let uh = unsafe { &*ptr_at::<[u8; 8]>(ctx, l4)? };
    let udp_len = be16(&[uh[4], uh[5]]) as usize;
    // The IP length must cover the UDP datagram and lie inside the frame (frames may be padded).
    if udp_len < 8 || udp_len > ip_payload || ctx.data() + l4 + ip_payload > ctx.data_end() {
        return Err(Some(Stat::PassMalformed));
    }
    Ok(Udp {
        l3,
        l4,
        v6,
        udp_len,
    })
}

/// The parsed query, as far as the answer needs it.
struct Query {
    id: u16,
    flags: u16,
    /// Wire length of the question name, root label included.
    name_len: usize,
    /// Segment index of the query type.
    seg: usize,
    /// Client's EDNS UDP payload size and DO bit, if it sent an OPT record.
    edns: Option<(u16, bool)>,
}

#[inline(always)]
fn answer(ctx: &XdpContext, cfg: &XdpConfig, udp: &Udp) -> Result<u32, Pass> {
    let dns = udp.l4 + 8;
    let dns_len = udp.udp_len - 8;
    if dns_len < DNS_HEADER + 5 {
        return Err(Some(Stat::PassMalformed));
    }
    let h = unsafe { &*ptr_at::<[u8; DNS_HEADER]>(ctx, dns)? };
    let flags = be16(&[h[2], h[3]]);
    if flags & 0x8000 != 0 {
        return Err(Some(Stat::PassQr));
    }
    if flags & 0x7800 != 0 {
        return Err(Some(Stat::PassOpcode));
    }
    if flags & 0x0200 != 0 {
        return Err(Some(Stat::PassTc));
    }
    if be16(&[h[4], h[5]]) != 1 {
        return Err(Some(Stat::PassQdcount));
    }
    let arcount = be16(&[h[10], h[11]]);
    if h[6] | h[7] | h[8] | h[9] != 0 || arcount > 1 {
        return Err(Some(Stat::PassCounts));
    }
    let id = be16(&[h[0], h[1]]);

    let qlen = dns_len - DNS_HEADER;
    if qlen > QUERY_MAX {
        return Err(Some(Stat::PassTooBig));
    }
    let s = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(None)? };
    // SAFETY: the helper checks the packet range; `q` holds QUERY_MAX >= qlen bytes.
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (dns + DNS_HEADER) as u32,
            s.q.as_mut_ptr().cast(),
            helper_len(qlen, QUERY_MAX),
        )
    };
    if ret != 0 {
        return Err(Some(Stat::PassMalformed));
    }
    let q = decode_question(parse_question(s, qlen as u64, arcount as u64), id, flags)?;
    if build_key(ctx.ctx, s, q.name_len as u64, (dns + DNS_HEADER) as u64) != 0 {
        return Err(Some(Stat::PassMalformed));
    }
    if q.name_len <= SHORT_NAME_LEN {
        // SAFETY: the last SHORT_NAME_LEN bytes of the key, which is all a short name fills.
        let short = unsafe {
            &*(s.key.name.as_ptr().add(KEY_NAME_LEN - SHORT_NAME_LEN) as *const ShortKey)
        };
        let Some(v) = NAMES_SHORT.get_ptr(short) else {
            // Every short name has a short entry, so this name doesn't exist.
            return nxdomain(ctx, cfg, udp, s, &q);
        };
        let v = unsafe { &*v };
        if v.pass_mask & IN_LARGE == 0 {
            return positive(ctx, cfg, udp, s, &q, v);
        }
    } else if let Some(v) = NAMES_SMALL.get_ptr(&s.key) {
        return positive(ctx, cfg, udp, s, &q, unsafe { &*v });
    }
    if let Some(v) = NAMES_LARGE.get_ptr(&s.key) {
        return positive(ctx, cfg, udp, s, &q, unsafe { &*v });
    }
    if q.name_len <= SHORT_NAME_LEN {
        // Marked as in the large map but not there: between two writes. Let the fallback say.
        return Err(Some(Stat::PassRecord));
    }
    nxdomain(ctx, cfg, udp, s, &q)
}

// The loops below live in functions of their own (BPF subprograms) that return a value passed
// through `launder`: every exit of a loop then returns the same verifier state, and the code after
// the call is verified once, not once per exit.

/// Set in a subprogram's result: the low byte is `Stat as u8 + 1`, or 0 for "not ours".
const ERR: u64 = 1 << 63;

#[inline(always)]
fn err_code(p: Pass) -> u64 {
    ERR | p.map(|s| s as u64 + 1).unwrap_or(0)
}

#[inline(always)]
fn decode_err(x: u64) -> Pass {
    let code = (x & 0xff) as u32;
    if code == 0 {
        return None;
    }
    Stat::ALL.get(code as usize - 1).copied()
}

/// Decodes what `parse_question` returned.
#[inline(always)]
fn decode_question(packed: u64, id: u16, flags: u16) -> Result<Query, Pass> {
    if packed & ERR != 0 {
        return Err(decode_err(packed));
    }
    let name_len = (packed & 0xff) as usize;
    if name_len == 0 || name_len > KEY_NAME_LEN {
        return Err(Some(Stat::PassMalformed));
    }
    let edns = if packed & 1 << 16 != 0 {
        Some(((packed >> 32) as u16, packed & 1 << 17 != 0))
    } else {
        None
    };
    Ok(Query {
        id,
        flags,
        name_len,
        seg: ((packed >> 8) & 3) as usize,
        edns,
    })
}

/// Parses the question (and an OPT record) from `s.q[..qlen]`; returns the fields packed for
/// `decode_question`, or `ERR` with the reason.
#[inline(never)]
fn parse_question(s: &mut Scratch, qlen: u64, arcount: u64) -> u64 {
    let mut r = match parse_question_inner(s, qlen as usize, arcount as u16) {
        Ok(packed) => packed,
        Err(p) => err_code(p),
    };
    // With an OPT record, its options must be well framed: the fallback answers FORMERR if not.
    if r & ERR == 0 && r & 1 << 16 != 0 {
        let options = (r & 0xff) + 4 + OPT_RR as u64;
        if check_options(s, options, qlen) != 0 {
            r = err_code(Some(Stat::PassMalformed));
        }
    }
    launder(s, r)
}

/// RFC 6891 6.1.2: the OPT RDATA `s.q[start..end]` is a sequence of options, each a code, a
/// length and that many bytes. Returns 0 if the options tile it exactly, 1 if not.
#[inline(never)]
fn check_options(s: &mut Scratch, start: u64, end: u64) -> u64 {
    let end = end as usize;
    let mut pos = start as usize;
    let mut r = 1;
    // An option takes at least 4 bytes.
    for _ in 0..QUERY_MAX / 4 + 1 {
        if pos >= end {
            if pos == end {
                r = 0;
            }
            break;
        }
        // Bytes past `end` are stale, but then `pos` lands past `end` and the answer is 1.
        let (Some(hi), Some(lo)) = (s.q.get(pos + 2).copied(), s.q.get(pos + 3).copied()) else {
            break;
        };
        pos += 4 + be16(&[hi, lo]) as usize;
    }
    launder(s, r)
}

#[inline(always)]
fn parse_question_inner(s: &Scratch, qlen: usize, arcount: u16) -> Result<u64, Pass> {
    let q = &s.q;
    let malformed = Some(Stat::PassMalformed);
    // Walk the labels; a name longer than the key is passed up.
    let mut pos = 0usize;
    for _ in 0..KEY_NAME_LEN / 2 {
        let l = *q.get(pos).ok_or(malformed)? as usize;
        if l == 0 {
            break;
        }
        if l > 63 {
            // Compression pointers or extended label types in a question.
            return Err(malformed);
        }
        pos += l + 1;
        // The next length byte must be in this query: past `qlen`, `s.q` holds an earlier
        // packet's bytes, and the reason would depend on them.
        if pos >= qlen {
            return Err(malformed);
        }
        if pos >= KEY_NAME_LEN {
            return Err(Some(Stat::PassLongName));
        }
    }
    if *q.get(pos).ok_or(malformed)? != 0 {
        return Err(Some(Stat::PassLongName));
    }
    let name_len = pos + 1;
    if name_len + 4 > qlen {
        return Err(malformed);
    }
    let qtype = be16(&[
        *q.get(name_len).ok_or(malformed)?,
        *q.get(name_len + 1).ok_or(malformed)?,
    ]);
    let qclass = be16(&[
        *q.get(name_len + 2).ok_or(malformed)?,
        *q.get(name_len + 3).ok_or(malformed)?,
    ]);
    let rest = qlen - name_len - 4;
    let mut packed = name_len as u64;
    if arcount == 1 {
        // The one additional record must be an OPT at the root: name 0, type, class (payload
        // size), TTL (extended rcode, version, flags), RDLENGTH, options (ignored).
        let o = name_len + 4;
        if rest < OPT_RR {
            return Err(malformed);
        }
        let mut r = [0u8; OPT_RR];
        for (i, b) in r.iter_mut().enumerate() {
            *b = *q.get(o + i).ok_or(malformed)?;
        }
        if r[0] != 0 || be16(&[r[1], r[2]]) != TYPE_OPT {
            return Err(Some(Stat::PassCounts));
        }
        if rest != OPT_RR + be16(&[r[9], r[10]]) as usize {
            return Err(malformed);
        }
        if r[6] != 0 {
            return Err(Some(Stat::PassEdnsVersion));
        }
        packed |= 1 << 16 | ((r[7] & 0x80 != 0) as u64) << 17 | (be16(&[r[3], r[4]]) as u64) << 32;
    } else if rest != 0 {
        return Err(malformed);
    }
    if qclass != CLASS_IN {
        return Err(Some(Stat::PassClass));
    }
    let seg = seg_for_qtype(qtype).ok_or(Some(Stat::PassQtype))?;
    Ok(packed | (seg as u64) << 8)
}

/// Writes the lowercased name, right-aligned, into `s.key`: the packet's name bytes (at `off`)
/// are copied into place with one helper call, then folded to lower case eight bytes at a time.
/// Returns 0, or 1 on a bad length.
#[inline(never)]
fn build_key(ctx: *mut xdp_md, s: &mut Scratch, name_len: u64, off: u64) -> u64 {
    let name_len = name_len as usize;
    // Twelve word stores. A plain `s.key = NameKey::zeroed()` becomes a call to the byte-wise
    // memset subprogram (about a tenth of the program's time in the benchmark's profile), and
    // LLVM turns a plain store loop back into that memset: volatile stores stay as they are.
    let words = s.key.name.as_mut_ptr() as *mut u64;
    for w in 0..KEY_NAME_LEN / 8 {
        // SAFETY: w < KEY_NAME_LEN / 8; the key is 8-byte aligned at the start of the slot.
        unsafe { core::ptr::write_volatile(words.add(w), 0) };
    }
    if name_len == 0 || name_len > KEY_NAME_LEN {
        return launder(s, 1);
    }
    // `start` masked for the verifier, which then bounds the copy by start + 128 bytes: still
    // inside the scratch slot, and at run time it ends exactly at the key's end.
    let start = opaque(KEY_NAME_LEN - name_len) & 0x7f;
    // SAFETY: the helper checks the packet range; the destination is inside the scratch slot.
    let r = unsafe {
        bpf_xdp_load_bytes(
            ctx,
            off as u32,
            s.key.name.as_mut_ptr().add(start).cast(),
            helper_len(name_len, 128),
        )
    };
    if r != 0 {
        return launder(s, 1);
    }
    let words = s.key.name.as_mut_ptr() as *mut u64;
    for w in 0..KEY_NAME_LEN / 8 {
        // SAFETY: w < KEY_NAME_LEN / 8; the key is 8-byte aligned at the start of the slot.
        unsafe {
            let p = words.add(w);
            *p = fold_case_word(*p);
        }
    }
    launder(s, 0)
}

/// Zeroes the first `m` bytes of the key, turning it into the key of a suffix of the name.
#[inline(never)]
fn zero_prefix(s: &mut Scratch, m: u64) -> u64 {
    let m = m as usize;
    let words = s.key.name.as_mut_ptr() as *mut u64;
    for w in 0..KEY_NAME_LEN / 8 {
        let lo = w * 8;
        if m <= lo {
            break;
        }
        // SAFETY: w < KEY_NAME_LEN / 8, the key is 8-byte aligned at the start of the scratch slot.
        let p = unsafe { words.add(w) };
        if m >= lo + 8 {
            unsafe { *p = 0 };
        } else {
            // Little-endian: the first bytes in memory are the low ones.
            unsafe { *p &= u64::MAX << ((m - lo) * 8) };
        }
    }
    launder(s, 0)
}

/// One piece of the answer section, copied from a map value.
#[derive(Clone, Copy)]
struct Piece {
    ptr: *const u8,
    len: usize,
    /// A power of two no smaller than `len`, such that `ptr + max` stays inside the value.
    max: usize,
}

const NO_PIECE: Piece = Piece {
    ptr: core::ptr::null(),
    len: 0,
    max: 1,
};

/// The answer section and the counts that go with it.
struct Answer {
    pieces: [Piece; 2],
    /// Sum of the pieces' bytes as placed from an even offset (see `Seg::sum`).
    sum: u16,
    /// For negative answers: the SOA owner pointer to write over the first two bytes.
    soa_ptr: Option<u16>,
    rcode: u16,
    ancount: u16,
    nscount: u16,
    stat: Stat,
}

#[inline(always)]
fn seg_piece<const N: usize>(v: &NameValue<N>, seg: &Seg) -> Result<Piece, Pass> {
    let off = seg.off as usize;
    let len = seg.len as usize;
    if len == 0 {
        return Ok(NO_PIECE);
    }
    if off >= seg_max(N) || len > seg_max(N) {
        return Err(Some(Stat::PassRecord));
    }
    // Masked again for the verifier: `off < N / 2` and `len <= N / 2` keep the copy in the blob.
    let off = opaque(off) & (seg_max(N) - 1);
    Ok(Piece {
        ptr: unsafe { v.blob.as_ptr().add(off) },
        len,
        max: seg_max(N),
    })
}

#[inline(always)]
fn positive<const N: usize>(
    ctx: &XdpContext,
    cfg: &XdpConfig,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
    v: &NameValue<N>,
) -> Result<u32, Pass> {
    if v.pass_mask & (1 << q.seg) != 0 {
        return Err(Some(Stat::PassRecord));
    }
    let prefix = &v.segs[0];
    let typed = match q.seg {
        1 => &v.segs[1],
        2 => &v.segs[2],
        _ => &v.segs[3],
    };
    let ancount = prefix.count + typed.count;
    if ancount == 0 {
        // NODATA: the name exists without this type. Find the zone by its apex suffix.
        let apex_len = v.apex_len as usize;
        if apex_len == 0 || apex_len > q.name_len {
            return Err(Some(Stat::PassRecord));
        }
        zero_prefix(s, (KEY_NAME_LEN - apex_len) as u64);
        let zone = unsafe { &*ZONES.get_ptr(&s.key).ok_or(Some(Stat::PassNoZone))? };
        return negative(ctx, cfg, udp, s, q, zone, q.name_len - apex_len, false);
    }
    let a = Answer {
        pieces: [seg_piece(v, prefix)?, seg_piece(v, typed)?],
        sum: fold(prefix.sum as u32 + typed.sum as u32),
        soa_ptr: None,
        rcode: 0,
        ancount,
        nscount: 0,
        stat: Stat::AnsweredAnswer,
    };
    respond(ctx, cfg, udp, s, q, &a)
}

/// The name is not in the maps: find its zone by walking up the labels, answer NXDOMAIN.
#[inline(always)]
fn nxdomain(
    ctx: &XdpContext,
    cfg: &XdpConfig,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
) -> Result<u32, Pass> {
    let r = find_zone(s, q.name_len as u64);
    if r & ERR != 0 {
        return Err(decode_err(r));
    }
    let apex_off = r as usize;
    if apex_off >= KEY_NAME_LEN {
        return Err(Some(Stat::PassMalformed));
    }
    // `find_zone` left the apex's key in `s.key`.
    let zone = unsafe { &*ZONES.get_ptr(&s.key).ok_or(Some(Stat::PassNoZone))? };
    negative(ctx, cfg, udp, s, q, zone, apex_off, true)
}

/// Walks up the name's labels until a suffix is a zone; returns the suffix's offset in the name
/// (its key left in `s.key`), or `ERR` with the reason.
#[inline(never)]
fn find_zone(s: &mut Scratch, name_len: u64) -> u64 {
    let name_len = name_len as usize;
    let start = KEY_NAME_LEN.wrapping_sub(name_len);
    let mut pos = 0usize;
    let mut r = err_code(Some(Stat::PassNoZone));
    for _ in 0..KEY_NAME_LEN / 2 {
        let Some(l) = s.q.get(pos).copied() else {
            break;
        };
        if l == 0 || start > KEY_NAME_LEN {
            break;
        }
        pos += l as usize + 1;
        if pos >= name_len {
            break;
        }
        zero_prefix(s, (start + pos) as u64);
        if let Some(zone) = ZONES.get_ptr(&s.key) {
            r = if unsafe { (*zone).flags } & ZONE_NEG_PASS != 0 {
                err_code(Some(Stat::PassNegative))
            } else {
                pos as u64
            };
            break;
        }
    }
    launder(s, r)
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn negative(
    ctx: &XdpContext,
    cfg: &XdpConfig,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
    zone: &ZoneValue,
    apex_off: usize,
    nxdomain: bool,
) -> Result<u32, Pass> {
    let len = zone.soa_len as usize;
    if !(2..=SOA_BLOB).contains(&len) {
        return Err(Some(Stat::PassNoZone));
    }
    let ptr = 0xc000 | (DNS_HEADER + apex_off) as u16;
    let a = Answer {
        pieces: [
            Piece {
                ptr: zone.soa.as_ptr(),
                len,
                max: SOA_BLOB,
            },
            NO_PIECE,
        ],
        sum: fold(zone.soa_sum as u32 + ptr as u32),
        soa_ptr: Some(ptr),
        rcode: if nxdomain { 3 } else { 0 },
        ancount: 0,
        nscount: 1,
        stat: if nxdomain {
            Stat::AnsweredNxdomain
        } else {
            Stat::AnsweredNodata
        },
    };
    respond(ctx, cfg, udp, s, q, &a)
}

/// Folds a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
fn fold(mut x: u32) -> u16 {
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    x as u16
}

#[inline(always)]
fn sum_bytes(b: &[u8]) -> u32 {
    let mut acc = 0u32;
    let mut i = 0;
    while i + 1 < b.len() {
        acc += be16(&[b[i], b[i + 1]]) as u32;
        i += 2;
    }
    if i < b.len() {
        acc += (b[i] as u32) << 8;
    }
    acc
}

/// Rewrites the query into the response in place and sends it back.
#[inline(always)]
fn respond(
    ctx: &XdpContext,
    cfg: &XdpConfig,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
    a: &Answer,
) -> Result<u32, Pass> {
    let qn = q.name_len + 4;
    let ans_len = a.pieces[0].len + a.pieces[1].len;
    let opt_len = if q.edns.is_some() { OPT_RR } else { 0 };
    let dns_len = DNS_HEADER + qn + ans_len + opt_len;
    // RFC 6891 6.2.5: a payload size below 512 is treated as 512.
    let limit = match q.edns {
        Some((size, _)) => size.clamp(512, cfg.udp_payload.max(512)) as usize,
        None => 512,
    };
    if dns_len > limit {
        return Err(Some(Stat::PassTooBig));
    }

    // Header: QR, AA, RD and CD copied (RFC 1035 4.1.1, RFC 4035 3.1.6), RA, AD, Z clear.
    let rflags = 0x8400 | (q.flags & 0x0110) | a.rcode;
    let hdr: [u16; 6] = [
        q.id,
        rflags,
        1,
        a.ancount,
        a.nscount,
        q.edns.is_some() as u16,
    ];
    let mut hsum = 0u32;
    for (i, w) in hdr.iter().enumerate() {
        let b = w.to_be_bytes();
        s.out[2 * i] = b[0];
        s.out[2 * i + 1] = b[1];
        hsum += *w as u32;
    }
    // Our OPT: root name, type 41, class = our payload size, ext rcode 0, version 0, DO copied.
    let mut osum = 0u32;
    if let Some((_, dnssec_ok)) = q.edns {
        let size = cfg.udp_payload.to_be_bytes();
        let opt: [u8; 12] = [
            0,
            0,
            TYPE_OPT as u8,
            size[0],
            size[1],
            0,
            0,
            if dnssec_ok { 0x80 } else { 0 },
            0,
            0,
            0,
            0,
        ];
        s.out[16..28].copy_from_slice(&opt);
        osum = sum_bytes(&opt);
        if (qn + ans_len) & 1 != 0 {
            osum = fold(osum).swap_bytes() as u32;
        }
    }

    // Sum of the question as the client sent it: zero the bytes after it up to a multiple of 4.
    let qn4 = (qn + 3) & !3;
    if qn4 > MAX_ANSWER_OFF {
        return Err(Some(Stat::PassLongName));
    }
    for i in 0..3 {
        if qn + i < qn4 {
            *s.q.get_mut(qn + i).ok_or(Some(Stat::PassMalformed))? = 0;
        }
    }
    // SAFETY: s.q holds QUERY_MAX >= qn4 bytes; `from` is empty.
    let qsum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            s.q.as_mut_ptr().cast(),
            qn4 as u32,
            0,
        )
    } as u32;
    // csum_diff sums 16-bit words as they lie in memory (little-endian here): swap to big-endian.
    let qsum = fold(qsum).swap_bytes() as u32;

    let mut asum = a.sum as u32;
    if qn & 1 != 0 {
        asum = (a.sum).swap_bytes() as u32;
    }

    // Resize the frame to the response, trimming any Ethernet padding.
    let old = ctx.data_end() - ctx.data();
    let new = udp.l4 + 8 + dns_len;
    let delta = new as i32 - old as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        grow_at_head(ctx, s, udp.l4 + 8 + DNS_HEADER + qn, delta)?;
    }
    // From here on the frame is the response's size: anything that fails drops it.
    match write_response(ctx, udp, s, a, qn, dns_len, hsum + qsum + asum + osum) {
        Ok(()) => {
            count(a.stat);
            Ok(xdp_action::XDP_TX)
        }
        Err(_) => {
            count(Stat::PassNoRoom);
            Ok(xdp_action::XDP_DROP)
        }
    }
}

/// Grows the frame by `delta` bytes at the front when the buffer has no tailroom (an skb-backed
/// frame on veth or in generic mode often has little): the first `keep` bytes (headers and
/// question) move to the new start, and the bytes after them are free for the answer.
#[inline(always)]
fn grow_at_head(ctx: &XdpContext, s: &mut Scratch, keep: usize, delta: i32) -> Result<(), Pass> {
    const KEEP_MAX: usize = 256;
    if delta <= 0 || keep > KEEP_MAX {
        return Err(Some(Stat::PassNoRoom));
    }
    let len = helper_len(keep, KEEP_MAX);
    // SAFETY: the helpers check the packet range; `s.q` holds QUERY_MAX >= KEEP_MAX bytes and is
    // no longer needed (the question's sum is taken).
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, 0, s.q.as_mut_ptr().cast(), len) != 0 {
            return Err(Some(Stat::PassNoRoom));
        }
        if bpf_xdp_adjust_head(ctx.ctx, -delta) != 0 {
            return Err(Some(Stat::PassNoRoom));
        }
        if bpf_xdp_store_bytes(ctx.ctx, 0, s.q.as_mut_ptr().cast(), len) != 0 {
            // The frame is already resized: it can't go up half-moved.
            return Err(None);
        }
    }
    Ok(())
}

#[inline(always)]
fn store(ctx: &XdpContext, off: usize, src: *const u8, len: usize, max: usize) -> Result<(), ()> {
    // SAFETY: the helper checks the packet range; `src` has `max >= len` readable bytes.
    let ret =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, off as u32, src as *mut _, helper_len(len, max)) };
    if ret == 0 {
        Ok(())
    } else {
        Err(())
    }
}

#[inline(always)]
fn write_response(
    ctx: &XdpContext,
    udp: &Udp,
    s: &Scratch,
    a: &Answer,
    qn: usize,
    dns_len: usize,
    payload_sum: u32,
) -> Result<(), ()> {
    let dns = udp.l4 + 8;
    let mut off = dns + DNS_HEADER + qn;
    for p in a.pieces.iter() {
        if p.len > 0 {
            store(ctx, off, p.ptr, p.len, p.max)?;
            off += p.len;
        }
    }
    if let Some(ptr) = a.soa_ptr {
        let b = ptr.to_be_bytes();
        store(ctx, dns + DNS_HEADER + qn, b.as_ptr(), 2, 2)?;
    }
    if dns_len > DNS_HEADER + qn + a.pieces[0].len + a.pieces[1].len {
        store(ctx, off, s.out[16..].as_ptr(), OPT_RR, 16)?;
    }

    let udp_len = (8 + dns_len) as u16;
    let data = ctx.data();
    let end = ctx.data_end();
    // Ethernet: swap the MAC addresses.
    if data + udp.l4 + 8 > end {
        return Err(());
    }
    let eth = data as *mut [u8; 12];
    unsafe {
        let e = &mut *eth;
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&e[0..6]);
        e.copy_within(6..12, 0);
        e[6..12].copy_from_slice(&mac);
    }
    let mut sum = payload_sum + udp_len as u32 * 2 + IPPROTO_UDP as u32;
    if udp.v6 {
        if data + udp.l3 + 40 > end {
            return Err(());
        }
        let ip = unsafe { &mut *((data + udp.l3) as *mut [u8; 40]) };
        let mut tmp = [0u8; 16];
        tmp.copy_from_slice(&ip[8..24]);
        ip.copy_within(24..40, 8);
        ip[24..40].copy_from_slice(&tmp);
        ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
        ip[7] = 64;
        sum += sum_bytes(&ip[8..40]);
    } else {
        if data + udp.l3 + 20 > end {
            return Err(());
        }
        let ip = unsafe { &mut *((data + udp.l3) as *mut [u8; 20]) };
        let mut tmp = [0u8; 4];
        tmp.copy_from_slice(&ip[12..16]);
        ip.copy_within(16..20, 12);
        ip[16..20].copy_from_slice(&tmp);
        ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
        ip[8] = 64;
        ip[10] = 0;
        ip[11] = 0;
        let c = !fold(sum_bytes(&ip[..]));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        sum += sum_bytes(&ip[12..20]);
    }
    if data + udp.l4 + 8 + DNS_HEADER > end {
        return Err(());
    }
    // The DNS header, written in place (fixed offset after UDP, no helper call needed).
    let h = unsafe { &mut *((data + udp.l4 + 8) as *mut [u8; DNS_HEADER]) };
    h.copy_from_slice(&s.out[..DNS_HEADER]);
    let uh = unsafe { &mut *((data + udp.l4) as *mut [u8; 8]) };
    let mut ports = [0u8; 2];
    ports.copy_from_slice(&uh[0..2]);
    uh.copy_within(2..4, 0);
    uh[2..4].copy_from_slice(&ports);
    uh[4..6].copy_from_slice(&udp_len.to_be_bytes());
    sum += sum_bytes(&uh[0..4]);
    // RFC 768: a computed checksum of zero is sent as all ones (zero means "none" in IPv4).
    let mut c = !fold(sum);
    if c == 0 {
        c = 0xffff;
    }
    uh[6..8].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
