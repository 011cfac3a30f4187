use std::path::Path;

use super::*;

/// The secret every captured message below was signed with: bytes 0..32, base64.
const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Messages captured from the real clients, signed with [`SECRET`]:
/// `nsupdate -y hmac-sha256:upd-key:…` (an add and a delete),
/// `knsupdate -y hmac-sha512:Upd.Key:…` (an add of a TXT),
/// `kdig -y hmac-sha1:qkey:…` and `kdig -y hmac-sha224:k224:…` (plain queries).
const NSUPDATE_SHA256: &[u8] = include_bytes!("testdata/nsupdate-sha256.bin");
const KNSUPDATE_SHA512: &[u8] = include_bytes!("testdata/knsupdate-sha512.bin");
const KDIG_SHA1: &[u8] = include_bytes!("testdata/kdig-sha1.bin");
const KDIG_SHA224: &[u8] = include_bytes!("testdata/kdig-sha224.bin");

fn secret() -> Vec<u8> {
    data_encoding::BASE64.decode(SECRET.as_bytes()).unwrap()
}

fn key(name: &str, algorithm: Algorithm) -> Key {
    Key::new(name, algorithm, secret()).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new([
        key("upd-key", Algorithm::HmacSha256),
        // Key names compare without case: knsupdate was given `Upd.Key`.
        key("upd.key", Algorithm::HmacSha512),
        key("qkey", Algorithm::HmacSha1),
        key("k224", Algorithm::HmacSha224),
    ])
}

fn record(msg: &[u8]) -> TsigRecord {
    let at = locate(msg).unwrap().expect("signed");
    TsigRecord::read(msg, at).unwrap()
}

fn check(keys: &KeyRing, msg: &[u8], now: u64) -> Result<ResponseTsig, Rejection> {
    verify(keys, msg, locate(msg).unwrap().unwrap(), now)
}

fn not_auth(r: Result<ResponseTsig, Rejection>) -> ResponseTsig {
    match r {
        Err(Rejection::NotAuth(t)) => *t,
        other => panic!("expected NOTAUTH, got {other:?}"),
    }
}

#[test]
fn captured_messages_from_real_clients_verify() {
    for msg in [NSUPDATE_SHA256, KNSUPDATE_SHA512, KDIG_SHA1, KDIG_SHA224] {
        let rec = record(msg);
        let ok = check(&ring(), msg, rec.time_signed + 10).expect("valid");
        assert!(ok.error.is_none());
        assert!(ok.key().is_some());
    }
}

#[test]
fn wrong_secret_is_badsig_and_unknown_key_badkey() {
    for msg in [NSUPDATE_SHA256, KNSUPDATE_SHA512, KDIG_SHA1, KDIG_SHA224] {
        let rec = record(msg);
        let name = rec.key_name.to_ascii();
        let alg = Algorithm::from_name(&rec.algorithm.to_ascii()).unwrap();
        let wrong = KeyRing::new([Key::new(&name, alg, b"not the secret".to_vec()).unwrap()]);
        let t = not_auth(check(&wrong, msg, rec.time_signed));
        assert_eq!(t.error, Some(TsigError::BadSig));
        assert!(t.key().is_none(), "BADSIG answers are unsigned");

        let other = KeyRing::new([key("someone-else", Algorithm::HmacSha256)]);
        assert_eq!(
            not_auth(check(&other, msg, rec.time_signed)).error,
            Some(TsigError::BadKey)
        );
    }
    // The right name with another algorithm is an unknown key too.
    let rec = record(NSUPDATE_SHA256);
    let other_alg = KeyRing::new([key("upd-key", Algorithm::HmacSha512)]);
    assert_eq!(
        not_auth(check(&other_alg, NSUPDATE_SHA256, rec.time_signed)).error,
        Some(TsigError::BadKey)
    );
}

#[test]
fn a_changed_byte_breaks_the_mac() {
    let rec = record(NSUPDATE_SHA256);
    let mut msg = NSUPDATE_SHA256.to_vec();
    // The A record's last address byte (192.0.2.7).
    let at = msg
        .windows(4)
        .position(|w| w == [192, 0, 2, 7])
        .expect("address");
    msg[at + 3] = 8;
    assert_eq!(
        not_auth(check(&ring(), &msg, rec.time_signed)).error,
        Some(TsigError::BadSig)
    );
}

#[test]
fn outside_the_fudge_is_badtime_signed_with_our_clock() {
    let rec = record(NSUPDATE_SHA256);
    assert_eq!(rec.fudge, 300);
    check(&ring(), NSUPDATE_SHA256, rec.time_signed + 300).expect("at the edge");
    check(&ring(), NSUPDATE_SHA256, rec.time_signed - 300).expect("at the edge");
    let now = rec.time_signed + 301;
    let t = not_auth(check(&ring(), NSUPDATE_SHA256, now));
    assert_eq!(t.error, Some(TsigError::BadTime));
    assert!(t.key().is_some(), "BADTIME answers are signed");
    let mut response = NSUPDATE_SHA256[..rec.start].to_vec();
    response[10..12].copy_from_slice(&0u16.to_be_bytes());
    t.sign(&mut response, now);
    let signed = record(&response);
    assert_eq!(signed.error, 18);
    assert_eq!(signed.time_signed, rec.time_signed);
    assert_eq!(signed.other, time_bytes(now));
    assert_eq!(signed.mac.len(), 32);
}

/// A response is signed over the request's MAC, the response and the TSIG variables (RFC 8945
/// §4.3.1): computed here from the parts, independently of `append`.
#[test]
fn responses_are_signed_over_the_request_mac() {
    let rec = record(KDIG_SHA1);
    let now = rec.time_signed + 1;
    let t = check(&ring(), KDIG_SHA1, now).unwrap();
    let mut response = KDIG_SHA1[..rec.start].to_vec();
    response[2] |= 0x80;
    response[10..12].copy_from_slice(&0u16.to_be_bytes());
    let unsigned = response.clone();
    t.sign(&mut response, now);
    let out = record(&response);
    assert_eq!(u16::from_be_bytes([response[10], response[11]]), 1);
    assert_eq!(out.time_signed, now);
    assert_eq!(out.original_id, rec.original_id);
    let mut parts = Vec::new();
    parts.extend_from_slice(&(rec.mac.len() as u16).to_be_bytes());
    parts.extend_from_slice(&rec.mac);
    parts.extend_from_slice(&unsigned);
    parts.extend_from_slice(b"\x04qkey\x00\x00\xff\x00\x00\x00\x00\x09hmac-sha1\x00");
    parts.extend_from_slice(&time_bytes(now));
    parts.extend_from_slice(&[0x01, 0x2c, 0, 0, 0, 0]);
    assert_eq!(out.mac, Algorithm::HmacSha1.mac(&secret(), &[&parts]));
}

#[test]
fn truncated_macs_follow_the_rfc() {
    let k = key("upd-key", Algorithm::HmacSha256);
    let ring = KeyRing::new([k.clone()]);
    let unsigned = &NSUPDATE_SHA256[..record(NSUPDATE_SHA256).start];
    let mut base = unsigned.to_vec();
    base[10..12].copy_from_slice(&0u16.to_be_bytes());
    let now = 1_700_000_000;
    // Re-sign, then cut the MAC to `len` bytes in place.
    let truncated = |len: usize| {
        let mut msg = base.clone();
        let mac = sign_request(&mut msg, &k, now, 300);
        let start = msg.len() - 6 - mac.len() - 2;
        let mut out = msg[..start].to_vec();
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&mac[..len]);
        out.extend_from_slice(&msg[msg.len() - 6..]);
        // RDLENGTH shrinks by what was cut.
        fix_rdlength(&mut out, mac.len() - len);
        out
    };
    check(&ring, &truncated(32), now).expect("full MAC");
    // Half of SHA-256's 32 bytes is the shortest allowed.
    check(&ring, &truncated(16), now).expect("truncated to 16");
    assert!(matches!(
        check(&ring, &truncated(15), now),
        Err(Rejection::FormErr(_))
    ));
    assert!(matches!(
        check(&ring, &truncated(8), now),
        Err(Rejection::FormErr(_))
    ));
}

/// Start of the TSIG record in a message whose RDLENGTH may be off: after the last `upd-key`
/// owner name.
fn locate_lenient(msg: &[u8]) -> usize {
    msg.windows(9)
        .rposition(|w| w == b"\x07upd-key\x00")
        .expect("TSIG owner")
}

fn fix_rdlength(msg: &mut [u8], cut: usize) {
    let at = locate_lenient(msg) + 9 + 8;
    let len = u16::from_be_bytes([msg[at], msg[at + 1]]) - cut as u16;
    msg[at..at + 2].copy_from_slice(&len.to_be_bytes());
}

#[test]
fn tsig_must_be_the_last_record() {
    let mut msg = NSUPDATE_SHA256.to_vec();
    assert!(locate(&msg).unwrap().is_some());
    // Count the TSIG as an authority record: it is no longer in the additional section.
    msg[9] += 1;
    msg[11] -= 1;
    assert!(locate(&msg).is_err());
    assert_eq!(
        locate(&NSUPDATE_SHA256[..record(NSUPDATE_SHA256).start]).ok(),
        None
    );
}

fn parse(text: &str) -> Result<KeyRing, KeyFileError> {
    KeyRing::parse(text, Path::new("/etc/edgedns/keys.conf"))
}

fn error_line(text: &str) -> (usize, String) {
    match parse(text) {
        Err(KeyFileError::Syntax { line, reason, path }) => {
            assert_eq!(path, Path::new("/etc/edgedns/keys.conf"));
            (line, reason)
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn key_files_as_tsig_keygen_writes_them() {
    let text = format!(
        "# made by tsig-keygen\n\
         key \"upd-key\" {{\n\talgorithm hmac-sha256;\n\tsecret \"{SECRET}\";\n}};\n\
         // a second key, on one line\n\
         key other.key. {{ algorithm HMAC-SHA512; secret \"{SECRET}\"; }};\n\
         /* a comment\n   over lines */ key \"k1\" {{ algorithm hmac-sha1; secret \"{SECRET}\"; }};\n"
    );
    let ring = parse(&text).unwrap();
    assert_eq!(ring.len(), 3);
    let k = ring.get(&Name::from_ascii("UPD-KEY.").unwrap()).unwrap();
    assert_eq!(k.algorithm, Algorithm::HmacSha256);
    assert_eq!(k.secret, secret());
    assert_eq!(
        ring.get(&Name::from_ascii("other.key").unwrap())
            .unwrap()
            .algorithm,
        Algorithm::HmacSha512
    );
    assert!(ring.get(&Name::from_ascii("k1").unwrap()).is_some());
    // No `zone` setting: every zone.
    assert!(k.may_update(&Name::from_ascii("anything.example.").unwrap()));
    let limited = parse(&format!(
        "key \"z\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; zone \"Example.COM\"; zone b.example; }};"
    ))
    .unwrap();
    let z = limited.get(&Name::from_ascii("z").unwrap()).unwrap();
    assert!(z.may_update(&Name::from_ascii("example.com.").unwrap()));
    assert!(z.may_update(&Name::from_ascii("b.example.").unwrap()));
    assert!(!z.may_update(&Name::from_ascii("c.example.").unwrap()));
    assert!(z.may_transfer(&Name::from_ascii("example.com.").unwrap()));
    assert!(!z.may_transfer(&Name::from_ascii("c.example.").unwrap()));
    // `allow` limits a key to one use.
    let uses = parse(&format!(
        "key \"u\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; allow \"update\"; }};\n\
         key \"t\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; allow transfer; zone a.example; }};"
    ))
    .unwrap();
    let apex = Name::from_ascii("a.example.").unwrap();
    let u = uses.get(&Name::from_ascii("u").unwrap()).unwrap();
    assert!(u.may_update(&apex) && !u.may_transfer(&apex));
    let t = uses.get(&Name::from_ascii("t").unwrap()).unwrap();
    assert!(t.may_transfer(&apex) && !t.may_update(&apex));
    assert!(!t.may_transfer(&Name::from_ascii("b.example.").unwrap()));
    let bad = parse(&format!(
        "key \"x\" {{ algorithm hmac-sha256; secret \"{SECRET}\";\n allow query; }};"
    ));
    assert!(
        matches!(&bad, Err(KeyFileError::Syntax { line: 2, reason, .. }) if reason.contains("update")),
        "{bad:?}"
    );
    // The secret never shows in logs.
    assert!(!format!("{k:?}").contains("AAEC"));
}

#[test]
fn key_files_as_keymgr_writes_them() {
    let text = format!(
        "# hmac-sha256:testkey:{SECRET}\nkey:\n  - id: testkey\n    algorithm: hmac-sha256\n    \
         secret: {SECRET}\n  - id: second\n    algorithm: hmac-sha384\n    secret: {SECRET}\n"
    );
    let ring = parse(&text).unwrap();
    assert_eq!(ring.len(), 2);
    let k = ring.get(&Name::from_ascii("second").unwrap()).unwrap();
    assert_eq!(k.algorithm, Algorithm::HmacSha384);
}

#[test]
fn key_file_errors_name_the_line() {
    let (line, reason) = error_line(&format!(
        "key \"a\" {{ algorithm hmac-sha256; secret \"{SECRET}\"; }};\n\n\
         key \"old\" {{\n algorithm hmac-md5;\n secret \"{SECRET}\";\n}};\n"
    ));
    assert_eq!(line, 4);
    assert!(
        reason.contains("hmac-md5") && reason.contains("hmac-sha256"),
        "{reason}"
    );

    let (line, reason) = error_line("key \"a\" {\n algorithm hmac-sha256;\n secret \"!!!\";\n};\n");
    assert_eq!(line, 3);
    assert!(reason.contains("base64"), "{reason}");

    let (line, reason) = error_line("key \"a\" {\n algorithm hmac-sha256\n secret \"AA==\";\n};\n");
    assert_eq!(line, 3);
    assert!(reason.contains("`;`"), "{reason}");

    let (line, _) = error_line("\n\nkey \"a\" { algorithm hmac-sha256; };\n");
    assert_eq!(line, 3);
    let (line, _) = error_line("\n/* never closed\n\n");
    assert_eq!(line, 2);
    let (line, reason) = error_line("\nkey \"a\" { algorithm hmac-sha256; secret \"AA==\"; };\nkey \"A\" { algorithm hmac-sha256; secret \"AA==\"; };\n");
    assert_eq!(line, 3);
    assert!(reason.contains("twice"), "{reason}");
    let (line, reason) = error_line("# only a comment\n");
    assert_eq!(line, 1);
    assert!(reason.contains("no key"), "{reason}");
    let (line, reason) = error_line("key \"a\" { algorithm hmac-sha3; secret \"AA==\"; };");
    assert_eq!(line, 1);
    assert!(reason.contains("unknown algorithm"), "{reason}");
}

#[test]
fn key_file_io_errors_name_the_file() {
    let e = KeyRing::load(Path::new("/nonexistent/keys.conf")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/keys.conf"), "{e}");
}
