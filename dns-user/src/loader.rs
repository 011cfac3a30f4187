//! Loads the XDP program and attaches it to an interface.

use std::net::{IpAddr, SocketAddr};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use dns_common::{
    LargeValue, NameKey, SmallValue, XdpConfig, ZoneValue, MAP_CONFIG, MAP_NAMES_LARGE,
    MAP_NAMES_SMALL, MAP_STATS, MAP_ZONES, PROGRAM_NAME,
};
use tracing::{info, warn};

use crate::maps::FastPath;

/// The XDP object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns-ebpf"));

/// The program for the peer end of a veth pair (see `edgedns xdp-pass`).
pub const PASS_PROGRAM_NAME: &str = "edgedns_pass";

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
        source: aya::maps::MapError,
    },
    #[error("loading {name} into the kernel (the verifier's log follows in the cause)")]
    Verify {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
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

/// A loaded, attached program and its maps. Dropping it detaches the program.
pub struct Loaded {
    /// Kept alive: dropping it detaches and unloads the program.
    pub ebpf: Ebpf,
    pub mode: XdpMode,
    pub verified_insns: Option<u32>,
}

/// Settings the program reads from its CONFIG map.
pub fn xdp_config(listen: SocketAddr, udp_payload: u16, enabled: bool) -> XdpConfig {
    let (ipv4, ipv6) = match listen.ip() {
        IpAddr::V4(a) if !a.is_unspecified() => (a.octets(), [0; 16]),
        IpAddr::V6(a) if !a.is_unspecified() => ([0; 4], a.octets()),
        _ => ([0; 4], [0; 16]),
    };
    XdpConfig {
        port_be: listen.port().to_be(),
        udp_payload,
        enabled: enabled as u32,
        ipv4,
        ipv6,
    }
}

/// Loads the object, verifies the program and attaches it to `iface`; returns the program and a
/// [`FastPath`] that owns its maps.
pub fn load_and_attach(
    iface: &str,
    mode: AttachMode,
    config: XdpConfig,
) -> Result<(Loaded, FastPath), LoadError> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => spawn_logger(logger),
        Err(e) => warn!("eBPF logger not started: {e}"),
    }
    // Fill the config before attaching so the first packet sees it.
    let mut fast = take_maps(&mut ebpf)?;
    fast.set_config(config)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoadError::NoProgram(PROGRAM_NAME))?
        .try_into()
        .map_err(|source| LoadError::Verify {
            name: PROGRAM_NAME,
            source,
        })?;
    prog.load().map_err(|source| LoadError::Verify {
        name: PROGRAM_NAME,
        source,
    })?;
    let verified_insns = prog
        .info()
        .ok()
        .and_then(|i| i.verified_instruction_count())
        .map(|n| n as u32);
    let modes: &[XdpMode] = match mode {
        AttachMode::Auto => &[XdpMode::Driver, XdpMode::Skb],
        AttachMode::Driver => &[XdpMode::Driver],
        AttachMode::Generic => &[XdpMode::Skb],
        AttachMode::Off => &[],
    };
    let mut attached = None;
    for (i, m) in modes.iter().enumerate() {
        match prog.attach(iface, *m) {
            Ok(_) => {
                attached = Some(*m);
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
    let mode = attached.unwrap_or(XdpMode::Default);
    info!(iface, ?mode, verified_insns, "XDP program attached");
    Ok((
        Loaded {
            ebpf,
            mode,
            verified_insns,
        },
        fast,
    ))
}

/// Loads and verifies the program without attaching it: for `BPF_PROG_TEST_RUN` (tests and the
/// per-packet benchmark). The program is `ebpf.program_mut(PROGRAM_NAME)`.
pub fn load_detached(config: XdpConfig) -> Result<(Ebpf, FastPath), LoadError> {
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(LoadError::Object)?;
    let mut fast = take_maps(&mut ebpf)?;
    fast.set_config(config)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(LoadError::NoProgram(PROGRAM_NAME))?
        .try_into()
        .map_err(|source| LoadError::Verify {
            name: PROGRAM_NAME,
            source,
        })?;
    prog.load().map_err(|source| LoadError::Verify {
        name: PROGRAM_NAME,
        source,
    })?;
    Ok((ebpf, fast))
}

fn take_maps(ebpf: &mut Ebpf) -> Result<FastPath, LoadError> {
    fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = ebpf.take_map(name).ok_or(LoadError::NoMap(name))?;
        T::try_from(map).map_err(|source| LoadError::Map { name, source })
    }
    let config: Array<MapData, XdpConfig> = take(ebpf, MAP_CONFIG)?;
    let stats: PerCpuArray<MapData, u64> = take(ebpf, MAP_STATS)?;
    let small: HashMap<MapData, NameKey, SmallValue> = take(ebpf, MAP_NAMES_SMALL)?;
    let large: HashMap<MapData, NameKey, LargeValue> = take(ebpf, MAP_NAMES_LARGE)?;
    let zones: HashMap<MapData, NameKey, ZoneValue> = take(ebpf, MAP_ZONES)?;
    Ok(FastPath::new(config, stats, small, large, zones))
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
    let prog: &mut Xdp = ebpf
        .program_mut(PASS_PROGRAM_NAME)
        .ok_or(LoadError::NoProgram(PASS_PROGRAM_NAME))?
        .try_into()
        .map_err(|source| LoadError::Verify {
            name: PASS_PROGRAM_NAME,
            source,
        })?;
    prog.load().map_err(|source| LoadError::Verify {
        name: PASS_PROGRAM_NAME,
        source,
    })?;
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
