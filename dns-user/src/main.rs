//! `edgedns`: the daemon and its operator commands. Wiring only; the pieces live in the library.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use dns_user::{
    api::{self, ApiState, ApiToken},
    cli::{self, ApiArgs, RecordCommand, ZoneCommand},
    engine::Engine,
    fallback::{self, FallbackConfig, FallbackStats},
    loader::{self, AttachMode},
    store::Store,
    zone::{normalize, Change, Edit, ZoneSpec},
    zonefile::{self, ZoneFile},
};
use hickory_proto::rr::{rdata::A, Name, RData, RecordType};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The zone `serve` creates when it is missing, with one demo record, so that a bare
/// `edgedns serve` answers something.
const DEMO_ZONE: &str = "t.example.net.";

#[derive(Parser)]
#[command(
    name = "edgedns",
    version,
    about = "Authoritative DNS with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: XDP fast path, fallback DNS server and update API.
    Serve(ServeArgs),
    /// Print the fast path's counters (from a running server's API).
    Stats {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change or list records through a running server's API.
    Record {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        cmd: RecordCommand,
    },
    /// Create, list, import or export zones through a running server's API.
    Zone {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        cmd: ZoneCommand,
    },
    /// Attach a pass-everything XDP program to an interface until interrupted: the peer end of a
    /// veth pair needs one for XDP_TX frames to be delivered.
    XdpPass {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value = "driver")]
        xdp_mode: AttachMode,
    },
    /// Detach a fast path left answering by `serve --keep-xdp` (or a crash) and free its maps:
    /// removes the pins of the instance with this data directory and interface.
    XdpDetach {
        #[arg(long, default_value = "lo")]
        iface: String,
        #[arg(long, default_value = "/var/lib/edgedns")]
        data_dir: PathBuf,
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Interface the XDP program attaches to.
    #[arg(long, default_value = "lo")]
    iface: String,
    /// auto: native (driver) mode, else generic; off: no XDP, the fallback answers everything.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: AttachMode,
    /// DNS address and port (UDP and TCP); the fast path answers UDP to this address and port.
    #[arg(long, default_value = "127.0.0.1:5300")]
    dns_listen: SocketAddr,
    /// Update API address.
    #[arg(long, default_value = "127.0.0.1:8053")]
    api_listen: SocketAddr,
    /// Where the store lives.
    #[arg(long, default_value = "/var/lib/edgedns")]
    data_dir: PathBuf,
    /// Create this zone at start if it does not exist (default SOA and NS). The default zone
    /// also gets a demo record, demo.t.example.net A 192.0.2.1.
    #[arg(long, default_value = DEMO_ZONE)]
    zone: Option<String>,
    /// Where bpffs is (mounted there if it isn't): maps and the XDP link are pinned below it so
    /// that the fast path outlives a restart or a crash.
    #[arg(long, default_value = "/sys/fs/bpf")]
    bpffs: PathBuf,
    /// Don't pin: the fast path goes when the daemon does.
    #[arg(long)]
    no_pin: bool,
    /// At exit, leave the XDP program answering from the pinned maps until the next start takes
    /// over (zero-downtime restarts). Without it, a clean exit detaches the program and removes
    /// the pins; after a crash they stay either way.
    #[arg(long)]
    keep_xdp: bool,
    /// Answer AXFR/IXFR over TCP to anyone who asks (off: REFUSED). The zones are then public
    /// in bulk; only turn it on where the DNS port is reachable by your secondaries alone.
    #[arg(long)]
    allow_axfr: bool,
    /// UDP payload size advertised in EDNS responses.
    #[arg(long, default_value_t = dns_common::DEFAULT_UDP_PAYLOAD)]
    udp_payload: u16,
    /// File holding the token every /v1/* API request must send as `Authorization: Bearer
    /// <token>`, and every /api/* (PowerDNS) request as that or `X-API-Key: <token>`
    /// (surrounding whitespace trimmed). Without it the API is open to whoever can reach
    /// --api-listen.
    #[arg(long, value_name = "FILE")]
    api_token_file: Option<PathBuf>,
    /// Master file (RFC 1035) to load at start, replacing the zone its SOA record names; may be
    /// given more than once. A file whose data the store already holds changes nothing.
    #[arg(long, value_name = "FILE")]
    zone_file: Vec<PathBuf>,
    /// Serve external-dns's webhook provider protocol on this address (off by default). It
    /// takes changes without authentication (external-dns sends none): keep it on localhost,
    /// next to external-dns.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Stats { api } => cli::stats(&api).await,
            Command::Record { api, cmd } => cli::record(&api, cmd).await,
            Command::Zone { api, cmd } => cli::zone(&api, cmd).await,
            Command::XdpDetach {
                iface,
                data_dir,
                bpffs,
            } => {
                let dir = loader::pin_dir(&bpffs, &data_dir, &iface);
                if !dir.exists() {
                    bail!("nothing pinned at {} (is --bpffs right?)", dir.display());
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
                info!(dir = %dir.display(), "pins removed: the XDP program is detached");
                Ok(())
            }
            Command::XdpPass { iface, xdp_mode } => {
                let _prog = loader::attach_pass(&iface, xdp_mode)
                    .with_context(|| format!("attaching the pass program to {iface}"))?;
                info!(
                    iface,
                    "pass program attached; Ctrl-C or SIGTERM detaches it"
                );
                shutdown_signal().await;
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Read the token and the zone files first: a mistake in either stops start-up before
    // anything is attached.
    let token = args
        .api_token_file
        .as_deref()
        .map(ApiToken::from_file)
        .transpose()?;
    let zone_files = args
        .zone_file
        .iter()
        .map(|path| read_zone_file(path))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let store = Store::open(&args.data_dir)
        .with_context(|| format!("opening the store in {}", args.data_dir.display()))?;
    let zones = store.load().context("loading the store")?;
    info!(path = %store.path().display(), zones = zones.len(), "store loaded");

    let fallback_cfg = FallbackConfig {
        udp_payload: args.udp_payload,
        allow_transfer: args.allow_axfr,
        ..FallbackConfig::default()
    };
    let (loaded, fast) = match args.xdp_mode {
        AttachMode::Off => (None, None),
        mode => {
            let cfg = loader::xdp_config(args.dns_listen, args.udp_payload, true);
            let pin_dir = if args.no_pin {
                None
            } else {
                loader::ensure_bpffs(&args.bpffs)?;
                Some(loader::pin_dir(&args.bpffs, &args.data_dir, &args.iface))
            };
            let (loaded, fast) =
                loader::load_and_attach(&args.iface, mode, cfg, pin_dir.as_deref())
                    .with_context(|| format!("loading the XDP program on {}", args.iface))?;
            (Some(loaded), Some(fast))
        }
    };
    let engine = Engine::new(zones, fast, store);
    let report = engine.full_sync().context("filling the fast path's maps")?;
    info!(?report, "fast path in step with the store");

    for zf in zone_files {
        let (file, apex, records) = (zf.file().to_string(), zf.apex().clone(), zf.record_count());
        let imported = engine.import_zone(zf).await?;
        info!(%file, zone = %apex, records, serial = imported.serial, changed = imported.changed, "zone file loaded");
    }

    if let Some(zone) = &args.zone {
        ensure_zone(&engine, zone).await?;
    }

    let shutdown = CancellationToken::new();
    let fallback_stats = Arc::new(FallbackStats::new());
    let udp = UdpSocket::bind(args.dns_listen)
        .await
        .with_context(|| format!("binding UDP {}", args.dns_listen))?;
    let tcp = TcpListener::bind(args.dns_listen)
        .await
        .with_context(|| format!("binding TCP {}", args.dns_listen))?;
    let api_listener = TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding the API on {}", args.api_listen))?;

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(fallback::serve_udp(
        udp,
        engine.shared_zones(),
        fallback_cfg.clone(),
        fallback_stats.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(fallback::serve_tcp(
        tcp,
        engine.shared_zones(),
        fallback_cfg,
        fallback_stats.clone(),
        shutdown.clone(),
    ));
    let mut api_state = ApiState::new(engine.clone(), fallback_stats);
    if let Some(token) = token {
        api_state = api_state.with_token(token);
    } else {
        warn!(api = %args.api_listen, "no --api-token-file: the API takes changes from anyone who can reach it");
    }
    let app = api::router(api_state);
    let api_shutdown = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = axum::serve(api_listener, app)
            .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
            .await
        {
            warn!("API server: {e}");
        }
    });
    if let Some(addr) = args.webhook_listen {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the webhook provider on {addr}"))?;
        if !addr.ip().is_loopback() {
            warn!(webhook = %addr, "the webhook provider takes changes from anyone who can reach it; keep it on localhost");
        }
        let (app, stop) = (dns_user::webhook::router(engine.clone()), shutdown.clone());
        tasks.spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = serve.await {
                warn!("webhook server: {e}");
            }
        });
    }
    info!(
        dns = %args.dns_listen,
        api = %args.api_listen,
        webhook = ?args.webhook_listen,
        iface = %args.iface,
        mode = ?loaded.as_ref().map(|l| l.mode),
        verified_insns = ?loaded.as_ref().and_then(|l| l.verified_insns),
        "ready"
    );
    shutdown_signal().await;
    info!("shutting down");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    if let Some(l) = loaded {
        if args.keep_xdp && l.pin_dir.is_some() {
            info!("leaving the XDP program answering from the pinned maps (--keep-xdp)");
        }
        l.release(args.keep_xdp);
    }
    Ok(())
}

/// Creates `zone` with default settings if it doesn't exist; the demo zone gets a demo record.
async fn ensure_zone(engine: &Arc<Engine>, zone: &str) -> anyhow::Result<()> {
    let mut apex = Name::from_ascii(zone).with_context(|| format!("bad --zone {zone:?}"))?;
    apex.set_fqdn(true);
    let apex = normalize(&apex);
    if engine.zones().zone(&apex).is_some() {
        return Ok(());
    }
    let ns = Name::from_ascii("ns1")?.append_domain(&apex)?;
    let rname = Name::from_ascii("hostmaster")?.append_domain(&apex)?;
    let spec = ZoneSpec::new(apex.clone(), ns.clone(), rname, vec![ns]);
    engine.apply(Edit::CreateZone(spec)).await?;
    info!(zone = %apex, "zone created");
    if apex == Name::from_ascii(DEMO_ZONE)? {
        let name = Name::from_ascii("demo")?.append_domain(&apex)?;
        engine
            .apply(Edit::Rrset(
                apex,
                Change::Set {
                    name,
                    rtype: RecordType::A,
                    ttl: 60,
                    records: vec![RData::A(A::new(192, 0, 2, 1))],
                },
            ))
            .await?;
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("no SIGTERM handler: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Reads and checks a `--zone-file`; the zone is the one its SOA record names.
fn read_zone_file(path: &std::path::Path) -> anyhow::Result<ZoneFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(zonefile::parse(&path.display().to_string(), &text, None)?)
}
