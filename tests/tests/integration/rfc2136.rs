//! Dynamic updates (RFC 2136) signed with TSIG (RFC 8945), from the real clients: ISC's nsupdate
//! and Knot's knsupdate change records, which dig then gets from the XDP program; what is
//! refused (no signature, a wrong secret, an unknown key, a clock far off) changes nothing.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use dns_common::Stat;
use dns_user::tsig::{self, KeyRing};
use hickory_proto::{op::Message, rr::Name};
use tests::{
    enter_netns, kdig, run_timeout, NetNs, Output, TempDir, TestBed, DNS_PORT, SERVER_V4, ZONE,
};

const KEY: &str = "edgedns-update";
/// 32 bytes, base64, as `tsig-keygen -a hmac-sha256` makes them.
const SECRET: &str = "AwoRGB8mLTQ7QklQV15lbHN6gYiPlp2kq7K5wMfO1dw=";
const KEY512: &str = "knot-key";
const SECRET512: &str =
    "BRIfLDlGU2BteoeUoa67yNXi7/wJFiMwPUpXZHF+i5ilsr/M2ebzAA0aJzRBTltodYKPnKm2w9Dd6vcEER4rOA==";

/// The daemon with a key file as `tsig-keygen` writes it (and a second key, as Knot users
/// would make it).
fn bed() -> (TestBed, TempDir) {
    let keys = TempDir::new();
    let file = keys.path().join("tsig.conf");
    fs::write(
        &file,
        format!(
            "# made by tsig-keygen -a hmac-sha256 {KEY}\n\
             key \"{KEY}\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n\
             key \"{KEY512}\" {{ algorithm hmac-sha512; secret \"{SECRET512}\"; }};\n"
        ),
    )
    .expect("write the key file");
    let bed = TestBed::with_daemon_on(
        &format!("{SERVER_V4}:{DNS_PORT}"),
        &["--tsig-keys", file.to_str().expect("utf-8 path")],
    );
    (bed, keys)
}

/// Runs `program ARGS SCRIPT-FILE` in the client namespace, the script told to the server.
fn client(ns: &NetNs, dir: &Path, program: &str, args: &[&str], script: &str) -> Output {
    let path: PathBuf = dir.join(format!("{program}.txt"));
    let script = format!("server {SERVER_V4} {DNS_PORT}\nzone {ZONE}.\n{script}send\n");
    fs::write(&path, script).expect("write the script");
    let mut cmd: Command = ns.command(program);
    cmd.args(args).arg(&path);
    run_timeout(&mut cmd, Duration::from_secs(20)).expect("the client runs")
}

fn nsupdate(bed: &TestBed, dir: &Path, extra: &[&str], script: &str) -> Output {
    let key = format!("hmac-sha256:{KEY}:{SECRET}");
    let mut args = vec!["-t", "5", "-y", &key];
    args.extend(extra);
    client(&bed.client, dir, "nsupdate", &args, script)
}

fn applied(out: &Output, what: &str) {
    assert!(
        out.success(),
        "{what} failed:\n{}\n{}",
        out.stdout,
        out.stderr
    );
}

fn refused(out: &Output, what: &str, expect: &str) {
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(!out.success(), "{what} succeeded:\n{text}");
    assert!(text.contains(expect), "{what}: no {expect:?} in:\n{text}");
}

#[test]
fn nsupdate_changes_records_and_xdp_answers_them_at_once() {
    let (bed, keys) = bed();
    let daemon = bed.daemon();
    let name = format!("upd.{ZONE}");
    let out = nsupdate(
        &bed,
        keys.path(),
        &[],
        &format!("update add {name}. 30 A 192.0.2.77\nupdate add {name}. 30 TXT \"hello world\"\n"),
    );
    applied(&out, "nsupdate add");

    // nsupdate has its answer: the change is in the maps, the first query gets it from XDP.
    let before = daemon.stats();
    let a = bed.dig(&name, "A");
    let after = daemon.stats();
    assert_eq!(a.rdata("A"), ["192.0.2.77"], "{}", a.raw);
    assert_eq!(
        after.delta(&before, Stat::AnsweredAnswer),
        1,
        "the XDP program did not answer: before {before:?}, after {after:?}"
    );
    let txt = bed.dig(&name, "TXT");
    assert_eq!(txt.rdata("TXT"), ["\"hello world\""], "{}", txt.raw);

    // A second A, then one of the two deleted; over TCP (-v) this time.
    let out = nsupdate(
        &bed,
        keys.path(),
        &["-v"],
        &format!("update add {name}. 30 A 192.0.2.78\nupdate delete {name}. A 192.0.2.77\n"),
    );
    applied(&out, "nsupdate delete one RR");
    let a = bed.dig(&name, "A");
    assert_eq!(a.rdata("A"), ["192.0.2.78"], "{}", a.raw);

    // The whole name.
    let out = nsupdate(&bed, keys.path(), &[], &format!("update delete {name}.\n"));
    applied(&out, "nsupdate delete name");
    for rtype in ["A", "TXT"] {
        let a = bed.dig(&name, rtype);
        assert_eq!(a.status, "NXDOMAIN", "{}", a.raw);
    }
}

#[test]
fn knsupdate_with_prerequisites_and_sha512() {
    let (bed, keys) = bed();
    let name = format!("knot.{ZONE}");
    let key = format!("hmac-sha512:{KEY512}:{SECRET512}");
    let kn = |script: &str| {
        client(
            &bed.client,
            keys.path(),
            "knsupdate",
            &["-t", "5", "-r", "0", "-y", &key],
            script,
        )
    };
    // Prerequisite: the name is not in use yet.
    let out = kn(&format!(
        "prereq nxdomain {name}.\nupdate add {name}. 60 A 192.0.2.90\nupdate add {name}. 60 TXT \"k\"\n"
    ));
    applied(&out, "knsupdate add");
    let a = bed.dig(&name, "A");
    assert_eq!(a.rdata("A"), ["192.0.2.90"], "{}", a.raw);

    // The same prerequisite fails now: YXDOMAIN, nothing changed.
    let out = kn(&format!(
        "prereq nxdomain {name}.\nupdate add {name}. 60 A 192.0.2.91\n"
    ));
    refused(&out, "knsupdate with a failing prerequisite", "YXDOMAIN");
    let a = bed.dig(&name, "A");
    assert_eq!(a.rdata("A"), ["192.0.2.90"], "{}", a.raw);

    // Delete one RRset.
    let out = kn(&format!("update delete {name}. TXT\n"));
    applied(&out, "knsupdate delete TXT");
    let t = bed.dig(&name, "TXT");
    assert!(t.answer.is_empty() && t.status == "NOERROR", "{}", t.raw);
}

#[test]
fn refused_updates_change_nothing() {
    let (bed, keys) = bed();
    let name = format!("nope.{ZONE}");
    let add = format!("update add {name}. 30 A 192.0.2.66\n");

    // No signature, no --update-allow: REFUSED.
    let out = client(&bed.client, keys.path(), "nsupdate", &["-t", "5"], &add);
    refused(&out, "unsigned nsupdate", "REFUSED");

    // The right key name, a wrong secret: NOTAUTH (BADSIG).
    let wrong = format!("hmac-sha256:{KEY}:{}", "A".repeat(43) + "=");
    let out = client(
        &bed.client,
        keys.path(),
        "nsupdate",
        &["-t", "5", "-y", &wrong],
        &add,
    );
    refused(&out, "nsupdate with a wrong secret", "NOTAUTH");

    // A key the server doesn't know: NOTAUTH (BADKEY).
    let unknown = format!("hmac-sha256:stranger:{SECRET}");
    let out = client(
        &bed.client,
        keys.path(),
        "nsupdate",
        &["-t", "5", "-y", &unknown],
        &add,
    );
    refused(&out, "nsupdate with an unknown key", "NOTAUTH");

    // A client clock an hour off (nsupdate can't fake it): NOTAUTH, BADTIME, signed with our
    // time in Other Data.
    // The key as the daemon read it, from the same file.
    let ring = KeyRing::load(&keys.path().join("tsig.conf")).expect("the key file");
    let key = ring
        .get(&Name::from_ascii(KEY).expect("name"))
        .expect("the key");
    let mut msg = update_message(&name);
    let now = tsig::now();
    tsig::sign_request(&mut msg, key, now - 3600, 300);
    let reply = exchange(&bed, msg);
    let r = Message::from_vec(&reply).expect("parses");
    assert_eq!(u16::from(r.response_code()), 9, "{r}");
    let at = tsig::locate(&reply).expect("parses").expect("signed");
    let rec = tsig::TsigRecord::read(&reply, at).expect("TSIG");
    assert_eq!(rec.error, 18, "BADTIME");
    assert_eq!(rec.other.len(), 6);
    assert_eq!(rec.mac.len(), 32, "BADTIME answers are signed");

    // The same message with the right time lands: the refusals above were for what they say.
    let a = bed.dig(&name, "A");
    assert_eq!(a.status, "NXDOMAIN", "{}", a.raw);
    let mut msg = update_message(&name);
    tsig::sign_request(&mut msg, key, now, 300);
    let reply = exchange(&bed, msg);
    let r = Message::from_vec(&reply).expect("parses");
    assert_eq!(u16::from(r.response_code()), 0, "{r}");
    let a = bed.dig(&name, "A");
    assert_eq!(a.rdata("A"), ["192.0.2.66"], "{}", a.raw);
}

/// cert-manager's RFC 2136 solver: a TXT at `_acme-challenge`, TTL 60, HMAC-SHA256; queried,
/// then removed.
#[test]
fn cert_manager_like_acme_challenge() {
    let (bed, keys) = bed();
    let name = format!("_acme-challenge.www.{ZONE}");
    let token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
    let out = nsupdate(
        &bed,
        keys.path(),
        &[],
        &format!("update add {name}. 60 TXT \"{token}\"\n"),
    );
    applied(&out, "adding the challenge");
    let t = bed.dig(&name, "TXT");
    assert_eq!(t.rdata("TXT"), [format!("\"{token}\"")], "{}", t.raw);
    assert_eq!(t.answer[0].ttl, 60, "{}", t.raw);
    // Queried with the key, as the solver's self-check may: the answer comes signed and kdig
    // verifies it.
    let key = format!("hmac-sha256:{KEY}:{SECRET}");
    let t = kdig(
        &bed.client,
        SERVER_V4,
        DNS_PORT,
        &name,
        "TXT",
        &["-y", &key],
    );
    assert_eq!(t.rdata("TXT"), [format!("\"{token}\"")], "{}", t.raw);
    assert!(
        t.raw.contains("TSIG PSEUDOSECTION") && !t.raw.contains("failed to verify"),
        "the answer is not signed, or kdig could not verify it:\n{}",
        t.raw
    );

    let out = nsupdate(
        &bed,
        keys.path(),
        &[],
        &format!("update delete {name}. TXT \"{token}\"\n"),
    );
    applied(&out, "removing the challenge");
    let t = bed.dig(&name, "TXT");
    assert_eq!(t.status, "NXDOMAIN", "{}", t.raw);
}

/// An UPDATE of the zone adding `name A 192.0.2.66`, unsigned.
fn update_message(name: &str) -> Vec<u8> {
    let wire = |s: &str| tsig::wire(&Name::from_ascii(s).expect("name"));
    let mut b = vec![0x51, 0x7a, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0];
    b.extend(wire(&format!("{ZONE}.")));
    b.extend([0, 6, 0, 1]);
    b.extend(wire(&format!("{name}.")));
    b.extend([0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 66]);
    b
}

/// Sends `msg` over UDP from the client namespace and returns the answer.
fn exchange(bed: &TestBed, msg: Vec<u8>) -> Vec<u8> {
    let ns = bed.client.name().to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns).expect("entering the client namespace");
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let server = SocketAddr::new(SERVER_V4.parse().expect("addr"), DNS_PORT);
        sock.send_to(&msg, server).expect("send");
        let mut buf = vec![0u8; 4096];
        let (len, _) = sock.recv_from(&mut buf).expect("an answer within 5 s");
        buf.truncate(len);
        buf
    })
    .join()
    .expect("client thread")
}
