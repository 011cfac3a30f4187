//! DNS over UDP.

use std::{sync::Arc, time::Duration};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Answer, Fallback, Transport, TCP_MAX};

/// Serves DNS over UDP on `socket` until `shutdown` is cancelled.
///
/// A dynamic update is applied in a task of its own, which answers once the change has landed:
/// the loop goes on answering queries meanwhile.
pub async fn serve_udp(socket: UdpSocket, fallback: Arc<Fallback>, shutdown: CancellationToken) {
    let socket = Arc::new(socket);
    if let Ok(addr) = socket.local_addr() {
        info!(%addr, "fallback serving UDP");
    }
    // Queries can be up to 64 KiB (large EDNS payloads); whatever is longer is cut by the kernel
    // and then fails to parse.
    let mut buf = vec![0u8; TCP_MAX];
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // Transient on an unconnected socket (e.g. an ICMP error for an earlier
                    // reply); pause so a persistent one can't spin the loop.
                    debug!("fallback UDP receive: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let query = buf.get(..len).unwrap_or_default();
        let reply = match fallback.answer(query, Transport::Udp, peer.ip()) {
            Answer::Now(reply) => reply,
            Answer::Update(pending) => {
                let (fallback, socket) = (fallback.clone(), socket.clone());
                tokio::spawn(async move {
                    let reply = fallback.apply_update(pending).await;
                    if let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) {
                        if let Err(e) = socket.send_to(&msg, peer).await {
                            debug!(%peer, "fallback UDP send: {e}");
                        }
                    }
                });
                continue;
            }
        };
        let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) else {
            continue;
        };
        if let Err(e) = socket.send_to(&msg, peer).await {
            debug!(%peer, "fallback UDP send: {e}");
        }
    }
    info!("fallback UDP stopped");
}
