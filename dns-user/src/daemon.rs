//! The daemon, assembled: store, XDP program and maps, engine, fallback DNS server and update API,
//! from a [`Config`] and sockets the caller has bound ([`Listeners`]), until a cancellation token
//! fires. `edgedns serve` is this plus binding and signals; tests run it in process, on port 0.
//!
//! [`Config`] derives `clap::Args`, as [`crate::cli::ApiArgs`] does: the flags, their defaults and
//! their help are declared once, here, and a test builds a config from the same flags a user
//! types.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use hickory_proto::rr::{rdata::A, Name, RData, RecordType};
use tokio::{net::TcpListener, sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    api::{self, ApiState, ApiToken, TokenError, TokenSlot},
    engine::{Engine, EngineError, ImportError},
    fallback::{self, Fallback, FallbackConfig, FallbackStats, KeySlot, StaleMisses},
    fleet::{Fleet, FleetArgs, FleetError},
    loader::{self, AttachMode, LoadError, Loaded, Verified},
    maps::FastPath,
    progress::Reporter,
    sd_notify::{self, Notifier},
    store::{Store, StoreError},
    tsig::{Key, KeyFileError, KeyRing},
    zone::{normalize, Change, Edit, ZoneSpec},
    zonefile::{self, ZoneFile, ZoneFileError},
};

/// The zone `serve` creates when it is missing, with one demo record, so that a bare
/// `edgedns serve` answers something.
pub const DEMO_ZONE: &str = "t.example.net.";

/// What `edgedns serve` takes, but for the addresses to listen on (see [`Listeners`]).
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Interface the XDP program attaches to; may be given more than once (or as a
    /// comma-separated list): the one program, with one set of maps, is attached to each.
    #[arg(long, default_value = "lo", value_delimiter = ',')]
    pub iface: Vec<String>,
    /// auto: native (driver) mode, else generic; off: no XDP, the fallback answers everything.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: AttachMode,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/edgedns")]
    pub data_dir: PathBuf,
    /// Create this zone at start if it does not exist (default SOA and NS). The default zone
    /// also gets a demo record, demo.t.example.net A 192.0.2.1; an edge of a fleet doesn't
    /// create it.
    #[arg(long, default_value = DEMO_ZONE)]
    pub zone: Option<String>,
    /// Where bpffs is (mounted there if it isn't): maps and the XDP link are pinned below it so
    /// that the fast path outlives a restart or a crash.
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
    /// Don't pin: the fast path goes when the daemon does.
    #[arg(long)]
    pub no_pin: bool,
    /// At exit, leave the XDP program answering from the pinned maps until the next start takes
    /// over (zero-downtime restarts). Without it, a clean exit detaches the program and removes
    /// the pins; after a crash they stay either way.
    #[arg(long)]
    pub keep_xdp: bool,
    /// Answer AXFR/IXFR over TCP to anyone who asks (off: REFUSED, but for --transfer-allow).
    /// The zones are then public in bulk; only turn it on where the DNS port is reachable by
    /// your secondaries alone.
    #[arg(long)]
    pub allow_axfr: bool,
    /// Transfers, NOTIFY and the IXFR journal.
    #[command(flatten)]
    pub secondaries: crate::notify::SecondaryArgs,
    /// UDP payload size advertised in EDNS responses.
    #[arg(long, default_value_t = dns_common::DEFAULT_UDP_PAYLOAD)]
    pub udp_payload: u16,
    /// File holding the token every /v1/* API request must send as `Authorization: Bearer
    /// <token>` (surrounding whitespace trimmed). Without it the API is open to whoever can
    /// reach --api-listen.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Master file (RFC 1035) to load at start, replacing the zone its SOA record names; may be
    /// given more than once. A file whose data the store already holds changes nothing.
    #[arg(long, value_name = "FILE")]
    pub zone_file: Vec<PathBuf>,
    /// Answer NSID (RFC 5001) with this text, so operators can tell which server answered
    /// (`dig +nsid`). Queries that ask for it go to the fallback, which adds it.
    #[arg(long, value_name = "TEXT")]
    pub nsid: Option<String>,
    /// Bytes of queries and answers each UDP worker keeps to answer the same question again
    /// without looking it up (0: none kept; the table's own overhead comes on top). A new
    /// version of the zones or settings empties it.
    #[arg(long, value_name = "BYTES", default_value_t = fallback::PACKET_CACHE_BYTES)]
    pub packet_cache_bytes: usize,
    /// Largest zone file `PUT /v1/zones/{zone}/zonefile` takes, in bytes (JSON bodies: 1 MiB).
    #[arg(long, default_value_t = api::ZONEFILE_MAX_BYTES)]
    pub zonefile_max_bytes: usize,
    /// TSIG keys (RFC 8945), as `tsig-keygen` or `keymgr -t` write them. A dynamic update
    /// (RFC 2136) signed with one of them may change any zone; signed queries get signed answers.
    #[arg(long, value_name = "FILE")]
    pub tsig_keys: Option<PathBuf>,
    /// Also take unsigned dynamic updates from this address or prefix (e.g. 10.0.0.0/8); may be
    /// given more than once. Off by default: unsigned updates are REFUSED.
    #[arg(long, value_name = "PREFIX")]
    pub update_allow: Vec<fallback::Prefix>,
    /// Response-rate limiting and DNS cookies.
    #[command(flatten)]
    pub limits: crate::limit::LimitArgs,
    /// A fleet of edges on etcd (off without --etcd).
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// The sockets the daemon serves on, bound by the caller (port 0 in tests). The XDP program
/// answers UDP to the addresses and ports of `dns_udp`, and to nothing else.
pub struct Listeners {
    /// Each served by a thread of its own: several per address ([`fallback::bind_udp`]'s
    /// `SO_REUSEPORT` sockets), for as many addresses as are served.
    pub dns_udp: Vec<std::net::UdpSocket>,
    /// One per address.
    pub dns_tcp: Vec<TcpListener>,
    pub api: TcpListener,
    /// The external-dns webhook provider's, if it is served.
    pub webhook: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    TsigKeys(#[from] KeyFileError),
    #[error("reading {}", path.display())]
    ReadZoneFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ZoneFile(#[from] ZoneFileError),
    #[error("the address of the {what} listener")]
    Listener {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the store in {}", dir.display())]
    OpenStore {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("loading the store")]
    LoadStore(#[source] StoreError),
    // Boxed: a `LoadError` is large, and every result of this module carries the variant.
    #[error(transparent)]
    Bpffs(Box<LoadError>),
    #[error("loading the XDP program on {iface}")]
    Xdp {
        iface: String,
        #[source]
        source: Box<LoadError>,
    },
    #[error(transparent)]
    Limit(#[from] crate::limit::LimitError),
    #[error("writing the rate limiter's maps")]
    LimitMaps(#[source] crate::maps::MapWriteError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error("--notify-key {name:?} is not a key of --tsig-keys")]
    NotifyKey { name: String },
    #[error("bad --zone {zone:?}")]
    BadZone {
        zone: String,
        #[source]
        source: hickory_proto::ProtoError,
    },
    #[error("joining the fleet")]
    Fleet(#[source] FleetError),
    #[error("creating zone {zone}")]
    CreateZone {
        zone: String,
        #[source]
        source: EngineError,
    },
}

/// What a daemon takes from outside besides its config and sockets: where to tell systemd how
/// start-up goes ([`notify`]), and the settings of each reload (SIGHUP), of which it applies
/// the reloadable ones ([`crate::config::RELOADABLE`]).
#[derive(Debug, Default)]
pub struct Control {
    pub notify: Notifier,
    pub reload: Option<mpsc::Receiver<Config>>,
}

/// Runs the daemon until `shutdown` is cancelled, then stops the servers and, unless
/// [`Config::keep_xdp`], detaches the XDP program and removes its pins.
///
/// A start that fails leaves no pins of its own behind: a failed load or attach removes what it
/// pinned, and a failure after the program is attached releases it as a clean exit would.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    run_with(config, listeners, shutdown, Control::default()).await
}

/// [`run`], notifying and reloading through `control`.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    control: Control,
) -> Result<(), DaemonError> {
    let notify = &control.notify;
    let progress = progress_reporter(notify);
    // Read the token, keys and zone files first: a mistake in any stops start-up before
    // anything is attached.
    let (token, keys) = read_secrets(&config)?;
    let notify_key = match &config.secondaries.notify_key {
        None => None,
        Some(name) => {
            let key = Name::from_ascii(name)
                .ok()
                .and_then(|n| keys.get(&normalize(&n)).cloned());
            Some(key.ok_or_else(|| DaemonError::NotifyKey { name: name.clone() })?)
        }
    };
    let zone_files = config
        .zone_file
        .iter()
        .map(|path| read_zone_file(path, &progress))
        .collect::<Result<Vec<_>, _>>()?;
    let local = |what, r: std::io::Result<SocketAddr>| {
        r.map_err(|source| DaemonError::Listener { what, source })
    };
    let mut dns_addrs = Vec::new();
    for socket in &listeners.dns_udp {
        let addr = local("DNS", socket.local_addr())?;
        if !dns_addrs.contains(&addr) {
            dns_addrs.push(addr);
        }
    }
    let api_addr = local("API", listeners.api.local_addr())?;

    let limits = Arc::new(crate::limit::Limits::from_args(&config.limits)?);

    // The verifier's work needs nothing from the store: it runs on a thread of its own while
    // this one reads the store, and the program is attached once the store is read (as before:
    // a start that can't read its store attaches nothing, and a program an earlier start left
    // attached keeps answering).
    let verifying = verify(&config)?;
    notify.status("loading the store");
    let loaded_store = Store::open(&config.data_dir)
        .map_err(|source| DaemonError::OpenStore {
            dir: config.data_dir.clone(),
            source,
        })
        .and_then(|store| {
            let store = store.with_journal_limits(config.secondaries.journal_limits());
            // Quarantined entries are logged by `load` and reported by /readyz and /metrics.
            let zones = store
                .load_with(&progress)
                .map_err(DaemonError::LoadStore)?
                .zones;
            Ok((store, zones))
        });
    // Waited for even when the store failed, so that an unattached program's pins are removed
    // before the start reports the failure.
    let verified = match verifying {
        // The thread can't be cancelled (the runtime outlives this function): only a panic
        // ends it early, and it goes on here.
        Some(v) => Some(
            v.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        ),
        None => None,
    };
    let (store, zones) = loaded_store?;
    info!(path = %store.path().display(), zones = zones.len(), "store loaded");

    notify.status("attaching the XDP program");
    let (loaded, fast) = attach(&config, verified.transpose()?, &dns_addrs, &limits)?;
    let ready = Ready {
        dns: dns_addrs,
        api: api_addr,
        loaded: loaded.as_ref(),
        control,
    };
    let result = serve(
        &config,
        listeners,
        &shutdown,
        Engine::new(zones, fast, store),
        Credentials {
            token,
            keys: Arc::new(keys),
            notify_key,
            limits,
        },
        zone_files,
        ready,
    )
    .await;
    if let Some(l) = loaded {
        if config.keep_xdp && l.pin_dir.is_some() {
            info!("leaving the XDP program answering from the pinned maps (--keep-xdp)");
        }
        l.release(config.keep_xdp);
    }
    result
}

/// An edge answering misses SERVFAIL while writes may not wait for it starts that way.
fn stale_from_start(config: &Config) -> bool {
    config.fleet.enabled() && config.fleet.stale_misses == crate::fleet::MissPolicy::Servfail
}

/// Loads and verifies the XDP program for the `--iface`s on a blocking thread, unless
/// `--xdp-mode off`: the first step of [`attach`].
fn verify(
    config: &Config,
) -> Result<Option<tokio::task::JoinHandle<Result<Verified, DaemonError>>>, DaemonError> {
    if config.xdp_mode == AttachMode::Off {
        return Ok(None);
    }
    let pin_dir = if config.no_pin {
        None
    } else {
        loader::ensure_bpffs(&config.bpffs).map_err(|e| DaemonError::Bpffs(Box::new(e)))?;
        Some(loader::pin_dir(
            &config.bpffs,
            &config.data_dir,
            &config.iface,
        ))
    };
    let ifaces = config.iface.clone();
    Ok(Some(tokio::task::spawn_blocking(move || {
        loader::load_verified(&ifaces, pin_dir.as_deref()).map_err(|source| DaemonError::Xdp {
            iface: ifaces.join(","),
            source: Box::new(source),
        })
    })))
}

/// Attaches the program [`verify`] loaded to every `--iface`, answering the addresses of
/// `dns_addrs`; nothing with `--xdp-mode off` (no `verified`).
fn attach(
    config: &Config,
    verified: Option<Verified>,
    dns_addrs: &[SocketAddr],
    limits: &crate::limit::Limits,
) -> Result<(Option<Loaded>, Option<FastPath>), DaemonError> {
    let Some(verified) = verified else {
        return Ok((None, None));
    };
    let mut cfg = loader::xdp_config(config.udp_payload, true);
    // An edge's misses are stale until it has registered with the fleet and caught up (see
    // `fleet::guard_misses`): from the first frame the program answers, not just from when
    // the fleet starts.
    if stale_from_start(config) {
        cfg.options |= dns_common::OPT_STALE_MISSES | dns_common::OPT_MISSES_UNTIL;
    }
    if config.nsid.is_some() {
        cfg.options |= dns_common::OPT_PASS_NSID;
    }
    // The program applies the loopback rules to the frames that came in on lo only.
    if config.iface.iter().any(|i| loader::is_loopback(i)) {
        cfg.options |= dns_common::OPT_LOOPBACK;
    }
    let served = loader::served_keys(dns_addrs);
    let (loaded, fast) = verified
        .attach(&config.iface, config.xdp_mode, cfg, &served)
        .map_err(|source| DaemonError::Xdp {
            iface: config.iface.join(","),
            source: Box::new(source),
        })?;
    let mut fast = fast;
    fast.set_limits(limits.map_config())
        .map_err(DaemonError::LimitMaps)?;
    for net in &limits.exempt {
        let r = match net {
            ipnet::IpNet::V4(n) => fast.add_exempt(&n.network().octets(), n.prefix_len()),
            ipnet::IpNet::V6(n) => fast.add_exempt(&n.network().octets(), n.prefix_len()),
        };
        r.map_err(DaemonError::LimitMaps)?;
    }
    Ok((Some(loaded), Some(fast)))
}

/// What the "ready" log line tells, and how to tell systemd and take reloads.
struct Ready<'a> {
    dns: Vec<SocketAddr>,
    api: SocketAddr,
    loaded: Option<&'a Loaded>,
    control: Control,
}

/// The secrets `serve` starts with, read before anything was attached.
struct Credentials {
    token: Option<ApiToken>,
    keys: Arc<KeyRing>,
    /// The key NOTIFY is signed with (`--notify-key`).
    notify_key: Option<Arc<Key>>,
    /// Rate limiting and the cookie secrets.
    limits: Arc<crate::limit::Limits>,
}

/// Everything after the XDP program is attached: the maps filled, the zone files and `--zone`
/// applied, the servers run until `shutdown`.
async fn serve(
    config: &Config,
    listeners: Listeners,
    shutdown: &CancellationToken,
    engine: Arc<Engine>,
    credentials: Credentials,
    zone_files: Vec<ZoneFile>,
    ready: Ready<'_>,
) -> Result<(), DaemonError> {
    let Credentials {
        token,
        keys,
        notify_key,
        limits,
    } = credentials;
    let key_slot: KeySlot = Arc::new(arc_swap::ArcSwap::new(keys));
    let Control { notify, reload } = ready.control;
    notify.status("filling the fast path's maps");
    let progress = progress_reporter(&notify);
    match engine.full_sync_with(&progress) {
        Ok(report) => info!(?report, "fast path in step with the store"),
        // The engine has switched the fast path off, as after a failed write: the program
        // passes every query up and the fallback answers from the store. Stopping instead would
        // leave no server at all, and a restart would meet the same maps (say, a store with
        // more names than they hold).
        Err(e) => error!(
            "filling the fast path's maps failed; the fast path is off and the fallback answers every query: {}",
            crate::error_chain(&e)
        ),
    }

    let mut tasks = JoinSet::new();
    let stale = StaleMisses::default();
    stale.set(stale_from_start(config));
    let fleet = if config.fleet.enabled() {
        notify.status("joining the fleet");
        let fleet = Fleet::start(
            config.fleet.clone(),
            // What `GET /v1/edges` shows unless --edge-address says otherwise: the first listener.
            ready
                .dns
                .first()
                .map(ToString::to_string)
                .unwrap_or_default(),
            engine.clone(),
            stale.clone(),
            &mut tasks,
            shutdown.clone(),
        )
        .await
        .map_err(DaemonError::Fleet)?;
        Some(fleet)
    } else {
        None
    };

    notify.status("loading zone files");
    for zf in zone_files {
        let (file, apex, records) = (zf.file().to_string(), zf.apex().clone(), zf.record_count());
        // One change through the write path: its start and end (with the rate) say where the
        // time went, and its map fill reports as it goes.
        let mut stage = progress.start("importing zone file", Some(records as u64));
        stage.report_now();
        let imported = match engine.import_zone_with(zf, &progress).await {
            Ok(imported) => imported,
            // An edge serves what the fleet has even when its own files can't go in now.
            Err(e) if fleet.is_some() => {
                warn!(%file, zone = %apex, "zone file not loaded into the fleet: {}", crate::error_chain(&e));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        stage.set_done(records as u64);
        stage.finish();
        info!(%file, zone = %apex, records, serial = imported.serial, changed = imported.changed, "zone file loaded");
    }

    // The demo zone is there so that a bare single host answers something; an edge would put
    // it into the fleet's source of truth, where every edge then serves it.
    let demo = |zone: &str| zone.trim_end_matches('.') == DEMO_ZONE.trim_end_matches('.');
    let create = config
        .zone
        .as_deref()
        .filter(|zone| fleet.is_none() || !demo(zone));
    if let Some(zone) = create {
        match ensure_zone(&engine, zone).await {
            // Another edge may be creating it at the same time, or etcd be out of reach.
            Err(e) if fleet.is_some() => {
                warn!(
                    zone,
                    "zone not created in the fleet: {}",
                    crate::error_chain(&e)
                );
            }
            r => r?,
        }
    }

    let fallback_stats = Arc::new(FallbackStats::new());
    let fallback = Arc::new(
        Fallback::new(
            engine.shared_zones(),
            FallbackConfig {
                stale_misses: stale,
                ..fallback_config(config)
            },
            fallback_stats.clone(),
        )
        .with_journal(engine.clone())
        .with_keys(key_slot.clone())
        .with_limits(limits.clone())
        .with_updates(fallback::Updates {
            handler: engine.clone(),
        }),
    );
    tasks.spawn(crate::notify::serve_notify(
        engine.shared_zones(),
        engine.subscribe(),
        config.secondaries.notify.clone(),
        notify_key,
        shutdown.clone(),
    ));
    let udp_sockets = listeners.dns_udp.len();
    tasks.spawn(fallback::serve_udp(
        listeners.dns_udp,
        fallback.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(fallback::serve_tcp(
        listeners.dns_tcp,
        fallback.clone(),
        shutdown.clone(),
    ));
    let mut api_state = ApiState::new(engine.clone(), fallback_stats)
        .with_zonefile_max_bytes(config.zonefile_max_bytes);
    if let Some(fleet) = &fleet {
        api_state = api_state.with_fleet(fleet.clone());
    }
    if let Some(token) = token {
        api_state = api_state.with_token(token);
    } else {
        warn!(api = %ready.api, "no --api-token-file: the API takes changes from anyone who can reach it");
    }
    let token_slot = api_state.token_slot();
    let app = api::router(api_state);
    let api_shutdown = shutdown.clone();
    let api_listener = listeners.api;
    tasks.spawn(async move {
        if let Err(e) = axum::serve(api_listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await
        {
            warn!("API server: {e}");
        }
    });
    let mut webhook_addr = None;
    if let Some(listener) = listeners.webhook {
        let addr = listener.local_addr().ok();
        if addr.is_some_and(|a| !a.ip().is_loopback()) {
            warn!(webhook = ?addr, "the webhook provider takes changes from anyone who can reach it; keep it on localhost");
        }
        webhook_addr = addr;
        let mut app = crate::webhook::router(engine.clone());
        if let Some(fleet) = &fleet {
            app = api::track_fleet_writes(app, fleet.clone());
        }
        let stop = shutdown.clone();
        tasks.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                warn!("webhook server: {e}");
            }
        });
    }
    let dns = ready
        .dns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",");
    info!(
        %dns,
        udp_sockets,
        api = %ready.api,
        webhook = ?webhook_addr,
        iface = %config.iface.join(","),
        mode = ?ready.loaded.map(|l| &l.modes),
        verified_insns = ?ready.loaded.and_then(|l| l.verified_insns),
        "ready"
    );
    notify.send(&format!(
        "READY=1\nSTATUS=serving DNS on {dns} and the API on {}",
        ready.api
    ));
    spawn_control(
        &mut tasks,
        &notify,
        reload,
        shutdown,
        engine,
        Slots {
            token: token_slot,
            keys: key_slot,
            fallback,
            limits,
        },
    );
    shutdown.cancelled().await;
    info!("shutting down");
    notify.send("STOPPING=1");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// What a reload swaps while the servers run.
struct Slots {
    token: TokenSlot,
    keys: KeySlot,
    /// Its access lists.
    fallback: Arc<Fallback>,
    limits: Arc<crate::limit::Limits>,
}

/// The fallback's settings from the daemon's.
fn fallback_config(config: &Config) -> FallbackConfig {
    FallbackConfig {
        udp_payload: config.udp_payload,
        allow_transfer: config.allow_axfr,
        transfer_allow: config.secondaries.transfer_allow.clone(),
        update_allow: config.update_allow.clone(),
        nsid: config.nsid.as_ref().map(|id| id.as_bytes().to_vec()),
        packet_cache_bytes: config.packet_cache_bytes,
        ..FallbackConfig::default()
    }
}

/// A list of prefixes for the log: `192.0.2.0/24, 2001:db8::1/128`, or `none`.
fn prefixes<T: std::fmt::Display>(list: &[T]) -> String {
    if list.is_empty() {
        return "none".to_owned();
    }
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts the tasks that keep systemd's watchdog fed and apply reloads, until `shutdown`.
fn spawn_control(
    tasks: &mut JoinSet<()>,
    notify: &Notifier,
    reloads: Option<mpsc::Receiver<Config>>,
    shutdown: &CancellationToken,
    engine: Arc<Engine>,
    slots: Slots,
) {
    if let Some(interval) = sd_notify::watchdog_interval().filter(|_| notify.is_enabled()) {
        let (notify, stop) = (notify.clone(), shutdown.clone());
        // Twice per interval, as sd_watchdog_enabled(3) advises; from the async workers, so a
        // wedged runtime misses its pings and systemd restarts it.
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(interval / 2);
            while stop.run_until_cancelled(tick.tick()).await.is_some() {
                notify.send("WATCHDOG=1");
            }
        });
    }
    // The program stamps cookies with the monotonic clock plus an offset to Unix time; the
    // offset moves when the wall clock is stepped or slewed, so it is written again each minute.
    let (limits, stop, writer) = (slots.limits.clone(), shutdown.clone(), engine.clone());
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            if let Some(Err(e)) = writer.with_fast(|f| f.set_limits(limits.map_config())) {
                warn!("writing the cookie clock: {}", crate::error_chain(&e));
            }
        }
    });
    let Some(mut reloads) = reloads else { return };
    let (notify, stop) = (notify.clone(), shutdown.clone());
    tasks.spawn(async move {
        while let Some(Some(config)) = stop.run_until_cancelled(reloads.recv()).await {
            notify.send(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}",
                sd_notify::monotonic_usec()
            ));
            match reload(&engine, &slots, &config).await {
                Ok(()) => notify.send("READY=1\nSTATUS=serving (reloaded)"),
                Err(e) => {
                    warn!("reload: {}", crate::error_chain(&e));
                    notify.send("READY=1\nSTATUS=serving (the last reload failed, see the log)");
                }
            }
        }
    });
}

/// The API token and the TSIG keys the settings name, read and checked (none if not named).
fn read_secrets(config: &Config) -> Result<(Option<ApiToken>, KeyRing), DaemonError> {
    let token = config
        .api_token_file
        .as_deref()
        .map(ApiToken::from_file)
        .transpose()?;
    let keys = match &config.tsig_keys {
        Some(path) => KeyRing::load(path)?,
        None => KeyRing::default(),
    };
    Ok((token, keys))
}

/// Applies a reload's API token file, TSIG key file, access lists (`--allow-axfr`,
/// `--transfer-allow`, `--update-allow`) and zone files. The files are read and checked first: a
/// file with a mistake changes nothing, and the running token, keys and lists stay.
async fn reload(engine: &Arc<Engine>, slots: &Slots, config: &Config) -> Result<(), DaemonError> {
    let slot = &slots.token;
    // Reading and parsing a large zone file takes a while: not on the workers that answer.
    let files = config.clone();
    // Everything is read before anything is applied, so a bad file changes nothing.
    let (token, keys, cookie_secret, zone_files) = tokio::task::spawn_blocking(move || {
        let (token, keys) = read_secrets(&files)?;
        let cookie_secret = files
            .limits
            .cookie_secret_file
            .as_deref()
            .map(crate::limit::read_secret)
            .transpose()?;
        let zone_files = files
            .zone_file
            .iter()
            // A large file is read with progress lines, as at start; a small one without.
            .map(|path| read_zone_file(path, &Reporter::default().long_only()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, DaemonError>((token, keys, cookie_secret, zone_files))
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    if token.is_none() && slot.load().is_some() {
        warn!("reload: no api-token-file any more: the API takes changes from anyone who can reach it");
    }
    slot.store(token.map(Arc::new));
    info!(
        token = config.api_token_file.is_some(),
        "reload: API token applied"
    );
    let key_count = keys.len();
    slots.keys.store(Arc::new(keys));
    info!(keys = key_count, "reload: TSIG keys applied");
    let access = fallback_config(config);
    let changed = slots.fallback.set_access(&access);
    if changed.is_empty() {
        info!("reload: access lists unchanged");
    } else {
        info!(
            changed = %changed.join(", "),
            allow_axfr = access.allow_transfer,
            transfer_allow = %prefixes(&access.transfer_allow),
            update_allow = %prefixes(&access.update_allow),
            "reload: access lists applied"
        );
    }
    if let Some(secret) = cookie_secret {
        slots.limits.rotate(secret);
        let written = engine.with_fast(|f| f.set_limits(slots.limits.map_config()));
        written.transpose().map_err(DaemonError::LimitMaps)?;
        info!("reload: cookie secret applied (the previous one is still accepted)");
    }
    for zf in zone_files {
        let (file, apex) = (zf.file().to_string(), zf.apex().clone());
        let imported = engine.import_zone(zf).await?;
        info!(%file, zone = %apex, serial = imported.serial, changed = imported.changed, "reload: zone file loaded");
    }
    Ok(())
}

/// Creates `zone` with default settings if it doesn't exist; the demo zone gets a demo record.
async fn ensure_zone(engine: &Arc<Engine>, zone: &str) -> Result<(), DaemonError> {
    let bad = |source| DaemonError::BadZone {
        zone: zone.to_owned(),
        source,
    };
    let mut apex = Name::from_ascii(zone).map_err(bad)?;
    apex.set_fqdn(true);
    let apex = normalize(&apex);
    if engine.zones().zone(&apex).is_some() {
        return Ok(());
    }
    let label = |l: &str| {
        Name::from_ascii(l)
            .and_then(|n| n.append_domain(&apex))
            .map_err(bad)
    };
    let ns = label("ns1")?;
    let rname = label("hostmaster")?;
    let failed = |source| DaemonError::CreateZone {
        zone: apex.to_string(),
        source,
    };
    let spec = ZoneSpec::new(apex.clone(), ns.clone(), rname, vec![ns]);
    engine.apply(Edit::CreateZone(spec)).await.map_err(failed)?;
    info!(zone = %apex, "zone created");
    if apex == Name::from_ascii(DEMO_ZONE).map_err(bad)? {
        let name = label("demo")?;
        engine
            .apply(Edit::Rrset(
                apex.clone(),
                Change::Set {
                    name,
                    rtype: RecordType::A,
                    ttl: 60,
                    records: vec![RData::A(A::new(192, 0, 2, 1))],
                },
            ))
            .await
            .map_err(failed)?;
    }
    Ok(())
}

/// Where start-up's long stages report: the log, and `STATUS=` for `systemctl status`.
fn progress_reporter(notify: &Notifier) -> Reporter {
    let reporter = Reporter::default();
    if !notify.is_enabled() {
        return reporter;
    }
    let notify = notify.clone();
    reporter.with_status(move |s| notify.status(s))
}

/// Reads and checks a `--zone-file`; the zone is the one its SOA record names.
fn read_zone_file(path: &Path, progress: &Reporter) -> Result<ZoneFile, DaemonError> {
    let text = std::fs::read_to_string(path).map_err(|source| DaemonError::ReadZoneFile {
        path: path.to_owned(),
        source,
    })?;
    Ok(zonefile::parse_with(
        &path.display().to_string(),
        &text,
        None,
        progress,
    )?)
}
