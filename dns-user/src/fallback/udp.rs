//! DNS over UDP.

use std::{sync::Arc, time::Duration};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Fallback, Transport, TCP_MAX};

/// Serves DNS over UDP on `socket` until `shutdown` is cancelled.
pub async fn serve_udp(socket: UdpSocket, fallback: Arc<Fallback>, shutdown: CancellationToken) {
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
        let reply = fallback.answer(query, Transport::Udp, peer.ip());
        let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) else {
            continue;
        };
        if let Err(e) = socket.send_to(&msg, peer).await {
            debug!(%peer, "fallback UDP send: {e}");
        }
    }
    info!("fallback UDP stopped");
}
