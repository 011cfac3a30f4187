//! In-process DNS clients: raw-bytes exchanges over UDP and TCP for the differential and client
//! tests, and [`DnsClient`], a UDP client for load loops (the benchmark uses it too), so that
//! thousands of queries don't each cost a `dig` process.
//!
//! Use them on a thread that has entered the client namespace ([`crate::enter_netns`]): a socket
//! lives in the namespace it was created in.

use std::{
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
    serialize::binary::BinDecodable as _,
};

use crate::dns_message::QuerySpec;

/// Sends `query` and returns the first datagram from `server` with the query's ID, or `None`
/// after `timeout`.
pub fn udp_exchange(
    sock: &UdpSocket,
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 65535];
    let n = udp_exchange_into(sock, server, query, timeout, &mut buf)?;
    Ok(n.map(|n| buf[..n].to_vec()))
}

/// [`udp_exchange`] into the caller's buffer (a load loop reuses one): the response's length.
fn udp_exchange_into(
    sock: &UdpSocket,
    server: SocketAddr,
    query: &[u8],
    timeout: Duration,
    buf: &mut [u8],
) -> io::Result<Option<usize>> {
    sock.send_to(query, server)?;
    let deadline = Instant::now() + timeout;
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match sock.recv_from(buf) {
            Ok((n, from)) if from == server && n >= 2 && buf[..2] == query[..2] => {
                return Ok(Some(n))
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

/// A TCP connection to `addr` with read and write timeouts and Nagle off.
pub fn tcp_connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A UDP DNS client bound in the caller's (entered) namespace.
pub struct DnsClient {
    sock: UdpSocket,
    server: SocketAddr,
    timeout: Duration,
    next_id: u16,
    buf: Vec<u8>,
}

/// What a query got: the response code (`NoError`, `NXDomain`, ...) and the A/AAAA addresses
/// in the answer, in order; a response with the query's ID that does not decode; or nothing in
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Answer { rcode: String, addrs: Vec<String> },
    Malformed(String),
    Timeout,
}

impl DnsClient {
    pub fn new(server: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        Ok(Self {
            sock: UdpSocket::bind(bind)?,
            server,
            timeout,
            next_id: 1,
            buf: vec![0u8; 4096],
        })
    }

    /// Sends one query (RD off, no OPT) and waits for its response, at most the timeout in all
    /// (datagrams with other IDs are skipped).
    pub fn query(&mut self, name: &str, rtype: RecordType) -> Reply {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let query = QuerySpec::new(id, name, u16::from(rtype))
            .with_flags(0)
            .to_wire();
        let n =
            match udp_exchange_into(&self.sock, self.server, &query, self.timeout, &mut self.buf) {
                Ok(Some(n)) => n,
                Ok(None) | Err(_) => return Reply::Timeout,
            };
        let resp = match Message::from_bytes(&self.buf[..n]) {
            Ok(resp) => resp,
            Err(e) => return Reply::Malformed(e.to_string()),
        };
        let addrs = resp
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(a.0.to_string()),
                RData::AAAA(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect();
        Reply::Answer {
            rcode: format!("{:?}", resp.response_code()),
            addrs,
        }
    }
}
