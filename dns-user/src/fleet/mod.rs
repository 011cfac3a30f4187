//! A fleet of edges on etcd: etcd is the source of truth for zones and RRsets, every edge
//! applies the same history to its own store, maps and fallback, and a write is confirmed once
//! every live edge answers it.
//!
//! ```text
//! API (any edge) -> Edit -> ZoneSet::apply on this edge's version -> keys to put/delete
//!    -> one etcd transaction, guarded by the zones' mod revisions (writer.rs)
//! etcd watch (every edge) -> one revision's events -> Engine::apply_remote
//!    -> served version -> maps -> publish the applied revision (follower.rs)
//!    (and the store (+ revision) right after, off that path)
//! edges' registrations under leases -> all live edges >= the write's revision -> 200 (registry.rs)
//! ```
//!
//! The engine stays the one local writer: the follower turns each etcd revision into one engine
//! change. Without `--etcd` none of this runs and the daemon is the single host it always was.

mod acks;
mod codec;
mod follower;
mod registry;
mod writer;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use hickory_proto::rr::Name;
use rustls_pki_types::pem::PemObject as _;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::{
    acks::{AckListen, AckStats},
    codec::{DataKey, Keys, Value},
    registry::{EdgeInfo, EdgeView},
    writer::{seed, Outcome, SeedError, Seeded, WriteContext, MAX_BYTES, MAX_OPS, WRITE},
};
use crate::{engine::Engine, fallback::StaleMisses};

/// A write that lost a race waits at most this long for this edge's follower to catch up
/// before validating again.
const LOCAL_APPLY_WAIT: Duration = Duration::from_secs(10);
/// Longest a single etcd request may take before it counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause of a reconnect loop; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// A connection that lasted this long before it was lost starts its backoff afresh.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Where etcd is and how to reach it: `serve`'s and `fleet seed`'s flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints (comma-separated, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379): makes
    /// the daemon an edge of a fleet whose zones and records live in etcd. Without it the daemon
    /// is a single host with its own store.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub etcd: Vec<String>,
    /// The key prefix the fleet's data lives under in etcd.
    #[arg(long, default_value = "/edgedns/v1")]
    pub etcd_prefix: String,
    /// CA certificate (PEM) that signed the etcd servers' certificates (https:// endpoints).
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
}

/// What an edge answers for a name it has no data for while it is cut off from etcd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MissPolicy {
    /// SERVFAIL: the name may have been created since; resolvers try another edge.
    #[default]
    Servfail,
    /// NXDOMAIN/NODATA as usual, from the data the edge has.
    Nxdomain,
}

/// `serve`'s fleet flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// This edge's name in the fleet (default: the host name).
    #[arg(long, value_name = "ID")]
    pub edge_id: Option<String>,
    /// The region `GET /v1/edges` shows for this edge.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub region: String,
    /// The address `GET /v1/edges` shows for this edge (default: the DNS listen address).
    #[arg(long, value_name = "ADDR")]
    pub edge_address: Option<String>,
    /// Seconds of the edge's lease: an edge not heard from for this long drops out of the live
    /// edges (writes stop waiting for it), and an edge that can't reach etcd for this long
    /// answers misses as --stale-misses until it has registered again and caught up.
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub lease_ttl: u32,
    /// How long a write waits for every live edge to apply it before answering 202 with a
    /// change id (`GET /v1/changes/{id}`).
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub confirm_wait_ms: u64,
    /// How an edge answers names it has no data for in its zones while writes don't wait for
    /// it: cut off from etcd for longer than its lease, or not (yet) registered, as at start.
    #[arg(long, value_enum, default_value = "servfail")]
    pub stale_misses: MissPolicy,
    /// UDP address where this edge takes the other edges' acks of its writes (`off`: none; they
    /// then come through etcd, a little later and at more cost to etcd). Default [::]:8054,
    /// and acks off with a warning if that can't be bound.
    #[arg(long, value_name = "ADDR|off")]
    pub ack_listen: Option<AckListen>,
    /// The address the other edges send acks to (default: the address this edge reaches etcd
    /// from, with the port of --ack-listen; acks are off if that is a loopback address).
    #[arg(long, value_name = "ADDR")]
    pub ack_address: Option<std::net::SocketAddr>,
}

impl FleetArgs {
    pub fn enabled(&self) -> bool {
        !self.etcd.etcd.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("reading {}", path.display())]
    ReadTls {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    BadTls { path: PathBuf, reason: String },
    #[error("bad etcd client settings (endpoints, certificates)")]
    Connect(#[source] etcd_client::Error),
    #[error("etcd is unreachable; nothing changed")]
    Unavailable(#[source] etcd_client::Error),
    #[error("etcd did not answer within {0:?}; nothing changed")]
    Timeout(Duration),
    #[error("etcd refused the TLS connection with this edge's certificate (--etcd-cert {}, --etcd-ca {})", cert.display(), ca.display())]
    TlsRefused {
        cert: PathBuf,
        ca: PathBuf,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd is unreachable (this edge holds no lease); nothing changed")]
    NoLease,
    #[error("etcd has not answered this edge for {:.1} s (longer than its lease); nothing changed", .0.as_secs_f64())]
    CutOff(Duration),
    #[error("the change needs {needed} etcd operations; one transaction takes at most {limit}: split it into smaller batches")]
    TooManyOps { needed: usize, limit: usize },
    #[error("the change is {bytes} bytes; one etcd transaction takes at most {limit} bytes: split it into smaller batches")]
    TooLarge { bytes: usize, limit: usize },
    #[error("zone {zone} changed after revision {if_match} (now at revision {current})")]
    PreconditionFailed {
        zone: String,
        if_match: i64,
        current: i64,
    },
    #[error("other writers kept changing zone {zone}; try again")]
    Contended { zone: String },
    #[error("this edge could not catch up with etcd (revision {revision}) to check the change against; nothing changed")]
    Behind { revision: i64 },
    #[error("encoding {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("the edge is stopping")]
    Stopped,
    #[error("edge id {id:?} is held by another live edge (registered from another data directory): give this edge its own --edge-id, or, if that edge is gone, start again once its lease ({ttl} s) has run out")]
    DuplicateEdge { id: String, ttl: u32 },
    #[error("reading or writing the edge's token {}", path.display())]
    Instance {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the ack socket (--ack-listen {addr})")]
    AckListen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("applying revision {revision} here")]
    Apply {
        revision: i64,
        #[source]
        source: Box<crate::engine::EngineError>,
    },
}

impl FleetError {
    /// The HTTP status the API answers this with.
    pub fn status(&self) -> u16 {
        match self {
            FleetError::TooManyOps { .. } | FleetError::TooLarge { .. } => 413,
            FleetError::PreconditionFailed { .. } | FleetError::Contended { .. } => 409,
            FleetError::Unavailable(_)
            | FleetError::NoLease
            | FleetError::CutOff(_)
            | FleetError::Timeout(_)
            | FleetError::Stopped
            | FleetError::Behind { .. } => 503,
            _ => 500,
        }
    }
}

/// Connects a client (no request is made yet: a refused certificate or bad URL fails here,
/// an unreachable server at the first request).
pub async fn connect(args: &EtcdArgs) -> Result<Client, FleetError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| FleetError::ReadTls {
            path: path.clone(),
            source,
        })
    };
    let mut options = ConnectOptions::new()
        // HTTP/2 pings notice a silent partition (a dead peer never resets the connection);
        // the follower's watch and the lease then fail and are set up again.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true)
        .with_connect_timeout(Duration::from_secs(3))
        // A watch on a member that lost its leader would hear nothing: be told instead.
        .with_require_leader(true);
    if args.etcd_ca.is_some() || args.etcd_cert.is_some() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &args.etcd_ca {
            let pem = read(ca)?;
            check_certificates(ca, &pem)?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&args.etcd_cert, &args.etcd_key) {
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            check_certificates(cert, &cert_pem)?;
            if let Err(e) = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem) {
                return Err(FleetError::BadTls {
                    path: key.clone(),
                    reason: format!("no private key in PEM form ({e:?})"),
                });
            }
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        options = options.with_tls(tls);
    }
    Client::connect(&args.etcd, Some(options))
        .await
        .map_err(FleetError::Connect)
}

/// A PEM file must hold certificates, all readable: tonic takes a file without any and only
/// fails at the handshake, which would look like etcd being down.
fn check_certificates(path: &std::path::Path, pem: &[u8]) -> Result<(), FleetError> {
    use rustls_pki_types::CertificateDer;
    let bad = |reason: String| FleetError::BadTls {
        path: path.to_owned(),
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(pem) {
        cert.map_err(|e| bad(format!("unreadable certificate ({e:?})")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no certificate in PEM form".into()));
    }
    Ok(())
}

/// With TLS, reads etcd once at start: a certificate etcd refuses (or a server certificate the
/// CA doesn't vouch for) is a start-up error, not an etcd that looks down for ever. An etcd that
/// is out of reach is no error here: the edge serves its local copy until it is back. A refused
/// client certificate shows as an alert after the handshake, which the client mostly reports
/// as the connection closed at once: a server that closes every connection that way is
/// refusing this edge's TLS too.
async fn check_tls(client: &Client, args: &EtcdArgs) -> Result<(), FleetError> {
    if args.etcd_ca.is_none() && args.etcd_cert.is_none() {
        return Ok(());
    }
    let mut closed = None;
    for _ in 0..6 {
        let mut kv = client.kv_client();
        let probe = kv.get(
            Keys::new(&args.etcd_prefix).all(),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        );
        let e = match tokio::time::timeout(REQUEST_TIMEOUT, probe).await {
            Ok(Ok(_)) | Err(_) => return Ok(()),
            Ok(Err(e)) => e,
        };
        let chain = crate::error_chain(&e).to_ascii_lowercase();
        if ["certificate", "handshake", "alert"]
            .iter()
            .any(|w| chain.contains(w))
        {
            return Err(FleetError::TlsRefused {
                cert: args.etcd_cert.clone().unwrap_or_default(),
                ca: args.etcd_ca.clone().unwrap_or_default(),
                source: e,
            });
        }
        if chain.contains("refused") || chain.contains("timed out") {
            return Ok(());
        }
        closed = Some(e);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match closed {
        Some(source) => Err(FleetError::TlsRefused {
            cert: args.etcd_cert.clone().unwrap_or_default(),
            ca: args.etcd_ca.clone().unwrap_or_default(),
            source,
        }),
        None => Ok(()),
    }
}

/// How often the endpoints' health is checked.
const HEALTH_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the client's endpoints to the members that answer: the client's balancer would go on
/// sending some requests to a dead member, and those fail. Each endpoint is asked for its
/// status on its own connection; one that doesn't answer is taken out of the client, and put
/// back once it answers again. All of them failing (this edge cut off) changes nothing.
async fn prune_endpoints(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let urls = fleet.args.etcd.etcd.clone();
    let mut probes = Vec::new();
    for url in &urls {
        let args = EtcdArgs {
            etcd: vec![url.clone()],
            ..fleet.args.etcd.clone()
        };
        match connect(&args).await {
            Ok(c) => probes.push((url.clone(), c)),
            Err(e) => {
                warn!(
                    "fleet: no health checks of {url}: {}",
                    crate::error_chain(&e)
                );
                return;
            }
        }
    }
    let mut live = vec![true; probes.len()];
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut answers = Vec::with_capacity(probes.len());
        for (_, c) in &probes {
            let mut m = c.maintenance_client();
            answers.push(matches!(
                tokio::time::timeout(Duration::from_millis(700), m.status()).await,
                Ok(Ok(_))
            ));
        }
        if !answers.iter().any(|a| *a) {
            continue;
        }
        for (i, ok) in answers.into_iter().enumerate() {
            if ok == live[i] {
                continue;
            }
            let url = &probes[i].0;
            let changed = if ok {
                fleet.client.add_endpoint(url).await
            } else {
                fleet.client.remove_endpoint(url).await
            };
            match changed {
                Ok(()) => {
                    live[i] = ok;
                    if ok {
                        info!(edge = %fleet.edge_id, endpoint = %url, "fleet: etcd member answers again; using it");
                    } else {
                        warn!(edge = %fleet.edge_id, endpoint = %url, "fleet: etcd member does not answer; not using it until it does");
                    }
                }
                Err(e) => warn!("fleet: changing the endpoint {url}: {e}"),
            }
        }
    }
}

/// The next pause of a reconnect loop: doubled, or back to the start after a connection that
/// lasted a while.
fn next_backoff(backoff: Duration, lasted: Duration) -> Duration {
    if lasted >= BACKOFF_RESET_AFTER {
        BACKOFF_MIN
    } else {
        (backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX)
    }
}

/// Whether etcd refused a lease revoke because the lease is gone: it ran out, which is as good
/// as revoked.
fn lease_gone(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("not found"))
}

/// Runs `f` against etcd within [`REQUEST_TIMEOUT`].
async fn request<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, FleetError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(FleetError::Unavailable),
        Err(_) => Err(FleetError::Timeout(REQUEST_TIMEOUT)),
    }
}

/// What this edge has applied: its version of the zones is etcd at `revision`, and each zone
/// key's mod revision is what the writer guards its transactions with. Changed only by the
/// follower, together with the engine's version (under [`Fleet::applied`]'s lock), so a writer
/// reads a consistent pair.
#[derive(Debug, Default)]
struct Applied {
    revision: i64,
    zone_mods: std::collections::HashMap<Name, i64>,
}

/// Counters and gauges for `/metrics`.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub watch_reconnects: AtomicU64,
    pub resyncs: AtomicU64,
    /// Histogram of write confirmation times: counts per [`CONFIRM_BUCKETS`] bound, then +Inf.
    confirm: Mutex<([u64; CONFIRM_BUCKETS.len() + 1], f64)>,
}

/// Upper bounds, in seconds, of the confirmation-time histogram's buckets.
pub const CONFIRM_BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

impl FleetStats {
    fn observe_confirm(&self, seconds: f64) {
        let mut h = self.confirm.lock().unwrap_or_else(|p| p.into_inner());
        let i = CONFIRM_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(CONFIRM_BUCKETS.len());
        h.0[i] += 1;
        h.1 += seconds;
    }

    /// Cumulative bucket counts (the last is +Inf, the total) and the sum.
    pub fn confirm_histogram(&self) -> (Vec<u64>, f64) {
        let h = self.confirm.lock().unwrap_or_else(|p| p.into_inner());
        let mut acc = 0;
        let counts =
            h.0.iter()
                .map(|c| {
                    acc += c;
                    acc
                })
                .collect();
        (counts, h.1)
    }
}

/// An edge of a fleet: the follower, the registry and the writer share this.
pub struct Fleet {
    client: Client,
    keys: Keys,
    engine: Arc<Engine>,
    args: FleetArgs,
    edge_id: String,
    edge_address: String,
    /// This edge's data directory's token (see [`EdgeInfo::instance`]).
    instance: String,
    applied: tokio::sync::Mutex<Applied>,
    /// This edge's writers take turns (see the writer).
    write_turn: tokio::sync::Mutex<()>,
    /// The revision this edge has applied (and its maps answer), for the publisher and waiters.
    applied_tx: watch::Sender<i64>,
    /// The live edges, as their registrations in etcd say (see `registry::watch_edges`).
    edges_tx: watch::Sender<registry::Edges>,
    /// When a write last waited for the registrations (None: never): the registry watch runs
    /// until a while after.
    edges_wanted_at: Mutex<Option<Instant>>,
    /// Wakes the registry watch when a write wants it.
    edges_wanted: tokio::sync::Notify,
    /// The registry watch is running: `edges_tx` follows etcd as it changes.
    edges_watching: AtomicBool,
    /// Writes waiting on the registrations now (the watch doesn't stop under them).
    edges_waiters: std::sync::atomic::AtomicUsize,
    /// When etcd last answered this edge.
    last_contact: Mutex<Option<Instant>>,
    /// The first reconcile with etcd finished (or, with etcd unreachable at start, the local
    /// copy is what is served).
    synced: AtomicBool,
    connected: AtomicBool,
    /// etcd has not answered for longer than the lease: the follower gives up its watch and
    /// reconciles afresh once etcd answers again (which clears this).
    cut_off: AtomicBool,
    /// The applied revision from which this edge's misses can be trusted (`i64::MAX`: never,
    /// while it is not registered). See [`guard_misses`].
    misses_from: AtomicI64,
    /// Wakes [`guard_misses`] when `cut_off` or `misses_from` changes.
    misses_changed: tokio::sync::Notify,
    /// Misses in our zones are answered SERVFAIL (see [`guard_misses`]).
    stale: StaleMisses,
    /// The state last written to both the fallback's switch and the XDP option, with the time
    /// the program trusts misses until (None: not yet, or the option's write failed).
    stale_written: Mutex<Option<(bool, Option<Instant>)>>,
    /// The current lease and the earliest it can run out (see [`Fleet::lease_surely_holds`]).
    lease_surely_until: Mutex<Option<(i64, Instant)>>,
    /// A registration whose lease a write tried to revoke without knowing whether it did:
    /// its revision and when (see [`Fleet::registration_in_doubt`]).
    doubt: Mutex<Option<(i64, Instant)>>,
    /// This edge's current lease (0: none).
    lease: AtomicI64,
    /// The latest each recent lease of this edge can run out at, by this edge's clock (the
    /// time of its last renewal's answer plus the TTL): a write transaction put under a lease
    /// that ran out is refused by etcd, so after that time a lost transaction can't land.
    lease_expiry: Mutex<std::collections::VecDeque<(i64, Instant)>>,
    /// Makes each write's id unique: this process's start time and a counter.
    write_ids: (u128, AtomicU64),
    pub stats: FleetStats,
    /// Acks between edges (see [`acks`]).
    acks: acks::Acks,
    /// When each recent revision was first seen here, for the lag in seconds.
    seen: Mutex<std::collections::VecDeque<(i64, SystemTime)>>,
}

/// What `/readyz` and `/metrics` show of the fleet.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FleetStatus {
    pub edge_id: String,
    /// `syncing` (not yet reconciled), `connected`, or `disconnected` (serving the local copy;
    /// see `stale`).
    pub state: &'static str,
    pub applied_revision: i64,
    pub synced: bool,
    pub connected: bool,
    pub stale: bool,
}

impl Fleet {
    /// Connects to etcd, reconciles the engine's zones with it (within a few seconds; if etcd
    /// can't be reached, the local copy is served and the follower keeps trying), registers
    /// this edge and starts the follower, the registry watch and the presence tasks. From here
    /// on the engine's writes go to etcd.
    pub async fn start(
        args: FleetArgs,
        default_address: String,
        engine: Arc<Engine>,
        stale: StaleMisses,
        tasks: &mut tokio::task::JoinSet<()>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Fleet>, FleetError> {
        let client = connect(&args.etcd).await?;
        check_tls(&client, &args.etcd).await?;
        let edge_id = args.edge_id.clone().unwrap_or_else(host_name);
        let edge_address = args.edge_address.clone().unwrap_or(default_address);
        let instance = instance_token(engine.store().dir())?;
        let acks = acks::Acks::bind(args.ack_listen, args.ack_address, &args.etcd.etcd).await?;
        let start_revision = engine
            .store()
            .fleet_revision()
            .ok()
            .flatten()
            .and_then(|r| i64::try_from(r).ok())
            .unwrap_or(0);
        let fleet = Arc::new(Fleet {
            client,
            keys: Keys::new(&args.etcd.etcd_prefix),
            engine: engine.clone(),
            edge_id,
            edge_address,
            instance,
            applied: tokio::sync::Mutex::new(Applied {
                revision: start_revision,
                zone_mods: Default::default(),
            }),
            write_turn: tokio::sync::Mutex::new(()),
            applied_tx: watch::Sender::new(start_revision),
            edges_tx: watch::Sender::new(Default::default()),
            edges_wanted_at: Mutex::new(None),
            edges_wanted: tokio::sync::Notify::new(),
            edges_watching: AtomicBool::new(false),
            edges_waiters: std::sync::atomic::AtomicUsize::new(0),
            // Cut off "for longer than the lease" counts from the start: the local copy is
            // as old as it is, but this edge only knows etcd is out of reach from now.
            last_contact: Mutex::new(Some(Instant::now())),
            synced: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
            misses_from: AtomicI64::new(NOT_REGISTERED),
            misses_changed: tokio::sync::Notify::new(),
            stale,
            stale_written: Mutex::new(None),
            lease_surely_until: Mutex::new(None),
            doubt: Mutex::new(None),
            lease: AtomicI64::new(0),
            lease_expiry: Mutex::new(Default::default()),
            write_ids: (
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
                AtomicU64::new(0),
            ),
            stats: FleetStats::default(),
            acks,
            seen: Mutex::new(Default::default()),
            args,
        });
        engine.set_remote(Arc::new(writer::Writer(Arc::downgrade(&fleet))));
        let (first_sync, synced) = tokio::sync::oneshot::channel();
        let (first_registration, registered) = tokio::sync::oneshot::channel();
        tasks.spawn(follower::run(fleet.clone(), first_sync, shutdown.clone()));
        tasks.spawn(registry::watch_edges(fleet.clone(), shutdown.clone()));
        tasks.spawn(registry::presence(
            fleet.clone(),
            first_registration,
            shutdown.clone(),
        ));
        if fleet.args.etcd.etcd.len() > 1 {
            tasks.spawn(prune_endpoints(fleet.clone(), shutdown.clone()));
        }
        tasks.spawn(guard_misses(fleet.clone(), shutdown.clone()));
        tasks.spawn(acks::run(fleet.clone(), shutdown.clone()));
        tasks.spawn(flush_copy(fleet.clone(), shutdown));
        // etcd within reach: serve only once this edge has what the fleet has, and is
        // registered (writes from then on wait for it).
        let wait = Duration::from_secs(u64::from(fleet.args.lease_ttl).max(3));
        let both = async {
            match registered.await {
                Ok(Ok(())) => Ok(synced.await.is_ok()),
                Ok(Err(e)) => Err(e),
                Err(_) => Ok(false),
            }
        };
        match tokio::time::timeout(wait, both).await {
            Ok(Err(e)) => return Err(e),
            Ok(Ok(true)) => {
                info!(edge = %fleet.edge_id, revision = fleet.applied_revision(), "fleet: in step with etcd");
                // Misses answered normally from the start: if the follower's read came
                // before the registration, its watch brings the registration's revision in
                // a moment (see `guard_misses`).
                let from = fleet.misses_from.load(Ordering::Relaxed);
                if from != NOT_REGISTERED {
                    let mut applied = fleet.applied_tx.subscribe();
                    let _ = tokio::time::timeout(wait, applied.wait_for(|a| *a >= from)).await;
                }
                fleet.update_stale();
            }
            _ => {
                warn!(edge = %fleet.edge_id, revision = start_revision, "fleet: etcd not reachable; serving the local copy until it is");
                fleet.synced.store(true, Ordering::Relaxed);
            }
        }
        Ok(fleet)
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    /// A fresh id for one write (unique across this edge's writes and restarts).
    fn next_write_id(&self) -> String {
        let n = self.write_ids.1.fetch_add(1, Ordering::Relaxed);
        format!("{}:{:x}:{n}", self.edge_id, self.write_ids.0)
    }

    /// Notes that `lease` holds until at least `ttl` seconds from now.
    fn lease_renewed(&self, lease: i64, ttl: i64) {
        let until = Instant::now() + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let mut leases = self.lease_expiry.lock().unwrap_or_else(|p| p.into_inner());
        match leases.iter_mut().find(|(id, _)| *id == lease) {
            Some(l) => l.1 = l.1.max(until),
            None => {
                leases.push_back((lease, until));
                if leases.len() > 8 {
                    leases.pop_front();
                }
            }
        }
    }

    /// When `lease` runs out at the latest (None: not known, so it may still hold).
    fn lease_expires(&self, lease: i64) -> Option<Instant> {
        self.lease_expiry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(id, _)| *id == lease)
            .map(|(_, t)| *t)
    }

    pub fn applied_revision(&self) -> i64 {
        *self.applied_tx.borrow()
    }

    /// How long a write waits for the fleet.
    pub fn confirm_wait(&self) -> Duration {
        Duration::from_millis(self.args.confirm_wait_ms)
    }

    pub fn status(&self) -> FleetStatus {
        let synced = self.synced.load(Ordering::Relaxed);
        let connected = self.connected.load(Ordering::Relaxed);
        let stale = self.stale.is_set();
        let state = if !synced {
            "syncing"
        } else if connected {
            "connected"
        } else {
            "disconnected"
        };
        FleetStatus {
            edge_id: self.edge_id.clone(),
            state,
            applied_revision: self.applied_revision(),
            synced,
            connected,
            stale,
        }
    }

    /// Notes that etcd answered.
    fn contact(&self) {
        *self.last_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn since_contact(&self) -> Option<Duration> {
        self.last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
    }

    /// Notes when a revision was first seen here (for lag in seconds).
    fn saw(&self, revision: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.back().is_none_or(|(r, _)| *r < revision) {
            seen.push_back((revision, SystemTime::now()));
            if seen.len() > 4096 {
                seen.pop_front();
            }
        }
    }

    /// How long ago the first revision after `applied` was seen here (0 if none is known).
    fn lag_seconds(&self, applied: i64) -> f64 {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .find(|(r, _)| *r > applied)
            .and_then(|(_, t)| t.elapsed().ok())
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Turns the SERVFAIL answers to misses on or off, on both paths: the fallback's switch and
    /// the XDP program's option (which passes negative answers up to the fallback). Off, the
    /// program trusts misses until `until` at the latest (with `--stale-misses servfail`).
    fn set_stale(&self, on: bool, until: Option<Instant>) -> bool {
        self.stale.set(on);
        let servfail = self.args.stale_misses == MissPolicy::Servfail;
        self.engine
            .with_fast(|fast| {
                let result = fast.config().and_then(|mut cfg| {
                    if on {
                        cfg.options |= dns_common::OPT_STALE_MISSES;
                    } else {
                        cfg.options &= !dns_common::OPT_STALE_MISSES;
                    }
                    if servfail {
                        cfg.options |= dns_common::OPT_MISSES_UNTIL;
                        if let Some(until) = until {
                            cfg.misses_until_ns = monotonic_ns(until);
                        }
                    }
                    fast.set_config(cfg)
                });
                match result {
                    Ok(()) => true,
                    Err(e) => {
                        warn!("fleet: setting the fast path's stale-misses option: {e}");
                        false
                    }
                }
            })
            .unwrap_or(true)
    }

    /// Marks the edge cut off once etcd has not answered for longer than the lease (the
    /// follower clears it when it has reconciled again).
    fn note_cut_off(&self) {
        let lease = Duration::from_secs(u64::from(self.args.lease_ttl));
        if self.since_contact().is_none_or(|d| d > lease) {
            self.connected.store(false, Ordering::Relaxed);
            if !self.cut_off.swap(true, Ordering::Relaxed) {
                warn!(edge = %self.edge_id, "fleet: cut off from etcd longer than the lease");
            }
        }
    }

    /// Sets the stale-misses state from what [`guard_misses`] describes; logs a change. One
    /// caller at a time, so the fallback's switch and the XDP option always end up alike; an
    /// option that could not be written is written again at the next call.
    fn update_stale(&self) {
        let mut written = self.stale_written.lock().unwrap_or_else(|p| p.into_inner());
        // Two guard ticks early: the guard must see the lease's end coming.
        let trusted_until = self
            .lease_surely_until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|(lease, _)| *lease == self.lease.load(Ordering::Relaxed))
            .map(|(_, until)| until - 2 * GUARD_TICK);
        let lease_holds = trusted_until.is_some_and(|t| t > Instant::now());
        let stale = self.args.stale_misses == MissPolicy::Servfail
            && (self.cut_off.load(Ordering::Relaxed)
                || !lease_holds
                || self.applied_revision() < self.misses_from.load(Ordering::Relaxed));
        // The XDP program stops trusting misses at that time by itself, should this daemon
        // die with the program left answering (`--keep-xdp`): written as the lease moves.
        let trusted_until = if stale { None } else { trusted_until };
        if *written == Some((stale, trusted_until)) {
            return;
        }
        if stale != self.stale.is_set() {
            if stale {
                warn!(edge = %self.edge_id, "fleet: not registered or not caught up with etcd; misses in our zones are answered SERVFAIL");
            } else {
                info!(edge = %self.edge_id, revision = self.applied_revision(), "fleet: registered and caught up; misses answered normally");
            }
        }
        *written = self
            .set_stale(stale, trusted_until)
            .then_some((stale, trusted_until));
    }

    /// The earliest the current lease `lease` can run out, by etcd's count: `ttl` seconds from
    /// when the renewal (or grant) etcd answered was sent. [`Fleet::lease_renewed`] keeps the
    /// latest instead.
    fn lease_surely_holds(&self, lease: i64, ttl: i64, sent: Instant) {
        let until = sent + Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
        let mut held = self
            .lease_surely_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match &mut *held {
            Some((l, t)) if *l == lease => *t = (*t).max(until),
            other => *other = Some((lease, until)),
        }
    }

    /// etcd renewed `lease` for `ttl` seconds in answer to a renewal sent at `sent` (a
    /// keep-alive, or the opening of a keep-alive stream): both bounds of when it can run out
    /// move, and a registration in doubt stands again.
    fn lease_answered(&self, lease: i64, ttl: i64, sent: Instant) {
        self.lease_renewed(lease, ttl);
        self.lease_surely_holds(lease, ttl, sent);
        self.lease_confirmed(sent);
    }

    /// This edge registered at `revision`.
    fn registered(&self, revision: i64) {
        *self.doubt.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.misses_from.store(revision, Ordering::Relaxed);
        self.misses_changed.notify_one();
    }

    /// This edge's registration is gone (its lease was lost or revoked). Returns the revision
    /// it was made at (`NOT_REGISTERED` if none).
    fn unregistered(&self) -> i64 {
        let was = self.misses_from.swap(NOT_REGISTERED, Ordering::Relaxed);
        // At once rather than at the guard's next turn: a revoke may follow.
        self.update_stale();
        self.misses_changed.notify_one();
        was
    }

    /// A revoke of the registration's lease (see [`Fleet::unregistered`]) may not have
    /// happened: the registration made at `revision` stands again once etcd renews the lease
    /// after this ([`Fleet::lease_confirmed`]), and is gone for good if it doesn't.
    fn registration_in_doubt(&self, revision: i64) {
        if revision != NOT_REGISTERED {
            *self.doubt.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((revision, Instant::now()));
        }
    }

    /// etcd renewed the current lease for a renewal sent at `sent`.
    fn lease_confirmed(&self, sent: Instant) {
        let mut doubt = self.doubt.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((revision, since)) = *doubt {
            if sent > since {
                *doubt = None;
                let _ = self.misses_from.compare_exchange(
                    NOT_REGISTERED,
                    revision,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                self.misses_changed.notify_one();
            }
        }
    }

    /// A write waits for the registrations: keeps the registry watch running (starting it).
    fn want_edges(&self) {
        *self
            .edges_wanted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        if !self.edges_watching.load(Ordering::Relaxed) {
            self.edges_wanted.notify_one();
        }
    }

    /// No write has wanted the registrations for a while.
    fn edges_idle(&self) -> bool {
        self.edges_wanted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() >= registry::WATCH_IDLE)
    }

    /// Brings [`Fleet::behind`] and [`Fleet::edges`] up to date with etcd (one read when the
    /// registry watch isn't running).
    pub async fn refresh_edges(&self) {
        registry::fresh(self).await;
    }

    /// The live edges that have not applied `revision` yet.
    pub fn behind(&self, revision: i64) -> Vec<String> {
        registry::behind(self, &self.edges_tx.borrow(), revision)
    }

    pub fn ack_stats(&self) -> &AckStats {
        &self.acks.stats
    }

    /// The edges as the registry sees them, with lags against the newest applied revision.
    pub fn edges(&self) -> EdgeView {
        registry::view(self)
    }

    /// [`Fleet::edges`], each edge's last contact read from its lease (a request per edge).
    pub async fn edges_with_contact(&self) -> EdgeView {
        registry::view_with_contact(self).await
    }
}

/// How long after applying a revision the local copy is made durable: revisions that come
/// meanwhile share the one fsync.
const FLUSH_DELAY: Duration = Duration::from_millis(200);

/// Makes the local copy durable: the follower's revisions don't wait for the disk (the copy is
/// etcd's, and a commit per revision with fsync on every edge is the slowest step between etcd
/// and the maps), so this stores the small ones that wait and flushes them all [`FLUSH_DELAY`]
/// after a revision is applied, and once more when the edge stops. A crash loses at most that
/// much of the copy, never its consistency: the store holds the data and its revision
/// together, as of the last flush, and the edge catches up from etcd when it starts.
async fn flush_copy(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let flush = |fleet: Arc<Fleet>| async move {
        // After the commits under way (the engine stores a revision after serving it).
        if let Err(e) = fleet.engine.flush_copy().await {
            warn!(edge = %fleet.edge_id, "fleet: making the local copy durable: {}", crate::error_chain(&e));
        }
    };
    let mut applied = fleet.applied_tx.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            changed = applied.changed() => if changed.is_err() { break },
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(FLUSH_DELAY) => {}
        }
        applied.mark_unchanged();
        flush(fleet.clone()).await;
    }
    flush(fleet).await;
}

/// `misses_from` while this edge holds no registration.
const NOT_REGISTERED: i64 = i64::MAX;

/// Keeps the stale-misses state (with `--stale-misses servfail`) true to what writes wait for.
///
/// A write returns 200 once every edge registered when it committed has applied it: an edge
/// that was not registered (stopped, cut off past its lease, or not yet registered again) was
/// not waited for, and its "no such name" may be wrong. So misses are answered from this
/// edge's data only while it holds a registration made at revision R, its lease surely still
/// holds, and it has applied every revision up to R: the registration's transaction also puts
/// a key the follower's watch sees in order with the data (`Keys::sync`), so the applied
/// revision reaches R as soon as every data revision before it is in. Every write after R
/// waits for this edge.
async fn guard_misses(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let mut applied = fleet.applied_tx.subscribe();
    // Also notices a lease running out, or etcd's silence, by the clock.
    let mut tick = tokio::time::interval(GUARD_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = fleet.misses_changed.notified() => {}
            changed = applied.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        fleet.note_cut_off();
        fleet.update_stale();
    }
}

/// How often [`guard_misses`] looks at the lease's time.
const GUARD_TICK: Duration = Duration::from_millis(250);

/// The file in the data directory holding its token.
const INSTANCE_FILE: &str = "fleet-edge-token";

/// The data directory's token, made on first use. One directory is one daemon at a time (its
/// store is locked), so the token tells this edge's own earlier registration from another's.
fn instance_token(dir: &std::path::Path) -> Result<String, FleetError> {
    let path = dir.join(INSTANCE_FILE);
    let error = |source| FleetError::Instance {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    let mut random = [0u8; 16];
    crate::random_bytes(&mut random).map_err(error)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    // Written whole or not at all: a torn token would not match the registration it made.
    let tmp = dir.join(format!("{INSTANCE_FILE}.tmp"));
    std::fs::write(&tmp, &token)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(error)?;
    Ok(token)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "edge".into())
}

/// `at` on the kernel's CLOCK_MONOTONIC in nanoseconds, as the XDP program's
/// `bpf_ktime_get_ns` counts (`Instant` is that clock too, but doesn't say its value).
fn monotonic_ns(at: Instant) -> u64 {
    let now_ns = crate::clock_ns(libc::CLOCK_MONOTONIC);
    let now = Instant::now();
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    if at >= now {
        now_ns.saturating_add(nanos(at - now))
    } else {
        now_ns.saturating_sub(nanos(now - at))
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
