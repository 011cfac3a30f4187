//! Operator commands (`edgedns record ...`, `edgedns zone ...`, `edgedns stats`): each is one or
//! a few calls to a running server's API, so they go through the same checks and the same write
//! path as any other client. A non-2xx answer is an error carrying the API's reason, which
//! `main` turns into exit status 1.

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    body::{Body, Bytes, Frame, SizeHint},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
    Method, Request, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::{
    api::{JSON, ZONE_FILE},
    zonefile::{self, presentation},
};

/// Where the API is and how to authenticate to it.
#[derive(clap::Args, Clone, Debug)]
pub struct ApiArgs {
    /// The server's API (`serve --api-listen`): an address (`127.0.0.1:8053`) or a URL
    /// (`http://edge1.example:8053`).
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:8053",
        env = "EDGEDNS_API",
        value_parser = parse_api
    )]
    pub api: SocketAddr,
    /// File holding the API token (`serve --api-token-file`).
    #[arg(long, global = true, env = "EDGEDNS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// `--api`: `host:port`, or `http://host[:port][/]` (port 80 by default, as in any http URL),
/// resolved to the first address the name has.
pub fn parse_api(s: &str) -> Result<SocketAddr, String> {
    let (authority, default_port) = match s.split_once("://") {
        None => (s, None),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => {
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if rest.contains(['/', '?', '#']) {
                return Err(format!("{s}: give the API's root URL, without a path"));
            }
            (rest, Some(80))
        }
        Some((scheme, _)) => {
            return Err(format!(
                "{s}: {scheme} is not supported: the API speaks plain HTTP (put TLS in front of \
                 it and use an http:// URL or an address from behind the proxy)"
            ))
        }
    };
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // A name, or an IPv6 literal in brackets without a port; `host:port` unless a URL's
    // default port applies.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.ends_with(':') && port.parse::<u16>().is_ok());
    let with_port = match (has_port, default_port) {
        (true, _) => authority.to_owned(),
        (false, Some(port)) => format!("{authority}:{port}"),
        (false, None) => return Err(format!("{s}: give host:port or an http:// URL")),
    };
    use std::net::ToSocketAddrs as _;
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: the name has no address"))
}

#[derive(clap::Subcommand, Debug)]
pub enum RecordCommand {
    /// Replace the RRset of TYPE at NAME with VALUEs (one record each). NAME is relative to
    /// the zone, fully qualified, or @; names inside values are absolute. A TXT value is the
    /// text itself.
    Set {
        zone: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
        #[arg(long)]
        ttl: u32,
        #[arg(required = true, allow_hyphen_values = true)]
        values: Vec<String>,
    },
    /// Delete the RRset of TYPE at NAME.
    Delete {
        zone: String,
        name: String,
        #[arg(value_name = "TYPE")]
        rtype: String,
    },
    /// List every RRset of the zone (all pages).
    List {
        zone: String,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum ZoneCommand {
    /// Create a zone with its name servers and default SOA settings.
    Create {
        zone: String,
        /// Name servers of the apex NS set (the first is the SOA MNAME).
        #[arg(long, required = true, num_args = 1..)]
        ns: Vec<String>,
        /// SOA MINIMUM: how long resolvers cache "no such name" (default 30).
        #[arg(long)]
        negative_ttl: Option<u32>,
    },
    /// List the zones with their serials and sizes.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a zone's SOA settings, name servers and counts.
    Show { zone: String },
    /// Delete a zone and all its records.
    Delete { zone: String },
    /// Replace a zone's contents with a master file (RFC 1035), in one change. The file is
    /// checked here first, so errors name it and the line.
    Import { zone: String, file: PathBuf },
    /// Print a zone as a master file (imports back to the same data).
    Export { zone: String },
}

/// A minimal HTTP/1.1 client for the local API: one connection per request.
pub struct Client {
    addr: SocketAddr,
    token: Option<String>,
}

/// An API answer.
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let token = match &args.token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the API token file {}", path.display()))?;
                let t = text.trim();
                if t.is_empty() {
                    bail!("the API token file {} is empty", path.display());
                }
                Some(t.to_string())
            }
        };
        Ok(Self {
            addr: args.api,
            token,
        })
    }

    /// Sends one request; `body` is `(content type, bytes)`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Reply> {
        let (ctype, bytes) = match body {
            Some((ctype, bytes)) => (Some(ctype), bytes),
            None => (None, Vec::new()),
        };
        self.send_body(method, path, ctype, Full::new(Bytes::from(bytes)))
            .await
    }

    /// Sends one request with `body` as it comes (a large upload goes out in pieces, as the
    /// connection takes them).
    pub async fn send_body<B>(
        &self,
        method: Method,
        path: &str,
        ctype: Option<&str>,
        body: B,
    ) -> anyhow::Result<Reply>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let addr = self.addr;
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| {
                format!("connecting to the API at {addr} (is `edgedns serve` running?)")
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP handshake with {addr}"))?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, addr.to_string());
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(ctype) = ctype {
            req = req.header(CONTENT_TYPE, ctype);
        }
        let req = req.body(body).context("building the request")?;
        let resp = sender
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path} at {addr}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?
            .to_bytes();
        conn.abort();
        Ok(Reply { status, body })
    }

    /// Sends a request and returns the JSON answer, or fails with the API's reason.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let body = body.map(|b| (JSON, b.to_string().into_bytes()));
        let reply = self.send(method.clone(), path, body).await?;
        let reply = ok(reply, &method, path)?;
        serde_json::from_slice(&reply.body)
            .with_context(|| format!("the answer to {method} {path} is not JSON"))
    }
}

/// A request body of bytes already in memory, handed to the connection one [`Upload::CHUNK`]
/// at a time so that a [`Meter`] can follow it. Its exact length goes out as `Content-Length`
/// (the server knows what is coming; a 413 from a server that stops reading at its limit ends
/// the upload early).
struct Upload {
    data: Bytes,
    sent: usize,
    meter: Option<Meter>,
}

impl Upload {
    const CHUNK: usize = 64 * 1024;

    fn new(data: Bytes, meter: Option<Meter>) -> Self {
        Self {
            data,
            sent: 0,
            meter,
        }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let total = this.data.len();
        if this.sent >= total {
            return Poll::Ready(None);
        }
        let end = total.min(this.sent + Self::CHUNK);
        let chunk = this.data.slice(this.sent..end);
        this.sent = end;
        // The last piece closes the bar: hyper asks `is_end_stream` and polls no further.
        if end == total {
            if let Some(m) = this.meter.take() {
                m.finish(total as u64);
            }
        } else if let Some(m) = &mut this.meter {
            m.update(end as u64, total as u64);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact((self.data.len() - self.sent) as u64)
    }
}

/// An upload's progress bar on stderr (only made when stderr is a terminal): bytes sent of
/// the total, and the rate, redrawn in place at most ten times a second.
struct Meter {
    started: Instant,
    drawn: Option<Instant>,
}

impl Meter {
    const REDRAW: Duration = Duration::from_millis(100);

    fn new() -> Self {
        Self {
            started: Instant::now(),
            drawn: None,
        }
    }

    fn update(&mut self, sent: u64, total: u64) {
        let now = Instant::now();
        if self
            .drawn
            .is_some_and(|t| now.duration_since(t) < Self::REDRAW)
        {
            return;
        }
        self.drawn = Some(now);
        let line = meter_line(sent, total, now.duration_since(self.started));
        let _ = write!(std::io::stderr(), "\r{line}");
    }

    fn finish(self, total: u64) {
        let line = meter_line(total, total, self.started.elapsed());
        let _ = writeln!(std::io::stderr(), "\r{line}");
    }
}

/// "uploading: 12.0/80.0 MiB (15%), 40.0 MiB/s".
fn meter_line(sent: u64, total: u64, elapsed: Duration) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let pct = (sent * 100).checked_div(total).unwrap_or(100);
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        sent as f64 / MIB / secs
    } else {
        0.0
    };
    format!(
        "uploading: {:.1}/{:.1} MiB ({pct}%), {rate:.1} MiB/s",
        sent as f64 / MIB,
        total as f64 / MIB
    )
}

/// `reply` if it is 2xx, else an error with the API's reason (and the field it names).
fn ok(reply: Reply, method: &Method, path: &str) -> anyhow::Result<Reply> {
    if reply.status.is_success() {
        return Ok(reply);
    }
    let reason = match serde_json::from_slice::<Value>(&reply.body) {
        Ok(v) => {
            let mut r = v["error"].as_str().unwrap_or("").to_string();
            if let Some(f) = v["field"].as_str() {
                r.push_str(&format!(" (field {f})"));
            }
            r
        }
        Err(_) => String::from_utf8_lossy(&reply.body).trim().to_string(),
    };
    bail!("{method} {path}: {}: {reason}", reply.status)
}

/// One path segment, percent-encoded (RFC 3986 §3.3: what isn't unreserved or a sub-delim).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' | b'*' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Writes to stdout. A closed pipe (`edgedns zone export Z | head`) ends the output quietly
/// instead of panicking as `println!` would.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    emit(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// Prints rows as left-aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        text.push_str(s.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    emit(&text)
}

/// `edgedns stats`: the XDP and fallback counters.
pub async fn stats(api: &ApiArgs) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    print_json(&client.json(Method::GET, "/v1/stats", None).await?)
}

pub async fn record(api: &ApiArgs, cmd: RecordCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    match cmd {
        RecordCommand::Set {
            zone,
            name,
            rtype,
            ttl,
            values,
        } => {
            let path = format!(
                "/v1/zones/{}/records/{}/{}",
                seg(&zone),
                seg(&name),
                seg(&rtype)
            );
            let body = json!({ "ttl": ttl, "records": values });
            print_json(&client.json(Method::PUT, &path, Some(&body)).await?)
        }
        RecordCommand::Delete { zone, name, rtype } => {
            let path = format!(
                "/v1/zones/{}/records/{}/{}",
                seg(&zone),
                seg(&name),
                seg(&rtype)
            );
            print_json(&client.json(Method::DELETE, &path, None).await?)
        }
        RecordCommand::List { zone, json } => {
            let mut rrsets = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/v1/zones/{}/records?limit=1000", seg(&zone));
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={}", seg(c)));
                }
                let page = client.json(Method::GET, &path, None).await?;
                rrsets.extend(page["records"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            if json {
                return print_json(&json!({ "records": rrsets }));
            }
            let mut rows = Vec::new();
            for s in &rrsets {
                for r in s["records"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s["name"].as_str().unwrap_or("").to_string(),
                        s["ttl"].to_string(),
                        s["type"].as_str().unwrap_or("").to_string(),
                        r.as_str().unwrap_or("").to_string(),
                    ]);
                }
            }
            print_table(&["NAME", "TTL", "TYPE", "DATA"], &rows)
        }
    }
}

pub async fn zone(api: &ApiArgs, cmd: ZoneCommand) -> anyhow::Result<()> {
    let client = Client::new(api)?;
    match cmd {
        ZoneCommand::Create {
            zone,
            ns,
            negative_ttl,
        } => {
            let mut body = json!({ "zone": zone, "ns": ns });
            if let Some(n) = negative_ttl {
                body["negative_ttl"] = json!(n);
            }
            print_json(&client.json(Method::POST, "/v1/zones", Some(&body)).await?)
        }
        ZoneCommand::List { json } => {
            let v = client.json(Method::GET, "/v1/zones", None).await?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v["zones"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|z| {
                    vec![
                        z["zone"].as_str().unwrap_or("").to_string(),
                        z["serial"].to_string(),
                        z["names"].to_string(),
                        z["rrsets"].to_string(),
                        z["records"].to_string(),
                    ]
                })
                .collect();
            print_table(&["ZONE", "SERIAL", "NAMES", "RRSETS", "RECORDS"], &rows)
        }
        ZoneCommand::Show { zone } => {
            let path = format!("/v1/zones/{}", seg(&zone));
            print_json(&client.json(Method::GET, &path, None).await?)
        }
        ZoneCommand::Delete { zone } => {
            let path = format!("/v1/zones/{}", seg(&zone));
            print_json(&client.json(Method::DELETE, &path, None).await?)
        }
        ZoneCommand::Import { zone, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // No size check here: the server's limit (`serve --zonefile-max-bytes`, 64 MiB by
            // default) is the one that counts, and its 413 says what it is.
            // Check it here first: errors then name the file as the operator knows it.
            let apex = presentation::parse_name(&zone, None)
                .map_err(|e| anyhow::anyhow!("bad zone name {zone:?}: {e}"))?;
            let zf = zonefile::parse(&file.display().to_string(), &text, Some(&apex))?;
            let source = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let path = format!("/v1/zones/{}/zonefile?source={}", seg(&zone), seg(&source));
            // One request whatever the size, its body handed over in pieces with a progress
            // bar for a person watching. The bytes sent are the ones just checked, not a
            // second read of a file that may have changed since.
            let meter = std::io::stderr().is_terminal().then(Meter::new);
            let upload = Upload::new(Bytes::from(text.into_bytes()), meter);
            let reply = client
                .send_body(Method::PUT, &path, Some(ZONE_FILE), upload)
                .await?;
            let reply = ok(reply, &Method::PUT, &path)?;
            let v: Value = serde_json::from_slice(&reply.body).context("the answer is not JSON")?;
            emit(&format!(
                "{}: {} records from {}; serial {}{}\n",
                v["zone"].as_str().unwrap_or(&zone),
                zf.record_count(),
                file.display(),
                v["serial"],
                if v["changed"] == json!(false) {
                    " (unchanged: the zone already held this data)"
                } else {
                    ""
                }
            ))
        }
        ZoneCommand::Export { zone } => {
            let path = format!("/v1/zones/{}/zonefile", seg(&zone));
            let reply = ok(
                client.send(Method::GET, &path, None).await?,
                &Method::GET,
                &path,
            )?;
            emit(&String::from_utf8_lossy(&reply.body))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_takes_addresses_and_http_urls() {
        use super::parse_api;
        let ok = |s: &str| parse_api(s).unwrap_or_else(|e| panic!("{e}")).to_string();
        assert_eq!(ok("127.0.0.1:8053"), "127.0.0.1:8053");
        assert_eq!(ok("http://127.0.0.1:8053"), "127.0.0.1:8053");
        assert_eq!(ok("HTTP://127.0.0.1:8053/"), "127.0.0.1:8053");
        assert_eq!(ok("http://[::1]:9"), "[::1]:9");
        assert_eq!(ok("http://127.0.0.1"), "127.0.0.1:80");
        assert_eq!(ok("http://[::1]"), "[::1]:80");
        assert!(ok("localhost:8053").ends_with(":8053"));
        assert!(ok("http://localhost").ends_with(":80"));
        for bad in [
            "https://127.0.0.1:8053",
            "http://127.0.0.1:8053/v1",
            "127.0.0.1",
            "",
        ] {
            assert!(parse_api(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn upload_meter_line() {
        assert_eq!(
            meter_line(12 * 1024 * 1024, 80 * 1024 * 1024, Duration::from_secs(2)),
            "uploading: 12.0/80.0 MiB (15%), 6.0 MiB/s"
        );
        assert_eq!(
            meter_line(0, 0, Duration::ZERO),
            "uploading: 0.0/0.0 MiB (100%), 0.0 MiB/s"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("www.t.example.net."), "www.t.example.net.");
        assert_eq!(seg("@"), "@");
        assert_eq!(seg("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }
}

/// `edgedns fleet`: a fleet of edges on etcd.
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Push a single host's store into an empty etcd prefix, so that edges started with
    /// `serve --etcd` serve its zones. Refused if the prefix holds data.
    Seed {
        #[command(flatten)]
        etcd: crate::fleet::EtcdArgs,
        /// The single host's data directory (stop its daemon first).
        #[arg(long, default_value = "/var/lib/edgedns")]
        data_dir: PathBuf,
    },
    /// Print the fleet's edges, their applied revisions and lag (any edge's API answers).
    Status {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn fleet(api: &ApiArgs, cmd: FleetCommand) -> anyhow::Result<()> {
    match cmd {
        FleetCommand::Seed { etcd, data_dir } => {
            if etcd.etcd.is_empty() {
                bail!("fleet seed needs --etcd URL[,URL...]");
            }
            let seeded = crate::fleet::seed(&etcd, &data_dir)
                .await
                .map_err(|e| anyhow::anyhow!(crate::error_chain(&e)))?;
            println!(
                "seeded {} zones ({} record sets) into {} at revision {}",
                seeded.zones, seeded.rrsets, etcd.etcd_prefix, seeded.revision
            );
            Ok(())
        }
        FleetCommand::Status { json } => {
            let client = Client::new(api)?;
            let view = client.json(Method::GET, "/v1/edges", None).await?;
            if json {
                return print_json(&view);
            }
            let mut text = format!(
                "revision {}\n{:<20} {:<22} {:<10} {:<10} {:>10} {:>6} {:>8} {:>12}\n",
                view["revision"],
                "EDGE",
                "ADDRESS",
                "REGION",
                "VERSION",
                "APPLIED",
                "LAG",
                "LAG_S",
                "CONTACT_AGO"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            for e in view["edges"].as_array().into_iter().flatten() {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                let ago = e["last_contact"]
                    .as_f64()
                    .map_or(0.0, |t| (now - t).max(0.0));
                text.push_str(&format!(
                    "{:<20} {:<22} {:<10} {:<10} {:>10} {:>6} {:>8.1} {:>11.1}s\n",
                    s("id"),
                    s("address"),
                    s("region"),
                    s("version"),
                    e["applied_revision"],
                    e["lag_revisions"],
                    e["lag_seconds"].as_f64().unwrap_or(0.0),
                    ago
                ));
            }
            emit(&text)
        }
    }
}
