//! The zones the program-level tests serve, and a seeded generator of queries and frames over
//! them.
//!
//! The zones hold every shape the fast path is meant to answer (A sets of 1, 2 and 8 addresses,
//! AAAA, a CNAME to an in-zone name with A and AAAA, a CNAME leaving the zone, empty
//! non-terminals, names of 94 to 97 wire bytes, names with 9 and 43 labels, large answers at
//! short and long names) and the shapes it
//! must pass up (CNAME chains and loops, dangling CNAMEs, answers too big for a map value,
//! wildcards, delegations, a name below a cut), in several zones, one nested in another.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_user::zone::{SoaParams, ZoneSet, ZoneSpec};
use hickory_proto::{
    rr::{
        rdata::{A, AAAA, CNAME, MX, NS, TXT},
        Name, RData, RecordType,
    },
    serialize::binary::{BinDecodable, BinDecoder},
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    dns_message::{
        EdnsSpec, QuerySpec, FLAG_AD, FLAG_CD, FLAG_RD, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME,
        TYPE_MX, TYPE_NS, TYPE_SOA, TYPE_TXT,
    },
    packet::FrameSpec,
};

pub fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|e| panic!("test name {s:?}: {e}"))
}

/// A wire-form name as a hickory `Name` (case kept); `None` if it doesn't decode.
pub fn name_from_wire(wire: &[u8]) -> Option<Name> {
    Name::read(&mut BinDecoder::new(wire)).ok()
}

fn a(i: u32) -> RData {
    RData::A(A(Ipv4Addr::from(0xc000_0200 + i)))
}

fn aaaa(i: u16) -> RData {
    RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
}

fn cname(target: &str) -> RData {
    RData::CNAME(CNAME(n(target)))
}

/// A name of exactly `wire_len` wire bytes ending in `apex` (labels of letters and digits).
pub fn name_of_len(prefix: &str, apex: &str, wire_len: usize) -> String {
    let apex_len = crate::dns_message::wire_name(apex).len();
    let mut left = wire_len
        .checked_sub(apex_len)
        .expect("name shorter than its apex");
    let mut labels = Vec::new();
    let mut i = 0;
    while left > 0 {
        // A label of l bytes takes l + 1; never leave a 1-byte remainder (a 0-length label).
        let mut take = left.min(64);
        if left - take == 1 {
            take -= 1;
        }
        let body: String = prefix
            .chars()
            .chain(std::iter::repeat(char::from(b'a' + (i % 26) as u8)))
            .take(take - 1)
            .collect();
        labels.push(body);
        left -= take;
        i += 1;
    }
    format!("{}.{apex}", labels.join("."))
}

pub const EXAMPLE: &str = "example.com.";
pub const SUB: &str = "sub.example.com.";
pub const WILD: &str = "wild.test.";
pub const CUT: &str = "cut.test.";
pub const NET: &str = "example.net.";

/// A long apex (52 wire bytes): names below it reach the 96-byte key limit quickly.
pub fn long_apex() -> String {
    format!("{}.apex.test.", "l".repeat(40))
}

/// The zones (see the module docs).
pub fn zones() -> ZoneSet {
    let mut zs = ZoneSet::new();
    let mut create = |apex: &str, soa: Option<(u32, u32)>| {
        let mut spec = ZoneSpec::new(
            n(apex),
            n(&format!("ns1.{apex}")),
            n(&format!("hostmaster.{apex}")),
            vec![n(&format!("ns1.{apex}")), n("ns2.example.net.")],
        );
        if let Some((ttl, minimum)) = soa {
            spec.soa = SoaParams {
                ttl,
                minimum,
                ..spec.soa
            };
        }
        zs.create_zone(spec).expect("create zone");
    };
    create(EXAMPLE, None); // SOA TTL 3600, MINIMUM 30: negative TTL 30
    create(SUB, Some((20, 300))); // negative TTL 20 (the SOA TTL)
    create(WILD, None);
    create(CUT, None);
    create(NET, Some((600, 600)));
    create(&long_apex(), Some((100, 50)));

    let mut set = |apex: &str, name: &str, t: RecordType, ttl: u32, rd: Vec<RData>| {
        zs.set_rrset(&n(apex), &n(name), t, ttl, rd)
            .unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    };
    let e = EXAMPLE;
    set(e, "ns1.example.com.", RecordType::A, 3600, vec![a(53)]);
    set(e, "a1.example.com.", RecordType::A, 300, vec![a(1)]);
    set(e, "a2.example.com.", RecordType::A, 300, vec![a(1), a(2)]);
    set(
        e,
        "a3.example.com.",
        RecordType::A,
        300,
        vec![a(1), a(2), a(3)],
    );
    set(
        e,
        "a8.example.com.",
        RecordType::A,
        60,
        (1..=8).map(a).collect(),
    );
    set(e, "aaaa.example.com.", RecordType::AAAA, 120, vec![aaaa(1)]);
    set(
        e,
        "aaaa2.example.com.",
        RecordType::AAAA,
        120,
        vec![aaaa(1), aaaa(2)],
    );
    set(e, "both.example.com.", RecordType::A, 30, vec![a(7)]);
    set(e, "both.example.com.", RecordType::AAAA, 40, vec![aaaa(7)]);
    set(e, "MiXeD.Example.COM.", RecordType::A, 30, vec![a(8)]);
    set(
        e,
        "cname-in.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("both.example.com.")],
    );
    set(
        e,
        "cname-a.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("a1.example.com.")],
    );
    set(
        e,
        "cname-a8.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("a8.example.com.")],
    );
    set(
        e,
        "cname-out.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("www.example.org.")],
    );
    set(
        e,
        "chain2.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("cname-in.example.com.")],
    );
    set(
        e,
        "loop1.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("loop2.example.com.")],
    );
    set(
        e,
        "loop2.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("loop1.example.com.")],
    );
    set(
        e,
        "dangling.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("nothere.example.com.")],
    );
    set(
        e,
        "cname-ent.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("ent.example.com.")],
    );
    set(
        e,
        "cname-sub.example.com.",
        RecordType::CNAME,
        100,
        vec![cname("www.sub.example.com.")],
    );
    set(e, "x.ent.example.com.", RecordType::A, 300, vec![a(10)]);
    // 9 and more labels; b..i are empty non-terminals.
    set(
        e,
        "a.b.c.d.e.f.g.h.i.example.com.",
        RecordType::A,
        300,
        vec![a(9)],
    );
    set(
        e,
        "aaaa18.example.com.",
        RecordType::AAAA,
        300,
        (1..=18).map(aaaa).collect(),
    );
    set(
        e,
        "aaaa40.example.com.",
        RecordType::AAAA,
        300,
        (1..=40).map(aaaa).collect(),
    );
    set(
        e,
        "txt.example.com.",
        RecordType::TXT,
        300,
        vec![RData::TXT(TXT::new(vec!["hello".into()]))],
    );
    set(
        e,
        "example.com.",
        RecordType::MX,
        300,
        vec![RData::MX(MX::new(10, n("mail.example.com.")))],
    );
    set(e, "example.com.", RecordType::A, 300, vec![a(100)]);
    // 43 labels, 95 bytes.
    let many = format!("{}example.com.", "x.".repeat(41));
    set(e, &many, RecordType::A, 300, vec![a(43)]);
    for len in [94, 95, 96, 97, 120] {
        let name = name_of_len(&format!("len{len}"), e, len);
        set(e, &name, RecordType::A, 300, vec![a(len as u32)]);
        set(e, &name, RecordType::AAAA, 300, vec![aaaa(len as u16)]);
    }
    let long96 = name_of_len("len96", e, 96);
    set(
        e,
        "cname-long.example.com.",
        RecordType::CNAME,
        100,
        vec![cname(&long96)],
    );
    // A CNAME whose owner is 96 bytes: the answer starts at the furthest offset there is.
    let cname96 = name_of_len("cn96", e, 96);
    set(
        e,
        &cname96,
        RecordType::CNAME,
        100,
        vec![cname("a2.example.com.")],
    );

    set(SUB, "www.sub.example.com.", RecordType::A, 30, vec![a(20)]);
    set(
        SUB,
        "www.sub.example.com.",
        RecordType::AAAA,
        30,
        vec![aaaa(20)],
    );
    set(
        SUB,
        "y.deep.sub.example.com.",
        RecordType::AAAA,
        30,
        vec![aaaa(21)],
    );

    set(WILD, "host.wild.test.", RecordType::A, 30, vec![a(30)]);
    set(WILD, "*.wild.test.", RecordType::A, 30, vec![a(31)]);

    set(CUT, "host.cut.test.", RecordType::A, 30, vec![a(40)]);
    set(
        CUT,
        "child.cut.test.",
        RecordType::NS,
        30,
        vec![RData::NS(NS(n("ns.child.cut.test.")))],
    );
    set(CUT, "ns.child.cut.test.", RecordType::A, 30, vec![a(41)]);

    set(NET, "www.example.net.", RecordType::A, 7200, vec![a(50)]);
    set(
        NET,
        "www.example.net.",
        RecordType::AAAA,
        7200,
        vec![aaaa(50)],
    );
    set(
        NET,
        "alias.example.net.",
        RecordType::CNAME,
        10,
        vec![cname("www.example.net.")],
    );
    set(
        NET,
        "v6only.example.net.",
        RecordType::AAAA,
        10,
        vec![aaaa(51)],
    );

    let la = long_apex();
    set(&la, &format!("host.{la}"), RecordType::A, 30, vec![a(60)]);
    // A large value at a name longer than a short key: in NAMES_LARGE, marked in NAMES_SMALL.
    set(
        &la,
        &format!("aaaa8.{la}"),
        RecordType::AAAA,
        30,
        (1..=8).map(aaaa).collect(),
    );
    set(
        &la,
        &name_of_len("edge", &la, 96),
        RecordType::A,
        30,
        vec![a(61)],
    );
    set(
        &la,
        &format!("alias.{la}"),
        RecordType::CNAME,
        30,
        vec![cname(&format!("host.{la}"))],
    );
    zs
}

/// Names to ask about: every existing name, and names that don't exist or lie outside the zones.
pub struct NamePool {
    pub existing: Vec<Name>,
    pub missing: Vec<Name>,
    pub outside: Vec<Name>,
}

impl NamePool {
    pub fn new(zs: &ZoneSet) -> Self {
        let mut existing: Vec<Name> = zs.zones().flat_map(|z| z.existing_names()).collect();
        // Names below the cut and CNAME targets that don't exist.
        existing.push(n("ns.child.cut.test."));
        let mut missing = vec![
            n("nothere.example.com."),
            n("x.a1.example.com."),
            n("zz.ent.example.com."),
            n("q.b.c.d.e.f.g.h.i.example.com."),
            n("x.y.z.w.v.u.t.s.r.q.example.com."),
            n("nope.sub.example.com."),
            n("nope.deep.sub.example.com."),
            n("anything.wild.test."),
            n("a.b.wild.test."),
            n("deeper.child.cut.test."),
            n("nope.cut.test."),
            n("nope.example.net."),
            n(&format!("nope.{}", long_apex())),
            n(&name_of_len("miss", &long_apex(), 96)),
            n(&name_of_len("miss", EXAMPLE, 95)),
            n(&name_of_len("miss", EXAMPLE, 96)),
            n(&name_of_len("miss", EXAMPLE, 97)),
            n(&format!("{}example.com.", "y.".repeat(41))),
            n(&format!("{}example.com.", "y.".repeat(42))),
        ];
        let labels: Vec<Name> = existing.clone();
        for (i, e) in labels.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            if let Ok(m) = e.prepend_label(format!("m{i}")) {
                missing.push(m);
            }
        }
        let outside = vec![
            n("www.example.org."),
            n("example."),
            n("com."),
            n("test."),
            n("."),
            n("other.test."),
            n("xexample.com."),
            n("ample.com."),
        ];
        Self {
            existing,
            missing,
            outside,
        }
    }
}

/// Random ASCII case for every letter of a wire name (0x20 style); lengths are never letters.
pub fn random_case(rng: &mut impl Rng, wire: &[u8]) -> Vec<u8> {
    let mut out = wire.to_vec();
    let mut pos = 0;
    while pos < out.len() {
        let l = usize::from(out[pos]);
        if l == 0 {
            break;
        }
        for b in out.iter_mut().skip(pos + 1).take(l) {
            if b.is_ascii_alphabetic() && rng.random_bool(0.5) {
                *b ^= 0x20;
            }
        }
        pos += 1 + l;
    }
    out
}

/// The wire form of a name as hickory holds it (case kept).
pub fn to_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.iter() {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// A seeded generator of queries and the frames that carry them.
pub struct Gen {
    pub rng: StdRng,
    pool: NamePool,
    pub port: u16,
}

/// EDNS payload sizes worth trying: below, at and above 512 and 1232.
const PAYLOADS: [u16; 13] = [
    0, 1, 100, 511, 512, 513, 1000, 1231, 1232, 1233, 1400, 4096, 65535,
];

impl Gen {
    pub fn new(seed: u64, zs: &ZoneSet, port: u16) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            pool: NamePool::new(zs),
            port,
        }
    }

    pub fn name(&mut self) -> Vec<u8> {
        let r = self.rng.random_range(0..100);
        let list = if r < 62 {
            &self.pool.existing
        } else if r < 92 {
            &self.pool.missing
        } else {
            &self.pool.outside
        };
        let name = &list[self.rng.random_range(0..list.len())];
        let wire = to_wire(name);
        match self.rng.random_range(0..10) {
            0..=5 => random_case(&mut self.rng, &wire),
            6 => wire.to_ascii_uppercase(),
            _ => wire,
        }
    }

    pub fn qtype(&mut self) -> u16 {
        match self.rng.random_range(0..100) {
            0..=29 => TYPE_A,
            30..=49 => TYPE_AAAA,
            50..=64 => TYPE_CNAME,
            65..=72 => TYPE_TXT,
            73..=80 => TYPE_MX,
            81..=87 => TYPE_ANY,
            88..=93 => TYPE_SOA,
            _ => TYPE_NS,
        }
    }

    pub fn edns(&mut self) -> Option<EdnsSpec> {
        if self.rng.random_bool(0.4) {
            return None;
        }
        let payload = if self.rng.random_bool(0.85) {
            PAYLOADS[self.rng.random_range(0..PAYLOADS.len())]
        } else {
            self.rng.random()
        };
        let mut e = EdnsSpec::new(payload, self.rng.random_bool(0.5));
        if self.rng.random_bool(0.3) {
            // Client cookie (RFC 7873), NSID request (RFC 5001), padding (RFC 7830).
            match self.rng.random_range(0..4) {
                0 => e.options.push((10, self.rng.random::<[u8; 8]>().to_vec())),
                1 => e.options.push((3, Vec::new())),
                2 => e.options.push((12, vec![0; self.rng.random_range(0..64)])),
                _ => {
                    e.options.push((10, self.rng.random::<[u8; 8]>().to_vec()));
                    e.options.push((3, Vec::new()));
                }
            }
        }
        Some(e)
    }

    pub fn query(&mut self) -> QuerySpec {
        let mut flags = 0;
        for (bit, p) in [
            (FLAG_RD, 0.6),
            (FLAG_CD, 0.2),
            (FLAG_AD, 0.2),
            (0x0040, 0.05),
        ] {
            if self.rng.random_bool(p) {
                flags |= bit;
            }
        }
        QuerySpec {
            id: self.rng.random(),
            flags,
            qname: self.name(),
            qtype: self.qtype(),
            qclass: crate::dns_message::CLASS_IN,
            edns: self.edns(),
        }
    }

    pub fn frame(&mut self) -> FrameSpec {
        let v6 = self.rng.random_bool(0.5);
        let (src_ip, dst_ip): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::from(self.rng.random::<[u8; 16]>()).into(),
                Ipv6Addr::from(self.rng.random::<[u8; 16]>()).into(),
            )
        } else {
            (
                Ipv4Addr::from(self.rng.random::<[u8; 4]>()).into(),
                Ipv4Addr::from(self.rng.random::<[u8; 4]>()).into(),
            )
        };
        let mut mac = || {
            let mut m: [u8; 6] = self.rng.random();
            m[0] &= 0xfe; // unicast
            m
        };
        let (src_mac, dst_mac) = (mac(), mac());
        FrameSpec {
            src_mac,
            dst_mac,
            vlan: self
                .rng
                .random_bool(0.3)
                .then(|| self.rng.random_range(1..4095) | (self.rng.random_range(0..8) << 13)),
            src_ip,
            dst_ip,
            sport: self.rng.random_range(1024..=65535),
            dport: self.port,
            ip_id: self.rng.random(),
            tos: self.rng.random(),
            ttl: self.rng.random_range(1..=255),
            v4_no_udp_csum: self.rng.random_bool(0.1),
            padding: if self.rng.random_bool(0.1) {
                self.rng.random_range(1..24)
            } else {
                0
            },
        }
    }
}
