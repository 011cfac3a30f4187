//! Zone-file import into a running engine: the engine's part, apart so it can move there whole.

use std::sync::Arc;

use crate::{
    engine::{Engine, EngineError, Op},
    zonefile::{ZoneFile, ZoneFileError},
};

/// The serial a zone gets from an import: the file's, unless the zone exists and the file's is
/// not newer (RFC 1982 serial arithmetic), in which case the current one plus one, so that the
/// serial always moves forward when the data changes (secondaries and caches rely on it).
pub fn import_serial(current: Option<u32>, file: u32) -> u32 {
    match current {
        Some(cur) if !serial_newer(file, cur) => cur.wrapping_add(1),
        _ => file,
    }
}

/// RFC 1982 §3.2: `a` is greater than `b`.
fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Imported {
    /// The zone's serial afterwards.
    pub serial: u32,
    /// False if the zone already held exactly the file's data (and a serial no older than the
    /// file's): nothing was written.
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file's data was refused, at this line.
    #[error(transparent)]
    File(ZoneFileError),
    #[error(transparent)]
    Engine(EngineError),
}

/// Replaces the zone with the file's contents in one change (creating it if missing). The serial
/// follows [`import_serial`]; a file whose data the zone already holds changes nothing.
pub async fn import(engine: &Arc<Engine>, zf: ZoneFile) -> Result<Imported, ImportError> {
    let current = {
        let zones = engine.zones.read().unwrap_or_else(|p| p.into_inner());
        zones.zone(zf.apex()).map(|z| (z.serial(), zf.same_data(z)))
    };
    if let Some((serial, true)) = current {
        if !serial_newer(zf.spec.serial, serial) {
            return Ok(Imported {
                serial,
                changed: false,
            });
        }
    }
    // The engine applies `import_serial` against the serial it finds under its writer lock, so
    // a write that lands between this check and the import can't make the serial go back.
    let locator = zf.clone_shallow();
    let op = Op::ReplaceZone {
        spec: zf.spec,
        rrsets: zf.rrsets,
    };
    match engine.apply(op).await {
        Ok(applied) => Ok(Imported {
            serial: applied.serial,
            changed: true,
        }),
        Err(EngineError::Invalid(e)) => Err(ImportError::File(locator.locate(&e))),
        Err(e) => Err(ImportError::Engine(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_move_forward() {
        assert_eq!(import_serial(None, 5), 5);
        assert_eq!(import_serial(Some(5), 9), 9);
        assert_eq!(import_serial(Some(5), 5), 6);
        assert_eq!(import_serial(Some(5), 3), 6);
        assert_eq!(import_serial(Some(u32::MAX), 2), 2);
    }
}
