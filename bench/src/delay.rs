//! A delaying relay, for distance this kernel can't simulate (it has no netem): TCP and UDP
//! forwarded from a listening address to a target, every byte held `delay` in each direction.
//!
//! One relay set runs on a thread of its own that entered a network namespace first, with a
//! current-thread tokio runtime: every socket it opens (listening and outgoing) is created on
//! that thread, so in that namespace. The relay accepts a TCP connection at once (it is local),
//! so to charge the handshake's round trip the first bytes of a connection go out no earlier than
//! three one-way delays after the accept, as on a real path (SYN, SYN-ACK, then the data).
//! UDP datagrams are relayed through one outgoing socket per client address. Dropping the
//! [`Relays`] stops the runtime and closes every socket.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{mpsc, Arc},
    thread,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{tcp, TcpListener, TcpStream, UdpSocket},
    sync::{mpsc as tmpsc, oneshot, Mutex},
    time::{sleep_until, Instant},
};

/// One relay: `listen` (TCP and UDP) to `target`.
#[derive(Clone, Copy, Debug)]
pub struct Relay {
    pub listen: SocketAddr,
    pub target: SocketAddr,
}

/// Running relays; stopped on drop.
pub struct Relays {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Relays {
    /// Starts `relays` in namespace `ns` (its `ip netns` name), each direction delayed by
    /// `delay`. Returns once every listener is bound.
    pub fn start(ns: &str, relays: &[Relay], delay: Duration) -> Result<Relays> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let ns = ns.to_owned();
        let relays = relays.to_vec();
        let thread = thread::spawn(move || {
            let r = (|| -> Result<tokio::runtime::Runtime> {
                testkit::enter_netns(&ns)?;
                Ok(tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?)
            })();
            let rt = match r {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                let mut bound = Vec::new();
                for r in &relays {
                    let tcp = TcpListener::bind(r.listen).await;
                    let udp = UdpSocket::bind(r.listen).await;
                    match (tcp, udp) {
                        (Ok(t), Ok(u)) => bound.push((t, Arc::new(u), r.target)),
                        (Err(e), _) | (_, Err(e)) => {
                            let _ = ready_tx.send(Err(anyhow::anyhow!("bind {}: {e}", r.listen)));
                            return;
                        }
                    }
                }
                for (t, u, target) in bound {
                    tokio::spawn(tcp_accept(t, target, delay));
                    tokio::spawn(udp_relay(u, target, delay));
                }
                let _ = ready_tx.send(Ok(()));
                let _ = stopped.await;
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the relay thread did not start")??;
        Ok(Relays {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn tcp_accept(listener: TcpListener, target: SocketAddr, delay: Duration) {
    while let Ok((client, _)) = listener.accept().await {
        let accepted = Instant::now();
        tokio::spawn(async move {
            // The upstream connection is made at once; what the handshake costs is charged
            // through the first bytes' earliest departure (see the module docs).
            let Ok(upstream) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (ur, uw) = upstream.into_split();
            let first = accepted + 3 * delay;
            tokio::spawn(pipe(cr, uw, delay, first));
            tokio::spawn(pipe(ur, cw, delay, accepted));
        });
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (in order), and not
/// before `not_before`.
async fn pipe(
    mut from: tcp::OwnedReadHalf,
    mut to: tcp::OwnedWriteHalf,
    delay: Duration,
    not_before: Instant,
) {
    let (tx, mut rx) = tmpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            sleep_until(at).await;
            if to.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let at = (Instant::now() + delay).max(not_before);
                if tx.send((at, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn udp_relay(sock: Arc<UdpSocket>, target: SocketAddr, delay: Duration) {
    let upstreams: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65535];
    while let Ok((n, client)) = sock.recv_from(&mut buf).await {
        let data = buf[..n].to_vec();
        let up = {
            let mut map = upstreams.lock().await;
            match map.get(&client) {
                Some(u) => u.clone(),
                None => {
                    let bind: SocketAddr = if target.is_ipv4() {
                        "0.0.0.0:0".parse().expect("address")
                    } else {
                        "[::]:0".parse().expect("address")
                    };
                    let Ok(u) = UdpSocket::bind(bind).await else {
                        continue;
                    };
                    if u.connect(target).await.is_err() {
                        continue;
                    }
                    let u = Arc::new(u);
                    map.insert(client, u.clone());
                    // Answers go back to this client, delayed too.
                    let (back, down) = (u.clone(), sock.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65535];
                        while let Ok(n) = back.recv(&mut buf).await {
                            let data = buf[..n].to_vec();
                            let down = down.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = down.send_to(&data, client).await;
                            });
                        }
                    });
                    u
                }
            }
        };
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = up.send(&data).await;
        });
    }
}
