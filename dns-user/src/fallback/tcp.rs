//! DNS over TCP (RFC 7766), with the connection slots shared fairly between clients.
//!
//! RFC 7766 §6.2.3: "Servers MAY allow idle connections to remain open for longer periods as
//! resources permit", and "Servers MAY use zero timeouts when they are experiencing heavy load or
//! are under attack". So an idle connection keeps its slot until [`FallbackConfig::
//! tcp_idle_timeout`] only while nobody needs it: when all [`FallbackConfig::tcp_max_connections`]
//! slots are taken, a new connection closes the idlest connection of the client that holds the
//! most, and a client at its [`FallbackConfig::tcp_max_per_source`] closes its own idlest. One
//! client holding every slot with keep-alive connections thus costs the others nothing but its
//! own connections. A connection in the middle of a message is never closed this way; when every
//! slot is in that state, the new connection is closed instead.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{atomic::Ordering, Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[cfg(doc)]
use super::FallbackConfig;
use super::{stats::FallbackStats, Answer, Fallback, Transport};

/// Serves DNS over TCP (RFC 7766) on `listeners` until `shutdown` is cancelled, then waits for
/// the open connections to finish the message they are on. The connection slots are shared by
/// all the listeners.
///
/// Several queries per connection are answered in order, pipelined ones included. A connection
/// closes after [`FallbackConfig::tcp_idle_timeout`] without a query, or earlier when its slot
/// is needed (see the module documentation).
pub async fn serve_tcp(
    listeners: Vec<TcpListener>,
    fallback: Arc<Fallback>,
    shutdown: CancellationToken,
) {
    let cfg = fallback.config();
    let slots = Arc::new(Slots::new(cfg.tcp_max_connections, cfg.tcp_max_per_source));
    let mut connections = JoinSet::new();
    // One accept loop per listener, feeding this one, which holds the slots.
    let (tx, mut accepted) = tokio::sync::mpsc::channel(64);
    let mut accepts = JoinSet::new();
    for listener in listeners {
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "fallback serving TCP");
        }
        accepts.spawn(accept(listener, tx.clone(), shutdown.clone()));
    }
    drop(tx);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = accepted.recv() => match r {
                Some(v) => v,
                None => break,
            },
        };
        while connections.try_join_next().is_some() {}
        let Some(slot) = slots.admit(Source::of(peer.ip()), &shutdown, fallback.stats()) else {
            fallback
                .stats()
                .tcp_rejected
                .fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "fallback TCP: every slot is in the middle of a message, closing");
            continue;
        };
        let fallback = fallback.clone();
        connections.spawn(async move {
            if let Err(e) = connection(stream, peer, &fallback, &slot).await {
                debug!(%peer, "fallback TCP connection: {e}");
            }
        });
    }
    drop(accepted);
    while accepts.join_next().await.is_some() {}
    while connections.join_next().await.is_some() {}
    info!("fallback TCP stopped");
}

/// Accepts connections on `listener` and hands them on until `shutdown` (or the receiver is
/// gone); the listener is closed when it returns.
async fn accept(
    listener: TcpListener,
    to: tokio::sync::mpsc::Sender<(TcpStream, SocketAddr)>,
    shutdown: CancellationToken,
) {
    loop {
        let conn = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!("fallback TCP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if to.send(conn).await.is_err() {
            return;
        }
    }
}

/// Why a TCP connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    #[error("timed out in the middle of a message")]
    Timeout,
    #[error("answering the query failed (panicked)")]
    Answer,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    fallback: &Arc<Fallback>,
    slot: &Slot,
) -> Result<(), ConnError> {
    let cfg = fallback.config();
    // Responses go out as one write each; don't hold them back for coalescing.
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.split();
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            // Shutdown, or the slot was given to another connection.
            () = slot.close.cancelled() => return Ok(()),
            r = timeout(cfg.tcp_idle_timeout, rd.read_exact(&mut len)) => r,
        };
        match read {
            // RFC 7766 §6.2.3: idle connections are closed by the server.
            Err(_) => {
                debug!(%peer, "fallback TCP: idle, closing");
                return Ok(());
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        if !slot.busy() {
            debug!(%peer, "fallback TCP: slot given to another connection, closing");
            return Ok(());
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        timeout(cfg.tcp_io_timeout, rd.read_exact(&mut query))
            .await
            .map_err(|_| ConnError::Timeout)??;
        // Answered on the blocking pool: a zone transfer encodes the whole zone, or reads the
        // journal from the store, and must not hold up the runtime's workers (the API, the
        // fleet's watch) while it does.
        let answer = {
            let fallback = Arc::clone(fallback);
            let ip = peer.ip();
            tokio::task::spawn_blocking(move || fallback.answer(&query, Transport::Tcp, ip)).await
        };
        // An update is answered in turn once it has landed: later queries on this connection
        // wait for it, as their answers may depend on it; other connections don't.
        let reply = match answer.map_err(|_| ConnError::Answer)? {
            Answer::Now(reply) => reply,
            Answer::Update(pending) => fallback.apply_update(pending).await,
        };
        for msg in reply.map(|r| r.messages).unwrap_or_default() {
            let Ok(len) = u16::try_from(msg.len()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(msg.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&msg);
            timeout(cfg.tcp_io_timeout, wr.write_all(&frame))
                .await
                .map_err(|_| ConnError::Timeout)??;
        }
        slot.idle();
    }
}

/// A client, for the per-client limit: an IPv4 address, or an IPv6 /64 (a host usually has a
/// whole /64 to take addresses from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Source {
    V4(Ipv4Addr),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4),
                None => Self::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// The open connections, by slot.
struct Slots {
    max: usize,
    per_source: usize,
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    next_id: u64,
    conns: HashMap<u64, Conn>,
    per_source: HashMap<Source, usize>,
}

struct Conn {
    source: Source,
    /// Since when the connection has waited for its next query; `None` in the middle of one.
    idle_since: Option<Instant>,
    close: CancellationToken,
}

impl Slots {
    fn new(max: usize, per_source: usize) -> Self {
        Self {
            max,
            per_source,
            state: Mutex::new(SlotState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // The state is consistent after every statement: a panic can't leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection from `source`, made by closing an idle connection if need
    /// be; `None` if every connection that would have to go is in the middle of a message.
    fn admit(
        self: &Arc<Self>,
        source: Source,
        shutdown: &CancellationToken,
        stats: &FallbackStats,
    ) -> Option<Slot> {
        let mut st = self.lock();
        let own = st.per_source.get(&source).copied().unwrap_or(0);
        if own >= self.per_source && !st.evict(stats, |c, _| (c.source == source).then_some(0)) {
            return None;
        }
        if st.conns.len() >= self.max
            && !st.evict(stats, |c, per_source| per_source.get(&c.source).copied())
        {
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        let close = shutdown.child_token();
        st.conns.insert(
            id,
            Conn {
                source,
                idle_since: Some(Instant::now()),
                close: close.clone(),
            },
        );
        *st.per_source.entry(source).or_default() += 1;
        Some(Slot {
            slots: self.clone(),
            id,
            close,
        })
    }
}

impl SlotState {
    /// Closes one idle connection: among those `weight` gives a weight, the idlest of the
    /// heaviest. False if there is none.
    fn evict(
        &mut self,
        stats: &FallbackStats,
        weight: impl Fn(&Conn, &HashMap<Source, usize>) -> Option<usize>,
    ) -> bool {
        let victim = self
            .conns
            .iter()
            .filter_map(|(id, c)| {
                let since = c.idle_since?;
                let w = weight(c, &self.per_source)?;
                // Heaviest first, then idle the longest, then the oldest connection.
                Some(((w, std::cmp::Reverse(since), std::cmp::Reverse(*id)), *id))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, id)| id);
        let Some(id) = victim else {
            return false;
        };
        if let Some(c) = self.remove(id) {
            c.close.cancel();
            stats.tcp_evicted.fetch_add(1, Ordering::Relaxed);
            debug!(source = ?c.source, "fallback TCP: closing an idle connection to make room");
        }
        true
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&c.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&c.source);
            }
        }
        Some(c)
    }
}

/// One connection's slot, given back on drop.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Cancelled at shutdown, or when the slot is given to another connection.
    close: CancellationToken,
}

impl Slot {
    /// A query has started: the connection can't be closed for another until it is answered.
    /// False if it already was.
    fn busy(&self) -> bool {
        match self.slots.lock().conns.get_mut(&self.id) {
            Some(c) => {
                c.idle_since = None;
                true
            }
            None => false,
        }
    }

    /// The query is answered: waiting for the next from now.
    fn idle(&self) {
        if let Some(c) = self.slots.lock().conns.get_mut(&self.id) {
            c.idle_since = Some(Instant::now());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use crate::zone::SharedZones;

    use hickory_proto::rr::RecordType;
    use tokio::net::TcpSocket;

    use super::{
        super::{testutil::*, FallbackConfig},
        *,
    };

    const WAIT: Duration = Duration::from_secs(5);

    /// `serve_tcp` with `cfg` on 127.0.0.1 port 0.
    async fn server(
        cfg: FallbackConfig,
    ) -> (
        SocketAddr,
        Arc<Fallback>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let fallback = Arc::new(Fallback::new(
            SharedZones::new(zones()),
            cfg,
            Arc::new(FallbackStats::new()),
        ));
        let shutdown = CancellationToken::new();
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = tcp.local_addr().expect("addr");
        let t = tokio::spawn(serve_tcp(vec![tcp], fallback.clone(), shutdown.clone()));
        (addr, fallback, shutdown, t)
    }

    /// A connection to `server` from `client` (any address in 127/8: all of it is loopback).
    async fn connect_from(client: &str, server: SocketAddr) -> TcpStream {
        let s = TcpSocket::new_v4().expect("socket");
        s.bind(format!("{client}:0").parse().expect("client address"))
            .expect("bind client");
        s.connect(server).await.expect("connect")
    }

    /// One query on `s`, answered.
    async fn answered(s: &mut TcpStream) {
        s.write_all(&frame(&query("www.example.com.", RecordType::A)))
            .await
            .expect("write");
        let r = timeout(WAIT, read_frame(s)).await.expect("answer in time");
        assert_eq!(r.answers().len(), 1);
    }

    /// The server closes `s` (in time, without sending anything).
    async fn closed(s: &mut TcpStream) {
        let mut b = [0u8; 1];
        let got = timeout(WAIT, s.read(&mut b)).await.expect("closed in time");
        assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    }

    async fn stop(shutdown: CancellationToken, t: tokio::task::JoinHandle<()>) {
        shutdown.cancel();
        timeout(WAIT, t)
            .await
            .expect("tcp stops")
            .expect("tcp task");
    }

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let src = |s: &str| Source::of(s.parse().expect("address"));
        assert_eq!(src("192.0.2.1"), src("::ffff:192.0.2.1"));
        assert_ne!(src("192.0.2.1"), src("192.0.2.2"));
        assert_eq!(src("2001:db8:1:2::1"), src("2001:db8:1:2:ffff::9"));
        assert_ne!(src("2001:db8:1:2::1"), src("2001:db8:1:3::1"));
    }

    #[tokio::test]
    async fn tcp_idle_timeout_and_connection_cap() {
        let (addr, fallback, shutdown, t) = server(FallbackConfig {
            tcp_idle_timeout: Duration::from_millis(200),
            tcp_io_timeout: Duration::from_millis(500),
            tcp_max_connections: 1,
            ..FallbackConfig::default()
        })
        .await;

        // Idle: closed by the server after the idle timeout.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        answered(&mut idle).await;
        closed(&mut idle).await;
        assert_eq!(fallback.stats().tcp_evicted(), 0);

        // The only slot is in the middle of a message: a second connection is closed at once.
        let mut first = TcpStream::connect(addr).await.expect("connect");
        answered(&mut first).await;
        let q = frame(&query("www.example.com.", RecordType::A));
        first.write_all(&q[..5]).await.expect("write");
        // The server reads the length on this single-threaded runtime as soon as the test task
        // waits; a pause is all it takes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut second = TcpStream::connect(addr).await.expect("connect");
        closed(&mut second).await;
        assert_eq!(fallback.stats().tcp_rejected(), 1);
        // The first never finishes its message: closed after the I/O timeout.
        closed(&mut first).await;

        stop(shutdown, t).await;
    }

    #[tokio::test]
    async fn a_client_at_its_limit_gives_up_its_idlest_connection() {
        let (addr, fallback, shutdown, t) = server(FallbackConfig {
            tcp_max_connections: 8,
            tcp_max_per_source: 2,
            ..FallbackConfig::default()
        })
        .await;
        let mut h0 = connect_from("127.0.0.2", addr).await;
        answered(&mut h0).await;
        let mut h1 = connect_from("127.0.0.2", addr).await;
        answered(&mut h1).await;
        let mut other = connect_from("127.0.0.3", addr).await;
        answered(&mut other).await;

        // The third from 127.0.0.2 is served; its idlest, h0, goes.
        let mut h2 = connect_from("127.0.0.2", addr).await;
        answered(&mut h2).await;
        closed(&mut h0).await;
        answered(&mut h1).await;
        answered(&mut other).await;
        assert_eq!(fallback.stats().tcp_evicted(), 1);
        assert_eq!(fallback.stats().tcp_rejected(), 0);

        stop(shutdown, t).await;
    }

    #[tokio::test]
    async fn a_full_server_closes_the_idlest_of_the_heaviest_client_first() {
        let (addr, fallback, shutdown, t) = server(FallbackConfig {
            tcp_max_connections: 4,
            tcp_max_per_source: 4,
            ..FallbackConfig::default()
        })
        .await;
        // The light client's connection is the idlest of all.
        let mut light = connect_from("127.0.0.3", addr).await;
        answered(&mut light).await;
        let mut heavy = Vec::new();
        for _ in 0..3 {
            let mut s = connect_from("127.0.0.2", addr).await;
            answered(&mut s).await;
            heavy.push(s);
        }

        // Full: a newcomer takes the heavy client's idlest slot, not the light one's.
        let mut n0 = connect_from("127.0.0.4", addr).await;
        answered(&mut n0).await;
        closed(&mut heavy[0]).await;
        // 2 heavy, 1 light, 1 newcomer: the heavy one's idlest again.
        let mut n1 = connect_from("127.0.0.4", addr).await;
        answered(&mut n1).await;
        closed(&mut heavy[1]).await;
        // Now the newcomer holds the most: its own idlest goes.
        let mut n2 = connect_from("127.0.0.4", addr).await;
        answered(&mut n2).await;
        closed(&mut n0).await;
        answered(&mut light).await;
        answered(&mut heavy[2]).await;
        answered(&mut n1).await;
        assert_eq!(fallback.stats().tcp_evicted(), 3);
        assert_eq!(fallback.stats().tcp_rejected(), 0);

        stop(shutdown, t).await;
    }
}
