//! In-process clients for load loops: a DNS-over-UDP client and a keep-alive HTTP/1.1 client,
//! each on a thread that has entered a test namespace (`setns`), so that thousands of requests
//! don't each cost a `dig` or `curl` process. The benchmark (`edgedns-bench`) uses them too.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
    serialize::binary::{BinDecodable as _, BinEncodable as _},
};

/// Moves the calling thread into network namespace `ns` (by its `ip netns` name). Sockets the
/// thread opens afterwards live there.
pub fn enter_netns(ns: &str) {
    let path = Path::new("/var/run/netns").join(ns);
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns on a valid namespace fd affects only this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// A UDP DNS client bound in the caller's (entered) namespace.
pub struct DnsClient {
    sock: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

/// What a query got: the response code (`NoError`, `NXDomain`, ...) and the A/AAAA addresses
/// in the answer, in order; or nothing in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Answer { rcode: String, addrs: Vec<String> },
    Timeout,
}

impl DnsClient {
    pub fn new(server: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind)?;
        sock.set_read_timeout(Some(timeout))?;
        Ok(Self {
            sock,
            server,
            next_id: 1,
        })
    }

    /// Sends one query and waits for its response, at most the timeout in all (responses to
    /// other ids are skipped).
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
                    let resp = match Message::from_bytes(&buf[..n]) {
                        Ok(resp) if resp.id() == id => resp,
                        _ if Instant::now() >= deadline => return Reply::Timeout,
                        _ => continue,
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

/// A bpffs mounted in the test's own (root) mount namespace. `ip netns exec` gives the daemon a
/// private /sys, so pins under its /sys/fs/bpf would vanish with it; pins here outlive it, as
/// /sys/fs/bpf does on a real host. Unmounted (pins and all) on drop.
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    pub fn mount(path: &Path) -> Self {
        std::fs::create_dir_all(path).expect("create bpffs mount point");
        let out = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount -t bpf {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Reads a file to a string, empty if missing (logs).
pub fn read_text(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}
