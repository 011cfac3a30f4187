//! Loads the XDP program and attaches it to an interface.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode,
    },
    Ebpf, EbpfLoader, Pod,
};
use dns_common::{
    map::{self, MapKind, MapSpec},
    ServedKey, XdpConfig, FAMILY_V4, FAMILY_V6, PASS_PROGRAM_NAME, PROGRAM_NAME,
};
use tracing::{info, warn};

use crate::maps::{FastPath, ZoneMaps};

/// The XDP object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object")]
    Object(#[source] aya::EbpfError),
    #[error("program {0} missing from the eBPF object")]
    NoProgram(&'static str),
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error(
        "map {name} in the kernel is not as dns-common declares it: {what} {got}, want {want}"
    )]
    Mismatch {
        name: &'static str,
        what: &'static str,
        got: u32,
        want: u32,
    },
    #[error("loading {name} into the kernel (the verifier's log follows in the cause)")]
    Verify {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("bpffs at {path}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting the program's configuration")]
    Config(#[from] crate::maps::MapWriteError),
    #[error("attaching to {iface} in {mode:?} mode (is the interface up, and does its driver support native XDP? try --xdp-mode generic)")]
    Attach {
        iface: String,
        mode: XdpMode,
        #[source]
        source: aya::programs::ProgramError,
    },
}

/// How to attach: the CLI's `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic if the driver refuses.
    Auto,
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP, after the driver: works on any interface, slower.
    Generic,
    /// Don't load XDP: the fallback server answers everything.
    Off,
}

/// A loaded, attached program and its maps.
///
/// With a pin directory, the maps and the XDP link are pinned in bpffs: the program keeps
/// answering from the maps while no daemon runs (a restart or a crash drops no query the fast
/// path can answer), and the next start takes over the pinned maps and swaps its program into the
/// pinned link atomically. [`Loaded::release`] decides what happens at exit.
pub struct Loaded {
    /// Kept alive: dropping it detaches and unloads the program unless the link is pinned.
    pub ebpf: Ebpf,
    /// The attach mode on each interface, in the order given.
    pub modes: Vec<XdpMode>,
    pub verified_insns: Option<u32>,
    /// Where the maps and the link are pinned, if they are.
    pub pin_dir: Option<PathBuf>,
}

impl Loaded {
    /// At exit: `keep` leaves the program attached and answering from the pinned maps for the
    /// next start; otherwise the pins are removed and dropping detaches the program.
    pub fn release(self, keep: bool) {
        if let (false, Some(dir)) = (keep, &self.pin_dir) {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                warn!(dir = %dir.display(), "removing the pins: {e}");
            }
        }
        drop(self);
    }
}

/// File name of the pinned XDP link of interface `iface` in the pin directory.
fn link_pin(iface: &str) -> String {
    format!("link-{iface}")
}
/// bpffs magic (linux/magic.h BPF_FS_MAGIC).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of a daemon instance: one per data directory, set of interfaces and map
/// layout, so that an upgrade that changes the layout starts with fresh maps. It holds the maps,
/// which every interface's attachment of the one program shares, and one link per interface.
pub fn pin_dir(bpffs: &Path, data_dir: &Path, ifaces: &[String]) -> PathBuf {
    let canonical = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_owned());
    // FNV-1a: stable across Rust versions, unlike DefaultHasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.as_os_str().as_encoded_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    // Sorted and deduplicated: the same interfaces in another order are the same instance.
    let ifaces: BTreeSet<&str> = ifaces.iter().map(String::as_str).collect();
    let ifaces = ifaces.into_iter().collect::<Vec<_>>().join("+");
    bpffs
        .join("edgedns")
        .join(format!("{h:016x}-{ifaces}-v{}", dns_common::LAYOUT_VERSION))
}

/// Mounts bpffs at `path` if it isn't mounted there.
pub fn ensure_bpffs(path: &Path) -> Result<(), LoadError> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        LoadError::Bpffs {
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }
    })?;
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| LoadError::Bpffs {
        path: path.to_owned(),
        source,
    })?;
    let fstype = c"bpf";
    // SAFETY: all pointers are valid NUL-terminated strings.
    let r = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(LoadError::Bpffs {
            path: path.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

/// Settings the program reads from its CONFIG map.
pub fn xdp_config(udp_payload: u16, enabled: bool) -> XdpConfig {
    XdpConfig {
        udp_payload,
        _pad: 0,
        enabled: enabled as u32,
        options: 0,
        served_v4: ServedKey::zeroed(),
        served_v6: ServedKey::zeroed(),
        _pad2: 0,
        misses_until_ns: 0,
    }
}

/// `config` with what the program reads of `served` from CONFIG: the families with a wildcard
/// entry ([`wildcard_options`]) and one entry per family, checked before any lookup in SERVED
/// ([`one_served`]).
pub fn with_served(config: XdpConfig, served: &BTreeSet<ServedKey>) -> XdpConfig {
    XdpConfig {
        options: config.options | wildcard_options(served),
        served_v4: one_served(served, FAMILY_V4),
        served_v6: one_served(served, FAMILY_V6),
        ..config
    }
}

/// The entry of `served` the program checks first for `family`: the wildcard (of the first
/// port that has one), which takes every address, else the first address; a zeroed key (family
/// 0, which covers nothing) if the family has none. Any other entry is still in SERVED.
pub fn one_served(served: &BTreeSet<ServedKey>, family: u16) -> ServedKey {
    let mut of = served.iter().filter(|k| k.family == family);
    of.clone()
        .find(|k| k.addr == [0; 16])
        .or_else(|| of.next())
        .copied()
        .unwrap_or(ServedKey::zeroed())
}

/// The [`XdpConfig::options`] bits that tell the program which families have a wildcard entry
/// in `served` (it looks those up first).
pub fn wildcard_options(served: &BTreeSet<ServedKey>) -> u32 {
    served
        .iter()
        .filter(|k| k.addr == [0; 16])
        .map(|k| match k.family {
            FAMILY_V4 => dns_common::OPT_WILDCARD_V4,
            _ => dns_common::OPT_WILDCARD_V6,
        })
        .fold(0, |bits, b| bits | b)
}

/// The entries of the SERVED map for the addresses the daemon listens on: the program answers
/// exactly the (address, port) pairs a socket of the daemon would receive.
///
/// A socket bound to [::] takes IPv4 too (IPV6_V6ONLY is off by default on Linux, and the daemon
/// leaves it so); one bound to 0.0.0.0 takes only IPv4; one bound to an IPv4-mapped IPv6
/// address takes that IPv4 address.
pub fn served_keys(listen: &[SocketAddr]) -> BTreeSet<ServedKey> {
    let mut keys = BTreeSet::new();
    for addr in listen {
        let port_be = addr.port().to_be();
        let v4 = |a: [u8; 4]| {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&a);
            ServedKey {
                family: FAMILY_V4,
                port_be,
                addr,
            }
        };
        let v6 = |addr: [u8; 16]| ServedKey {
            family: FAMILY_V6,
            port_be,
            addr,
        };
        match addr.ip() {
            IpAddr::V4(a) => {
                keys.insert(v4(a.octets()));
            }
            IpAddr::V6(a) if a.is_unspecified() => {
                keys.insert(v4([0; 4]));
                keys.insert(v6([0; 16]));
            }
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => {
                    keys.insert(v4(m.octets()));
                }
                None => {
                    keys.insert(v6(a.octets()));
                }
            },
        }
    }
    keys
}

/// Whether `iface` is the loopback interface (index 1 in every network namespace), where the
/// program must take loopback addresses and partial UDP checksums as they are
/// ([`dns_common::OPT_LOOPBACK`]).
pub fn is_loopback(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::if_nametoindex(name.as_ptr()) == 1 }
}

/// The program loaded into the kernel and verified, with its maps, not yet configured nor
/// attached: the start takes two steps ([`load_verified`], then [`Verified::attach`]), so that
/// the verifier's work (a few tenths of a second) runs beside the store's read. Dropping it
/// instead of attaching it removes the pins its load made, as a failed attach does.
pub struct Verified {
    ebpf: Ebpf,
    /// SERVED's handle: the program refers to the map by this fd until it is attached.
    served_map: HashMap<MapData, ServedKey, u32>,
    fast: FastPath,
    verified_insns: Option<u32>,
    pin_dir: Option<PathBuf>,
    pins: Option<NewPins>,
}

/// Loads the object and verifies the program, to be attached to every interface of `ifaces`
/// by [`Verified::attach`]. With `pin_dir`, maps and links found there are taken over (the maps
/// keep their contents for the caller to reconcile) and new ones are pinned there. The config
/// and SERVED are only written by `attach`, so a program an earlier start left attached
/// (`--keep-xdp`) answers as before until then.
pub fn load_verified(ifaces: &[String], pin_dir: Option<&Path>) -> Result<Verified, LoadError> {
    let mut loader = EbpfLoader::new();
    // Dropped on every error return, here or in `attach`, and with an unattached `Verified`:
    // removes what this start pinned.
    let pins = pin_dir.map(|d| NewPins::make(d, ifaces)).transpose()?;
    if let Some(dir) = pin_dir {
        for name in map::PINNED {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => spawn_logger(logger),
        Err(e) => warn!("eBPF logger not started: {e}"),
    }
    let served_map = take_hash(&mut ebpf, map::SERVED)?;
    let fast = take_maps(&mut ebpf)?;
    let prog = load_program(&mut ebpf, PROGRAM_NAME)?;
    let verified_insns = prog
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count());
    Ok(Verified {
        ebpf,
        served_map,
        fast,
        verified_insns,
        pin_dir: pin_dir.map(Path::to_owned),
        pins,
    })
}

impl Verified {
    /// Fills the config, then attaches the program to every interface of `ifaces` (those given
    /// to [`load_verified`]), answering the (address, port) pairs of `served` (see
    /// [`served_keys`]). Returns the program and a [`FastPath`] that owns its maps. If an
    /// interface refuses the program, what this start attached and pinned on the others is
    /// undone too.
    pub fn attach(
        self,
        ifaces: &[String],
        mode: AttachMode,
        config: XdpConfig,
        served: &BTreeSet<ServedKey>,
    ) -> Result<(Loaded, FastPath), LoadError> {
        let Self {
            mut ebpf,
            mut served_map,
            mut fast,
            verified_insns,
            pin_dir,
            pins,
        } = self;
        // Fill the config before attaching so the first packet sees it.
        set_served(&mut served_map, served)?;
        fast.set_config(with_served(config, served))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(LoadError::NoProgram(PROGRAM_NAME))?
            .try_into()
            .map_err(|source| LoadError::Verify {
                name: PROGRAM_NAME,
                source,
            })?;
        let mut modes = Vec::with_capacity(ifaces.len());
        for iface in ifaces {
            let link_pin = pin_dir.as_deref().map(|d| d.join(link_pin(iface)));
            let m = attach_one(prog, iface, mode, link_pin.as_deref())?;
            info!(iface, mode = ?m, verified_insns, "XDP program attached");
            modes.push(m);
        }
        pins.into_iter().for_each(NewPins::keep);
        drop(served_map);
        Ok((
            Loaded {
                ebpf,
                modes,
                verified_insns,
                pin_dir,
            },
            fast,
        ))
    }
}

/// Attaches the loaded `prog` to `iface`: into the link pinned at `link_pin` if there is one (the
/// kernel swaps the program atomically, no packet goes unanswered in between), else anew, pinning
/// the new link there. Returns the mode (`Default` for a swapped link: the old attach's).
fn attach_one(
    prog: &mut Xdp,
    iface: &str,
    mode: AttachMode,
    link_pin: Option<&Path>,
) -> Result<XdpMode, LoadError> {
    if let Some(path) = link_pin.filter(|p| p.exists()) {
        match PinnedLink::from_pin(path)
            .map(FdLink::from)
            .map_err(|e| e.to_string())
            .and_then(|l| XdpLink::try_from(l).map_err(|e| e.to_string()))
        {
            Ok(link) => match prog.attach_to_link(link) {
                Ok(id) => {
                    // Keep the link's fd with the program; the pin keeps the link itself.
                    let _ = id;
                    info!(iface, link = %path.display(), "XDP program swapped into the pinned link");
                    return Ok(XdpMode::Default);
                }
                Err(e) => {
                    warn!(link = %path.display(), "can't update the pinned link ({e}); attaching anew")
                }
            },
            Err(e) => {
                warn!(link = %path.display(), "can't open the pinned link ({e}); attaching anew")
            }
        }
        let _ = std::fs::remove_file(path);
    }

    let modes: &[XdpMode] = match mode {
        AttachMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
        AttachMode::Driver => &[XdpMode::Driver],
        AttachMode::Generic => &[XdpMode::Skb],
        AttachMode::Off => &[],
    };
    let mut attached = None;
    for (i, m) in modes.iter().enumerate() {
        match prog.attach(iface, *m) {
            Ok(id) => {
                attached = Some((*m, id));
                break;
            }
            Err(source) if i + 1 == modes.len() => {
                return Err(LoadError::Attach {
                    iface: iface.to_owned(),
                    mode: *m,
                    source,
                })
            }
            Err(e) => {
                warn!("attaching to {iface} in {m:?} mode failed ({e}); trying the next mode")
            }
        }
    }
    let (mode, id) = attached.ok_or_else(|| LoadError::Attach {
        iface: iface.to_owned(),
        mode: XdpMode::Default,
        source: aya::programs::ProgramError::AlreadyAttached,
    })?;
    if let Some(path) = link_pin {
        // Pin the link so that it outlives this process. A netlink (pre-bpf_link) attachment
        // can't be pinned: then the program goes when the daemon does.
        let pinned = prog
            .take_link(id)
            .map_err(|e| e.to_string())
            .and_then(|l| FdLink::try_from(l).map_err(|e| e.to_string()))
            .and_then(|l| l.pin(path).map_err(|e| e.to_string()));
        match pinned {
            Ok(_) => info!(link = %path.display(), "XDP link pinned"),
            Err(e) => {
                warn!("XDP link not pinned ({e}): a restart will briefly drop fast-path answers")
            }
        }
    }
    Ok(mode)
}

/// Makes the SERVED map hold exactly `served`: entries a pinned map kept from an earlier start
/// with other addresses are removed.
fn set_served(
    m: &mut HashMap<MapData, ServedKey, u32>,
    served: &BTreeSet<ServedKey>,
) -> Result<(), LoadError> {
    let err = |source| LoadError::Map {
        name: map::SERVED.name,
        source,
    };
    let stale: Vec<ServedKey> = m.keys().flatten().filter(|k| !served.contains(k)).collect();
    for key in served {
        m.insert(key, 1, 0).map_err(err)?;
    }
    for key in &stale {
        m.remove(key).map_err(err)?;
    }
    Ok(())
}

/// The pins a start makes, removed again if it fails: a start refused (on an interface busy with
/// another XDP program, by the verifier, ...) leaves bpffs as it found it. Pins it found there
/// belong to the instance that made them (`--keep-xdp`, or a crash) and stay.
struct NewPins {
    dir: PathBuf,
    /// The interfaces whose links are pinned here.
    ifaces: Vec<String>,
    /// The pins that existed before this start.
    found: Vec<PathBuf>,
    /// The directories this start created, deepest first.
    made_dirs: Vec<PathBuf>,
    /// Set when the start succeeded.
    kept: bool,
}

impl NewPins {
    fn make(dir: &Path, ifaces: &[String]) -> Result<Self, LoadError> {
        let made_dirs = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_owned)
            .collect();
        std::fs::create_dir_all(dir).map_err(|source| LoadError::Bpffs {
            path: dir.to_owned(),
            source,
        })?;
        let mut pins = Self {
            dir: dir.to_owned(),
            ifaces: ifaces.to_vec(),
            found: Vec::new(),
            made_dirs,
            kept: false,
        };
        pins.found = pins.names().filter(|p| p.exists()).collect();
        Ok(pins)
    }

    fn names(&self) -> impl Iterator<Item = PathBuf> + '_ {
        map::PINNED
            .into_iter()
            .map(str::to_owned)
            .chain(self.ifaces.iter().map(|i| link_pin(i)))
            .map(|name| self.dir.join(name))
    }

    /// The start succeeded: the pins stay.
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for NewPins {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut removed = 0;
        for pin in self.names().filter(|p| !self.found.contains(p)) {
            match std::fs::remove_file(&pin) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    warn!(pin = %pin.display(), "start failed, and removing the pin failed: {e}")
                }
            }
        }
        for dir in &self.made_dirs {
            let _ = std::fs::remove_dir(dir);
        }
        if removed > 0 {
            info!(dir = %self.dir.display(), removed, "start failed: the pins it made are removed");
        }
    }
}

/// Loads and verifies the program without attaching it: for `BPF_PROG_TEST_RUN` (tests and the
/// per-packet benchmark). The program is `ebpf.program_mut(PROGRAM_NAME)`.
pub fn load_detached(
    config: XdpConfig,
    served: &BTreeSet<ServedKey>,
) -> Result<(Ebpf, FastPath), LoadError> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let mut served_map = take_hash(&mut ebpf, map::SERVED)?;
    set_served(&mut served_map, served)?;
    let mut fast = take_maps(&mut ebpf)?;
    fast.set_config(with_served(config, served))?;
    load_program(&mut ebpf, PROGRAM_NAME)?;
    Ok((ebpf, fast))
}

/// Verifies and loads the XDP program `name` of the object into the kernel.
fn load_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, LoadError> {
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or(LoadError::NoProgram(name))?
        .try_into()
        .map_err(|source| LoadError::Verify { name, source })?;
    prog.load()
        .map_err(|source| LoadError::Verify { name, source })?;
    Ok(prog)
}

/// Takes the program's maps out of the object, each as its `dns_common::map` spec declares it:
/// the spec gives the map's name and its key and value types, and the map the kernel holds (a
/// new one, or one taken over from a pin) must match the spec's kind, sizes, capacity and flags.
fn take_maps(ebpf: &mut Ebpf) -> Result<FastPath, LoadError> {
    let config = Array::try_from(take(ebpf, map::CONFIG)?).map_err(map_err(map::CONFIG.name))?;
    let stats = PerCpuArray::try_from(take(ebpf, map::STATS)?).map_err(map_err(map::STATS.name))?;
    let zone_lens =
        Array::try_from(take(ebpf, map::ZONE_LENS)?).map_err(map_err(map::ZONE_LENS.name))?;
    let zones = ZoneMaps {
        zones: take_hash(ebpf, map::ZONES)?,
        zones_short: take_hash(ebpf, map::ZONES_SHORT)?,
        zone_lens,
    };
    let limits = Array::try_from(take(ebpf, map::LIMITS)?).map_err(map_err(map::LIMITS.name))?;
    let exempt = aya::maps::LpmTrie::try_from(take(ebpf, map::RRL_EXEMPT)?)
        .map_err(map_err(map::RRL_EXEMPT.name))?;
    Ok(FastPath::new(
        config,
        stats,
        take_hash(ebpf, map::NAMES_SHORT)?,
        take_hash(ebpf, map::NAMES_SMALL)?,
        take_hash(ebpf, map::NAMES_LARGE)?,
        zones,
    )
    .map_err(LoadError::Config)?
    .with_limits(limits, exempt))
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> LoadError {
    move |source| LoadError::Map { name, source }
}

fn take_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    spec: MapSpec<K, V>,
) -> Result<HashMap<MapData, K, V>, LoadError> {
    HashMap::try_from(take(ebpf, spec)?).map_err(map_err(spec.name))
}

/// The map `spec` names, checked against the spec.
fn take<K, V>(ebpf: &mut Ebpf, spec: MapSpec<K, V>) -> Result<Map, LoadError> {
    let name = spec.name;
    let m = ebpf.take_map(name).ok_or(LoadError::NoMap(name))?;
    let data = match (&m, spec.kind) {
        (Map::HashMap(d), MapKind::Hash)
        | (Map::Array(d), MapKind::Array)
        | (Map::PerCpuArray(d), MapKind::PerCpuArray)
        | (Map::LruHashMap(d), MapKind::LruHash)
        | (Map::LpmTrie(d), MapKind::LpmTrie) => d,
        _ => {
            return Err(LoadError::Map {
                name,
                source: MapError::InvalidMapType {
                    map_type: spec.kind as u32,
                },
            })
        }
    };
    let info = data.info().map_err(map_err(name))?;
    for (what, got, want) in [
        ("key size", info.key_size(), spec.key_size()),
        ("value size", info.value_size(), spec.value_size()),
        ("max entries", info.max_entries(), spec.max_entries),
        ("flags", info.map_flags(), spec.flags),
    ] {
        if got != want {
            return Err(LoadError::Mismatch {
                name,
                what,
                got,
                want,
            });
        }
    }
    Ok(m)
}

fn spawn_logger(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        warn!("eBPF logger not started: no tokio runtime");
        return;
    };
    handle.spawn(async move {
        // SAFETY: the AsyncFd owns the logger, which owns the ring buffer's fd: the fd stays open
        // for as long as it is registered.
        let mut fd = match unsafe { tokio::io::unix::AsyncFd::register(logger) } {
            Ok(fd) => fd,
            Err(e) => {
                warn!("eBPF logger: {e}");
                return;
            }
        };
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    warn!("eBPF logger: {e}");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

/// Attaches the pass-everything program to `iface` (the peer end of a veth pair, so that frames
/// the fast path sends back with `XDP_TX` are delivered). Dropping the result detaches it.
pub fn attach_pass(iface: &str, mode: AttachMode) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let prog = load_program(&mut ebpf, PASS_PROGRAM_NAME)?;
    let m = match mode {
        AttachMode::Generic => XdpMode::Skb,
        _ => XdpMode::Driver,
    };
    prog.attach(iface, m).map_err(|source| LoadError::Attach {
        iface: iface.to_owned(),
        mode: m,
        source,
    })?;
    Ok(ebpf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(listen: &[&str]) -> Vec<(u16, u16, Vec<u8>)> {
        let addrs: Vec<SocketAddr> = listen.iter().map(|a| a.parse().expect("addr")).collect();
        served_keys(&addrs)
            .into_iter()
            .map(|k| {
                let len = if k.family == FAMILY_V4 { 4 } else { 16 };
                (k.family, u16::from_be(k.port_be), k.addr[..len].to_vec())
            })
            .collect()
    }

    #[test]
    fn served_keys_follow_what_each_socket_receives() {
        // An address: that address and port only.
        assert_eq!(
            keys(&["192.0.2.53:53"]),
            [(FAMILY_V4, 53, vec![192, 0, 2, 53])]
        );
        let v6: std::net::Ipv6Addr = "2001:db8::53".parse().expect("v6");
        assert_eq!(
            keys(&["[2001:db8::53]:5300"]),
            [(FAMILY_V6, 5300, v6.octets().to_vec())]
        );
        // 0.0.0.0: any IPv4 address; [::]: any address of both families (a dual-stack socket).
        assert_eq!(keys(&["0.0.0.0:53"]), [(FAMILY_V4, 53, vec![0; 4])]);
        assert_eq!(
            keys(&["[::]:53"]),
            [(FAMILY_V4, 53, vec![0; 4]), (FAMILY_V6, 53, vec![0; 16])]
        );
        // An IPv4-mapped address is that IPv4 address.
        assert_eq!(
            keys(&["[::ffff:192.0.2.53]:53"]),
            [(FAMILY_V4, 53, vec![192, 0, 2, 53])]
        );
        // Several: each pair once, ports kept apart.
        assert_eq!(
            keys(&[
                "192.0.2.53:53",
                "192.0.2.53:53",
                "192.0.2.54:5300",
                "[2001:db8::53]:53"
            ]),
            [
                (FAMILY_V4, 53, vec![192, 0, 2, 53]),
                (FAMILY_V4, 5300, vec![192, 0, 2, 54]),
                (FAMILY_V6, 53, v6.octets().to_vec()),
            ]
        );
        assert!(keys(&[]).is_empty());
    }

    #[test]
    fn wildcard_options_name_the_families_with_a_wildcard() {
        let opts = |l: &[&str]| {
            let addrs: Vec<SocketAddr> = l.iter().map(|a| a.parse().expect("addr")).collect();
            wildcard_options(&served_keys(&addrs))
        };
        use dns_common::{OPT_WILDCARD_V4 as V4, OPT_WILDCARD_V6 as V6};
        assert_eq!(opts(&["192.0.2.53:53", "[2001:db8::53]:53"]), 0);
        assert_eq!(opts(&["0.0.0.0:53"]), V4);
        assert_eq!(opts(&["[::]:53"]), V4 | V6);
        assert_eq!(opts(&["0.0.0.0:53", "[2001:db8::53]:53"]), V4);
    }

    #[test]
    fn one_served_is_the_wildcard_else_the_first_address() {
        let one = |l: &[&str], family| {
            let addrs: Vec<SocketAddr> = l.iter().map(|a| a.parse().expect("addr")).collect();
            let k = one_served(&served_keys(&addrs), family);
            (k.family, u16::from_be(k.port_be), k.addr)
        };
        let v4 = |a: [u8; 4]| {
            let mut addr = [0; 16];
            addr[..4].copy_from_slice(&a);
            addr
        };
        assert_eq!(one(&["[::]:53"], FAMILY_V4), (FAMILY_V4, 53, [0; 16]));
        assert_eq!(one(&["[::]:53"], FAMILY_V6), (FAMILY_V6, 53, [0; 16]));
        assert_eq!(
            one(&["192.0.2.53:53", "0.0.0.0:5300"], FAMILY_V4),
            (FAMILY_V4, 5300, [0; 16])
        );
        assert_eq!(
            one(&["192.0.2.54:53", "192.0.2.53:53"], FAMILY_V4),
            (FAMILY_V4, 53, v4([192, 0, 2, 53]))
        );
        assert_eq!(one(&["192.0.2.53:53"], FAMILY_V6), (0, 0, [0; 16]));
        // Every key the program checks first is one the SERVED map holds.
        let keys = served_keys(&["192.0.2.53:53".parse().expect("addr")]);
        assert!(keys.contains(&one_served(&keys, FAMILY_V4)));
    }

    #[test]
    fn served_key_wildcard_keeps_family_and_port() {
        let k = *served_keys(&["192.0.2.53:53".parse().expect("addr")])
            .first()
            .expect("one key");
        let w = k.wildcard();
        assert_eq!(
            (w.family, w.port_be, w.addr),
            (k.family, k.port_be, [0; 16])
        );
    }

    #[test]
    fn pin_dir_names_the_set_of_interfaces() {
        let (bpffs, data) = (Path::new("/sys/fs/bpf"), Path::new("/nonexistent/data"));
        let one = pin_dir(bpffs, data, &["veth0".to_owned()]);
        let two = pin_dir(bpffs, data, &["veth1".to_owned(), "veth0".to_owned()]);
        assert_eq!(
            two,
            pin_dir(bpffs, data, &["veth0".to_owned(), "veth1".to_owned()]),
            "the order given doesn't matter"
        );
        assert_ne!(one, two);
        let name = two
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(
            name.ends_with(&format!("-veth0+veth1-v{}", dns_common::LAYOUT_VERSION)),
            "{name}"
        );
    }
}
