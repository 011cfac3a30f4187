//! The real XDP program, loaded without attaching, run on crafted frames with
//! `BPF_PROG_TEST_RUN`; and the oracle that says what it should do with a query.

use std::net::{IpAddr, SocketAddr};

use aya::{programs::Xdp, Ebpf, TestRun, TestRunOptions};
use dns_common::{seg_for_qtype, Stat, KEY_NAME_LEN, PROGRAM_NAME};
use dns_user::{
    compile::{compile_name, full_sync},
    fallback::{handle, FallbackConfig, Transport},
    loader::{load_detached, served_keys, xdp_config},
    maps::{FastPath, NameEntry},
    zone::ZoneSet,
};
use hickory_proto::op::{Message, ResponseCode};

use crate::{
    dns_message::{fast_path_size, QuerySpec, CLASS_IN},
    fixture::name_from_wire,
    packet::parse_udp,
};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// One run of the program on one frame.
#[derive(Debug)]
pub struct Run {
    pub action: u32,
    /// The frame as the program left it.
    pub out: Vec<u8>,
    /// The counters that moved, and by how much.
    pub counted: Vec<(Stat, u64)>,
}

impl Run {
    /// The one counter that moved by one, if exactly that happened.
    pub fn single(&self) -> Option<Stat> {
        match self.counted.as_slice() {
            [(s, 1)] => Some(*s),
            _ => None,
        }
    }
}

/// The loaded program and its maps.
pub struct XdpRunner {
    pub ebpf: Ebpf,
    pub fast: FastPath,
}

impl XdpRunner {
    /// Loads the program (the verifier runs here) with the configuration the daemon would give
    /// it for `listen`.
    pub fn load(listen: SocketAddr, udp_payload: u16) -> Self {
        let (ebpf, fast) = load_detached(xdp_config(udp_payload, true), &served_keys(&[listen]))
            .unwrap_or_else(|e| panic!("loading the XDP program: {:#}", anyhow::Error::new(e)));
        Self { ebpf, fast }
    }

    /// Fills the maps from `zones`, as the daemon does at start.
    pub fn sync(&mut self, zones: &ZoneSet) {
        full_sync(&mut self.fast, zones).expect("full_sync");
    }

    /// Instructions the verifier processed for the program (`verified_insns` of bpf_prog_info).
    pub fn verified_insns(&mut self) -> Option<u32> {
        let prog: &mut Xdp = self.ebpf.program_mut(PROGRAM_NAME)?.try_into().ok()?;
        prog.info().ok()?.verified_instruction_count()
    }

    pub fn stats(&self) -> Vec<(Stat, u64)> {
        self.fast.stats().expect("reading STATS")
    }

    /// Runs the program once on `frame`. `Err` if the kernel refuses the run (frames under 14
    /// bytes are refused with EINVAL).
    pub fn run(&mut self, frame: &[u8]) -> Result<Run, aya::programs::ProgramError> {
        let before = self.stats();
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .expect("program in the object")
            .try_into()
            .expect("an XDP program");
        let mut out = vec![0u8; 4096];
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        let after = self.stats();
        Ok(Run {
            action: r.return_value,
            out,
            counted: moved(&before, &after),
        })
    }
}

/// The counters that moved from `before` to `after` (two readings of [`FastPath::stats`]), and
/// by how much.
pub fn moved(before: &[(Stat, u64)], after: &[(Stat, u64)]) -> Vec<(Stat, u64)> {
    after
        .iter()
        .filter_map(|&(stat, n)| {
            let was = before
                .iter()
                .find(|(s, _)| *s == stat)
                .map_or(0, |&(_, n)| n);
            (n > was).then_some((stat, n - was))
        })
        .collect()
}

/// What the program should do with a well-formed query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// XDP_TX, counted under this `Answered*` counter.
    Answered(Stat),
    /// XDP_PASS, counted under this reason.
    Passed(Stat),
}

/// The UDP response limit the program and the fallback apply (RFC 6891 §6.2.5).
pub fn udp_limit(q: &QuerySpec, udp_payload: u16) -> usize {
    match &q.edns {
        Some(e) => usize::from(e.payload.clamp(512, udp_payload.max(512))),
        None => 512,
    }
}

/// Whether the program must pass `frame` up as a martian (written from the fast path's
/// contract): a source or destination no DNS client has on the wire (IPv4 0.0.0.0/8, loopback,
/// and 224/4 and above; IPv6 multicast, unspecified, loopback and IPv4-mapped) or source port 0.
/// The runner's program is configured as for an interface other than `lo`. `false` for a frame
/// that isn't UDP over IP.
pub fn martian(frame: &[u8]) -> bool {
    let Some(f) = parse_udp(frame) else {
        return false;
    };
    let bad = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_loopback() || a.octets()[0] >= 224,
        IpAddr::V6(a) => {
            a.is_multicast()
                || a.is_unspecified()
                || a.is_loopback()
                || a.to_ipv4_mapped().is_some()
        }
    };
    f.sport == 0 || bad(&f.src_ip) || bad(&f.dst_ip)
}

/// The oracle: what the program must do with `q` (a well-formed query: QR=0, opcode QUERY, one
/// question, no answer/authority records, at most one OPT). Written from the fast path's
/// contract, not from the program: A/AAAA/CNAME questions of class IN for names of at most
/// [`KEY_NAME_LEN`] wire bytes, whose answer is not marked "pass" by the compiler and fits the
/// client's limit, are answered; the rest goes up with its reason.
pub fn expect(zones: &ZoneSet, q: &QuerySpec, udp_payload: u16) -> Expect {
    use Expect::*;
    if q.qname.len() > KEY_NAME_LEN {
        return Passed(Stat::PassLongName);
    }
    if q.edns.as_ref().is_some_and(|e| e.version != 0) {
        return Passed(Stat::PassEdnsVersion);
    }
    if q.qclass != CLASS_IN {
        return Passed(Stat::PassClass);
    }
    let Some(seg) = seg_for_qtype(q.qtype) else {
        return Passed(Stat::PassQtype);
    };
    let name = name_from_wire(&q.qname).expect("generated names decode");
    let zone = zones.find_zone(&name);
    let full = full_answer(zones, q);
    let kind = match zone {
        None => return Passed(Stat::PassNoZone),
        Some(z) if z.name_exists(&name) => {
            let (_, entry) = compile_name(zones, z, &name).expect("a name of <= 96 bytes compiles");
            let mask = match entry {
                NameEntry::Small(v) => v.pass_mask,
                NameEntry::Large(v) => v.pass_mask,
            };
            if mask & (1 << seg) != 0 {
                return Passed(Stat::PassRecord);
            }
            if full.answers().is_empty() {
                Stat::AnsweredNodata
            } else {
                Stat::AnsweredAnswer
            }
        }
        Some(z) if z.has_wildcard_or_cut() => return Passed(Stat::PassNegative),
        Some(_) => Stat::AnsweredNxdomain,
    };
    let size = fast_path_size(q.question().len(), &full)
        .expect("a fast-path answer has only A, AAAA, CNAME and SOA records");
    if size > udp_limit(q, udp_payload) {
        return Passed(Stat::PassTooBig);
    }
    Answered(kind)
}

/// The fallback's untruncated answer to `q` (over TCP, so nothing is cut).
pub fn full_answer(zones: &ZoneSet, q: &QuerySpec) -> Message {
    let bytes = handle(
        zones,
        &q.to_wire(),
        Transport::Tcp,
        &FallbackConfig::default(),
    )
    .expect("the fallback answers every query");
    let m = Message::from_vec(&bytes).expect("the fallback's answer decodes");
    assert!(
        matches!(
            m.response_code(),
            ResponseCode::NoError | ResponseCode::NXDomain | ResponseCode::Refused
        ),
        "unexpected rcode {:?}",
        m.response_code()
    );
    m
}

/// The fallback's answer over UDP, as the daemon would send it.
pub fn fallback_udp(zones: &ZoneSet, dns: &[u8]) -> Option<Vec<u8>> {
    handle(zones, dns, Transport::Udp, &FallbackConfig::default())
}
