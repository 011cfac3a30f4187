//! A keep-alive HTTP/1.1 client for the update API, for load loops (the benchmark uses it too):
//! thousands of requests without a `curl` process each. Use it on a thread that has entered the
//! server namespace ([`crate::enter_netns`]), where the API listens on the namespace's loopback.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::dns_client::tcp_connect;

/// A keep-alive HTTP/1.1 client for the API (JSON bodies), reconnecting when the server closes.
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

    /// One request; `Err` for transport errors (connection refused, reset, timeout).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        self.request_typed(method, path, "application/json", body)
    }

    /// [`Http::request`] with a body of another content type (zone files are `text/dns`).
    pub fn request_typed(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(tcp_connect(self.addr, self.timeout)?));
        }
        let r = self.exchange(method, path, content_type, body);
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let conn = self.conn.as_mut().expect("connected");
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
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
