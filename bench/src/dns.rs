//! In-process clients: DNS over UDP and keep-alive HTTP/1.1, used from threads that have entered
//! a namespace (no process per request).

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
    serialize::binary::{BinDecodable as _, BinEncodable as _},
};

pub struct DnsClient {
    sock: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

/// What a query got: rcode (`NoError`, `NXDomain`, ...) and the A/AAAA addresses of the answer
/// section, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Answer { rcode: String, addrs: Vec<String> },
    Timeout,
}

impl DnsClient {
    pub fn new(server: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(Self {
            sock,
            server,
            next_id: 1,
        })
    }

    pub fn query(&mut self, name: &str, rtype: RecordType) -> Reply {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut msg = Message::new();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(false)
            .add_query(Query::query(
                Name::from_ascii(name).expect("query name"),
                rtype,
            ));
        let bytes = msg.to_bytes().expect("encode query");
        if self.sock.send_to(&bytes, self.server).is_err() {
            return Reply::Timeout;
        }
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + self.sock.read_timeout().ok().flatten().unwrap_or_default();
        loop {
            match self.sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let Ok(resp) = Message::from_bytes(&buf[..n]) else {
                        continue;
                    };
                    if resp.id() != id {
                        if Instant::now() >= deadline {
                            return Reply::Timeout;
                        }
                        continue;
                    }
                    let addrs = resp
                        .answers()
                        .iter()
                        .filter_map(|r| match r.data() {
                            RData::A(a) => Some(a.0.to_string()),
                            RData::AAAA(a) => Some(a.0.to_string()),
                            _ => None,
                        })
                        .collect();
                    return Reply::Answer {
                        rcode: format!("{:?}", resp.response_code()),
                        addrs,
                    };
                }
                Err(_) => return Reply::Timeout,
            }
        }
    }
}

/// A keep-alive HTTP/1.1 client (JSON bodies), reconnecting when the server closes.
pub struct Http {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Http {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            conn: None,
            timeout,
        }
    }

    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        let r = self.exchange(method, path, body);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let conn = self.conn.as_mut().expect("connected");
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        conn.get_mut().write_all(req.as_bytes())?;
        let mut status_line = String::new();
        if conn.read_line(&mut status_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                } else if k == "connection" && v.trim().eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        let mut buf = vec![0u8; len];
        conn.read_exact(&mut buf)?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}
