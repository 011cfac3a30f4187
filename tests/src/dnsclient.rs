//! Minimal DNS exchanges over UDP and TCP with raw message bytes, for the differential tests
//! (run them on a thread that has entered the client namespace, see
//! [`crate::wire::enter_netns`]).

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

/// Sends `query` and returns the first datagram from `server` with the query's ID, or `None`
/// after `timeout`.
pub fn udp_exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    sock.send_to(query, server)?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65535];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == server && n >= 2 && buf[..2] == query[..2] => {
                return Ok(Some(buf[..n].to_vec()))
            }
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        }
    }
}

/// One query and its response on a TCP connection (RFC 7766 length framing).
pub fn tcp_exchange(stream: &mut TcpStream, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut frame = (query.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(query);
    stream.write_all(&frame)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut msg)?;
    Ok(msg)
}

/// A TCP connection to `server` with read and write timeouts.
pub fn tcp_connect(server: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&server, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}
