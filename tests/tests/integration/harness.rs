//! The harness itself, without the daemon: namespaces, veth, addresses, offloads, guards, dig.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use tests::{
    require_root, run_ok, NetNs, Process, TempDir, TestBed, Tool, CLIENT_V4, CLIENT_V6, DNS_PORT,
    SERVER_V4, SERVER_V6,
};

#[test]
fn veth_between_namespaces_is_set_up_and_removed() {
    let bed = TestBed::network();
    let (server, client) = (bed.server.name().to_owned(), bed.client.name().to_owned());
    for (ns, ifname, v4, v6) in [
        (&bed.server, &bed.veth.server_if, SERVER_V4, SERVER_V6),
        (&bed.client, &bed.veth.client_if, CLIENT_V4, CLIENT_V6),
    ] {
        let addrs = ns.ip(&["addr", "show", "dev", ifname]);
        assert!(addrs.contains(&format!("inet {v4}/24")), "{addrs}");
        assert!(addrs.contains(&format!("inet6 {v6}/64")), "{addrs}");
        assert!(addrs.contains("LOWER_UP"), "{ifname} is not up: {addrs}");
        let lo = ns.ip(&["link", "show", "dev", "lo"]);
        assert!(lo.contains(",UP"), "lo is not up in {}: {lo}", ns.name());
        let offloads = run_ok(ns.command("ethtool").args(["-k", ifname]));
        assert!(
            offloads.contains("tx-checksumming: off"),
            "tx checksum offload is still on for {ifname}:\n{offloads}"
        );
    }
    assert!(NetNs::exists(&server) && NetNs::exists(&client));
    drop(bed);
    assert!(!NetNs::exists(&server), "{server} was not deleted");
    assert!(!NetNs::exists(&client), "{client} was not deleted");
}

/// With nothing listening, a query crosses the veth and the server's kernel refuses it at once
/// (ICMP port unreachable): the path works, and the wrappers fail fast instead of hanging.
#[test]
fn query_without_server_fails_fast() {
    let bed = TestBed::network();
    for server in [SERVER_V4, SERVER_V6] {
        for tool in [Tool::Dig, Tool::Kdig] {
            let start = Instant::now();
            let err = tool
                .try_query(
                    &bed.client,
                    server,
                    DNS_PORT,
                    "demo.t.example.net",
                    "A",
                    &[],
                )
                .expect_err("nothing listens, yet the client got an answer");
            assert!(start.elapsed() < Duration::from_secs(5), "{err}");
            // The refusal came back over the veth: both directions work (dig says so).
            assert!(
                tool == Tool::Kdig || err.output.stdout.contains("connection refused"),
                "dig was not refused by {server}: {err}"
            );
        }
    }
}

/// A query to an address nobody has (no ARP answer) times out after dig's `+time=2`.
#[test]
fn query_to_nobody_times_out_after_two_seconds() {
    let bed = TestBed::network();
    let start = Instant::now();
    let err = Tool::Dig
        .try_query(
            &bed.client,
            "10.211.0.3",
            DNS_PORT,
            "demo.t.example.net",
            "A",
            &[],
        )
        .expect_err("nobody is at 10.211.0.3, yet dig got an answer");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(5),
        "{elapsed:?}: {err:?}"
    );
    assert!(err.output.stdout.contains("timed out"), "{err:?}");
}

#[test]
fn process_guard_stops_its_process() {
    require_root();
    let tmp = TempDir::new();
    let ns = NetNs::new("p");

    let mut cmd = ns.command("sleep");
    cmd.arg("600");
    let sleeper = Process::spawn("sleep", cmd, tmp.path().join("sleep.log"));
    let pid = sleeper.pid();
    drop(sleeper);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sleep {pid} survived"
    );

    // A process that ignores SIGTERM is killed after the grace period.
    let mut cmd = ns.command("sh");
    cmd.args([
        "-c",
        "trap '' TERM; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
    ]);
    let mut stubborn = Process::spawn("stubborn sh", cmd, tmp.path().join("sh.log"));
    let pid = stubborn.pid();
    thread::sleep(Duration::from_millis(200)); // let sh install its trap
    let start = Instant::now();
    assert!(stubborn.stop().is_none(), "sh should have needed SIGKILL");
    assert!(start.elapsed() < Duration::from_secs(8));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sh {pid} survived"
    );
}
