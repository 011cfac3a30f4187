//! edgedns as the primary of a real secondary: Knot (knotd) in the client namespace follows it by
//! NOTIFY (RFC 1996) and IXFR (RFC 1995); a secondary older than the journal gets the whole zone;
//! a transfer from an address not allowed is refused.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use tests::{
    cmdline, kdig, run_timeout, NetNs, Process, TestBed, Tool, CLIENT_V4, DNS_PORT, SERVER_V4, ZONE,
};

/// Where knotd listens, in the client namespace.
const KNOT_PORT: u16 = 5301;
/// The longest a change may take to reach the secondary (it normally takes milliseconds).
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(20);
/// A second address on the client end, not in the transfer ACL.
const STRANGER_V4: &str = "10.211.0.3";
/// The journal keeps this many changes, so that a few writes make a secondary too old for it.
const JOURNAL_ENTRIES: u32 = 2;

/// knotd as a secondary of edgedns, with its files in a directory of its own; stopped (by its
/// PID, SIGTERM then SIGKILL) on drop, its files going with the test's temporary directory.
struct Knot {
    process: Process,
    dir: PathBuf,
}

impl Knot {
    fn start(ns: &NetNs, dir: &Path) -> Self {
        fs::create_dir_all(dir.join("db")).expect("knot directories");
        let d = dir.display();
        let conf = format!(
            "server:
    listen: {CLIENT_V4}@{KNOT_PORT}
    rundir: {d}
    pidfile: {d}/knot.pid
control:
    listen: {d}/knot.sock
database:
    storage: {d}/db
log:
  - target: stdout
    any: info
remote:
  - id: primary
    address: {SERVER_V4}@{DNS_PORT}
acl:
  - id: notify
    address: {SERVER_V4}
    action: notify
template:
  - id: default
    storage: {d}/db
zone:
  - domain: {ZONE}
    master: primary
    acl: notify
"
        );
        let path = dir.join("knot.conf");
        fs::write(&path, conf).expect("write knot.conf");
        let mut cmd = ns.command("knotd");
        cmd.arg("-c").arg(&path);
        // Each start logs to a file of its own, so a restart's lines are its own.
        let n = fs::read_dir(dir).map_or(0, |d| d.count());
        let process = Process::spawn("knotd", cmd, dir.join(format!("knotd-{n}.log")));
        Self {
            process,
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        self.process.log_text()
    }

    /// knotd's serial for the zone, asked of knotd with kdig; `None` while it has none.
    fn serial(&self, ns: &NetNs) -> Option<u64> {
        let a = Tool::Kdig
            .try_query(ns, CLIENT_V4, KNOT_PORT, ZONE, "SOA", &[])
            .ok()?;
        soa_serial(a.rdata("SOA").first()?)
    }

    /// Waits until knotd serves `serial` (bounded by [`FOLLOW_TIMEOUT`]).
    fn wait_for(&mut self, ns: &NetNs, serial: u64) {
        let deadline = Instant::now() + FOLLOW_TIMEOUT;
        let mut seen = None;
        while Instant::now() < deadline {
            self.process.assert_running();
            seen = self.serial(ns);
            if seen == Some(serial) {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "knotd has serial {seen:?}, not {serial}, {FOLLOW_TIMEOUT:?} after the change; its log:\n{}",
            self.log()
        );
    }
}

fn soa_serial(rdata: &str) -> Option<u64> {
    rdata.split_whitespace().nth(2)?.parse().ok()
}

/// edgedns's serial for the zone.
fn primary_serial(bed: &TestBed) -> u64 {
    let a = bed.dig(ZONE, "SOA");
    let soa = a.rdata("SOA");
    soa.first()
        .and_then(|s| soa_serial(s))
        .unwrap_or_else(|| panic!("no SOA from edgedns:\n{}", a.raw))
}

/// The log lines of incoming transfers, to say which kind each was.
fn transfers(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("XFR, incoming"))
        .collect()
}

/// `kdig AXFR` over TCP from `source` in the client namespace: its output.
fn axfr_from(ns: &NetNs, source: &str) -> String {
    let mut cmd = ns.command("kdig");
    cmd.args(["+retry=0", "+timeout=3", "-b", source])
        .arg(format!("@{SERVER_V4}"))
        .args(["-p", &DNS_PORT.to_string(), "-t", "AXFR", ZONE]);
    let line = cmdline(&cmd);
    let out =
        run_timeout(&mut cmd, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{line}: {e}"));
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn knot_follows_by_notify_and_ixfr() {
    let entries = JOURNAL_ENTRIES.to_string();
    let notify = format!("{CLIENT_V4}:{KNOT_PORT}");
    let bed = TestBed::with_daemon_on(
        &format!("{SERVER_V4}:{DNS_PORT}"),
        &[
            "--transfer-allow",
            CLIENT_V4,
            "--notify",
            &notify,
            "--journal-max-entries",
            &entries,
        ],
    );
    let daemon = bed.daemon();
    let knot_dir = bed.tmp.path().join("knot");

    // A new secondary has nothing: it takes the whole zone.
    let mut knot = Knot::start(&bed.client, &knot_dir);
    knot.wait_for(&bed.client, primary_serial(&bed));

    // A write: NOTIFY, then IXFR of that one change.
    let before = knot.log().len();
    let serial = daemon.api_put(ZONE, "ixfr-1", "A", 60, &["192.0.2.10"]);
    knot.wait_for(&bed.client, serial);
    let log = knot.log();
    let new = transfers(&log[before..]);
    assert!(
        new.iter()
            .any(|l| l.contains("IXFR, incoming") && l.contains("finished")),
        "no IXFR finished after the write: {new:#?}\nknotd's log:\n{log}"
    );
    assert!(
        !new.iter().any(|l| l.contains("AXFR")),
        "a full transfer for one change: {new:#?}"
    );
    eprintln!("knotd's transfers after the write: {new:#?}");
    assert!(
        log[before..].contains(&format!("notify, incoming, remote {SERVER_V4}")),
        "knotd didn't log a NOTIFY:\n{log}"
    );
    let a = kdig(
        &bed.client,
        CLIENT_V4,
        KNOT_PORT,
        "ixfr-1.t.example.net",
        "A",
        &[],
    );
    assert_eq!(a.rdata("A"), ["192.0.2.10"], "{}", a.raw);

    // A delete travels too.
    let before = knot.log().len();
    daemon.api_delete(ZONE, "ixfr-1", "A");
    let serial = primary_serial(&bed);
    knot.wait_for(&bed.client, serial);
    let a = kdig(
        &bed.client,
        CLIENT_V4,
        KNOT_PORT,
        "ixfr-1.t.example.net",
        "A",
        &[],
    );
    assert_eq!(a.status, "NXDOMAIN", "{}", a.raw);
    let log = knot.log();
    assert!(
        transfers(&log[before..])
            .iter()
            .all(|l| !l.contains("AXFR")),
        "{log}"
    );

    // The secondary is away for more changes than the journal keeps: when it is back, its
    // serial is older than the journal and it gets the whole zone.
    knot.process.stop();
    for i in 0..=JOURNAL_ENTRIES {
        daemon.api_put(ZONE, &format!("away-{i}"), "A", 60, &["192.0.2.20"]);
    }
    let mut knot = Knot::start(&bed.client, &knot.dir);
    // A change while it is up makes sure it is told (it may also ask on its own at start).
    let serial = daemon.api_put(ZONE, "back", "A", 60, &["192.0.2.30"]);
    knot.wait_for(&bed.client, serial);
    let log = knot.log();
    let back = transfers(&log);
    assert!(
        back.first().is_some_and(|l| l.contains("AXFR")),
        "the first transfer after the gap was not a full one: {back:#?}\nknotd's log:\n{log}"
    );
    eprintln!("knotd's transfers after the gap: {back:#?}");
    let a = kdig(
        &bed.client,
        CLIENT_V4,
        KNOT_PORT,
        "away-0.t.example.net",
        "A",
        &[],
    );
    assert_eq!(a.rdata("A"), ["192.0.2.20"], "{}", a.raw);

    // The ACL: the secondary's address may transfer, another address of the same host may not.
    bed.client.ip(&[
        "addr",
        "add",
        &format!("{STRANGER_V4}/24"),
        "dev",
        &bed.veth.client_if,
    ]);
    let allowed = axfr_from(&bed.client, CLIENT_V4);
    assert!(
        allowed.contains("back.t.example.net."),
        "AXFR from the secondary's address:\n{allowed}"
    );
    let refused = axfr_from(&bed.client, STRANGER_V4);
    eprintln!("AXFR from {STRANGER_V4}: {refused}");
    assert!(
        refused.contains("REFUSED") && !refused.contains("back.t.example.net."),
        "AXFR from an address not allowed:\n{refused}"
    );
}
