//! Writing a zone as a master file that [`super::parse()`] reads back as the same data.

use super::presentation::{format_name, format_rdata};
use crate::zone::Zone;

/// Writes `zone` as a master file: a comment line, `$ORIGIN`, the SOA, then every record by
/// owner in canonical order, then by type. Owners and names are absolute, so the
/// file means the same wherever it is read.
pub fn export(zone: &Zone) -> String {
    let apex = format_name(zone.apex());
    let soa = zone.soa();
    let mut out = format!(
        "; zone {apex} serial {serial}, exported by edgedns\n$ORIGIN {apex}\n",
        serial = zone.serial()
    );
    out.push_str(&format!(
        "{apex} {} IN SOA {} {} {} {} {} {} {}\n",
        soa.ttl,
        format_name(&soa.mname),
        format_name(&soa.rname),
        zone.serial(),
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum
    ));
    for (owner, rtype, ttl, records) in zone.records() {
        let owner = format_name(&owner);
        for r in records {
            out.push_str(&format!("{owner} {ttl} IN {rtype} {}\n", format_rdata(&r)));
        }
    }
    out
}
