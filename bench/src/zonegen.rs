//! The zone every server is given: `bench.example.` with `n<i>` A records (the first tenth also
//! AAAA), `c<i>` CNAMEs to `n<i>` for the first hundredth, and `ns1` A. The same data goes to
//! edgedns (written straight into its store), Knot and NSD (a zone file).

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    str::FromStr as _,
};

use anyhow::{Context as _, Result};
use dns_user::{
    store::Store,
    zone::{ChangeSet, RrSet, ZoneSet, ZoneSpec},
};
use hickory_proto::rr::{
    rdata::{A, AAAA, CNAME},
    Name, RData, RecordType,
};

pub const APEX: &str = "bench.example.";
pub const TTL: u32 = 300;
pub const NS_A: Ipv4Addr = Ipv4Addr::new(100, 127, 255, 1);

/// The A record of `n<i>`: 100.64.0.0/10 holds 4M of them (data only, never a destination).
pub fn a_of(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(100, 64 + ((i >> 16) & 63) as u8, (i >> 8) as u8, i as u8)
}

pub fn aaaa_of(i: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (i >> 16) as u16, i as u16)
}

/// What is in a zone of `n` names.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub names: u32,
    /// AAAA at the first tenth, CNAMEs for the first hundredth.
    pub extras: bool,
}

impl Shape {
    pub fn aaaa_count(&self) -> u32 {
        if self.extras {
            self.names / 10
        } else {
            0
        }
    }
    pub fn cname_count(&self) -> u32 {
        if self.extras {
            (self.names / 100).max(1)
        } else {
            0
        }
    }
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("generated name")
}

/// The zone as a [`ZoneSet`].
pub fn zone_set(shape: Shape) -> Result<ZoneSet> {
    let apex = name(APEX);
    let ns1 = name(&format!("ns1.{APEX}"));
    let mut spec = ZoneSpec::new(
        apex.clone(),
        ns1.clone(),
        name(&format!("hostmaster.{APEX}")),
        vec![ns1.clone()],
    );
    spec.serial = 1;
    let mut rrsets = Vec::with_capacity(shape.names as usize + 16);
    let set = |records: Vec<RData>| RrSet { ttl: TTL, records };
    rrsets.push((ns1, RecordType::A, set(vec![RData::A(A(NS_A))])));
    for i in 0..shape.names {
        let n = name(&format!("n{i}.{APEX}"));
        if i < shape.aaaa_count() {
            rrsets.push((
                n.clone(),
                RecordType::AAAA,
                set(vec![RData::AAAA(AAAA(aaaa_of(i)))]),
            ));
        }
        rrsets.push((n, RecordType::A, set(vec![RData::A(A(a_of(i)))])));
    }
    for i in 0..shape.cname_count() {
        rrsets.push((
            name(&format!("c{i}.{APEX}")),
            RecordType::CNAME,
            set(vec![RData::CNAME(CNAME(name(&format!("n{i}.{APEX}"))))]),
        ));
    }
    let mut zones = ZoneSet::new();
    zones
        .load_zone(spec, rrsets)
        .map_err(|e| anyhow::anyhow!("building the benchmark zone: {e}"))?;
    Ok(zones)
}

/// Writes `zones` into a fresh edgedns store in `dir` (what the daemon loads at start).
pub fn write_store(dir: &Path, zones: &ZoneSet) -> Result<()> {
    let store =
        Store::open(dir).with_context(|| format!("opening a store in {}", dir.display()))?;
    let mut changes = ChangeSet::default();
    for z in zones.zones() {
        changes.zones_soa.insert(z.apex().clone());
        changes.zones_replaced.insert(z.apex().clone());
    }
    store
        .persist(zones, &changes)
        .context("writing the store")?;
    Ok(())
}

/// The zone in master-file form, for Knot and NSD.
pub fn zone_file(shape: Shape) -> String {
    let mut s = String::with_capacity(shape.names as usize * 40);
    let _ = writeln!(s, "$ORIGIN {APEX}\n$TTL {TTL}");
    let _ = writeln!(
        s,
        "@ 3600 IN SOA ns1.{APEX} hostmaster.{APEX} 1 3600 900 1209600 30\n@ 3600 IN NS ns1.{APEX}\nns1 IN A {NS_A}"
    );
    for i in 0..shape.names {
        let _ = writeln!(s, "n{i} IN A {}", a_of(i));
        if i < shape.aaaa_count() {
            let _ = writeln!(s, "n{i} IN AAAA {}", aaaa_of(i));
        }
    }
    for i in 0..shape.cname_count() {
        let _ = writeln!(s, "c{i} IN CNAME n{i}");
    }
    s
}

/// kxdpgun's query file: `n<i>.bench.example. A` for every name, in a scrambled order.
pub fn query_file(shape: Shape) -> String {
    let mut s = String::with_capacity(shape.names as usize * 30);
    let n = shape.names.max(1);
    // A multiplicative permutation of 0..n (a step coprime with n).
    let mut step = (n as u64 * 6 / 10) | 1;
    while gcd(step, n as u64) != 1 {
        step += 2;
    }
    for k in 0..n as u64 {
        let i = (k * step) % n as u64;
        let _ = writeln!(s, "n{i}.{APEX} A");
    }
    s
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_builds_and_resolves() {
        let shape = Shape {
            names: 1000,
            extras: true,
        };
        let z = zone_set(shape).unwrap();
        let zone = z.zone(&name(APEX)).unwrap();
        assert_eq!(zone.name_count(), 1000 + 10 + 2);
        let res = z.resolve(&name(&format!("n7.{APEX}")), RecordType::A);
        assert_eq!(res.answers.len(), 1);
        let qf = query_file(shape);
        let mut lines: Vec<&str> = qf.lines().collect();
        lines.sort_unstable();
        lines.dedup();
        assert_eq!(lines.len(), 1000);
    }
}
