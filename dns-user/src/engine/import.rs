//! Zone-file import: a parsed master file becomes one [`Edit::ReplaceZone`] through the write
//! path, and the zone model's refusals are placed at the file's lines.

use std::sync::Arc;

use super::{Engine, EngineError, MapWriter, Persist};
use crate::{
    progress::Reporter,
    zone::{serial_newer, Edit},
    zonefile::{ZoneFile, ZoneFileError},
};

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

impl<S: Persist, M: MapWriter> Engine<S, M> {
    /// Replaces the zone with the file's contents in one change (creating it if missing). The
    /// serial only moves forward ([`crate::zone::import_serial`]); a file whose data the zone
    /// already holds changes nothing. The map fill of a large zone logs its progress every few
    /// seconds ([`Reporter::long_only`]: nothing for a small one).
    pub async fn import_zone(self: &Arc<Self>, zf: ZoneFile) -> Result<Imported, ImportError> {
        self.import_zone_with(zf, &Reporter::default().long_only())
            .await
    }

    /// [`Engine::import_zone`], reporting the map fill to `progress`.
    pub async fn import_zone_with(
        self: &Arc<Self>,
        zf: ZoneFile,
        progress: &Reporter,
    ) -> Result<Imported, ImportError> {
        // Comparing a large zone takes a while: keep it off the async workers.
        let zones = self.zones();
        let (zf, current) = tokio::task::spawn_blocking(move || {
            let current = zones.zone(zf.apex()).map(|z| (z.serial(), zf.same_data(z)));
            (zf, current)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        if let Some((serial, true)) = current {
            if !serial_newer(zf.spec.serial, serial) {
                return Ok(Imported {
                    serial,
                    changed: false,
                });
            }
        }
        // The zone model applies the serial rule against the serial it finds under the writer
        // lock, so a write that lands between this check and the import can't make the serial
        // go back.
        let (locator, spec, rrsets) = zf.into_parts();
        match self
            .apply_reporting(Edit::ReplaceZone { spec, rrsets }, progress)
            .await
        {
            Ok(applied) => Ok(Imported {
                serial: applied.serial,
                changed: true,
            }),
            Err(EngineError::Invalid(e)) => Err(ImportError::File(locator.locate(&e))),
            Err(e) => Err(ImportError::Engine(e)),
        }
    }
}
