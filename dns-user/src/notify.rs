//! Secondaries: the flags that let them transfer zones, and NOTIFY (RFC 1996) to tell them a zone
//! changed, so they ask for the change (IXFR, from the journal) at once instead of at their next
//! SOA refresh.
//!
//! The sender follows the served versions through [`crate::engine::Engine::subscribe`], a watch
//! the write path ticks after it publishes a version: it never waits for the sender, and a sender
//! that falls behind sees only the newest version, which is all a secondary needs (it transfers
//! up to whatever serial it finds).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, Record, RecordType},
};
use ipnet::IpNet;
use tokio::{net::UdpSocket, sync::watch, task::JoinSet, time::timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    fallback::parse_prefix,
    journal::JournalLimits,
    tsig::{self, Key},
    zone::{SharedZones, ZoneSet},
};

/// `serve` flags for secondaries.
#[derive(Clone, Debug, clap::Args)]
pub struct SecondaryArgs {
    /// Let this address or prefix (192.0.2.53, 2001:db8::/64) transfer zones, AXFR and IXFR
    /// over TCP; may be given more than once. Everyone else is REFUSED (--allow-axfr lets
    /// everyone in).
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    pub transfer_allow: Vec<IpNet>,
    /// Send NOTIFY to this secondary (port 53 unless given) whenever a zone's serial changes;
    /// may be given more than once. Allow it to transfer with --transfer-allow.
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_target)]
    pub notify: Vec<SocketAddr>,
    /// Sign NOTIFY with this key (one of --tsig-keys), for secondaries that only take signed
    /// ones.
    #[arg(long, value_name = "NAME")]
    pub notify_key: Option<String>,
    /// Changes the IXFR journal keeps per zone (the oldest go first). A secondary older than
    /// the journal gets a full transfer; 0 keeps no journal (every IXFR gets the whole zone).
    #[arg(long, default_value_t = JournalLimits::default().max_entries)]
    pub journal_max_entries: u64,
    /// Bytes the IXFR journal keeps per zone (the oldest changes go first).
    #[arg(long, default_value_t = JournalLimits::default().max_bytes)]
    pub journal_max_bytes: u64,
}

impl SecondaryArgs {
    pub fn journal_limits(&self) -> JournalLimits {
        JournalLimits {
            max_entries: self.journal_max_entries,
            max_bytes: self.journal_max_bytes,
        }
    }
}

/// A `--notify` value: `ADDR`, `ADDR:PORT` or `[V6ADDR]:PORT`.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not ADDR or ADDR:PORT"))
}

/// How long to wait for an answer before each retry: five tries over about 30 s. RFC 1996 has an
/// unanswered NOTIFY resent a bounded number of times, interval and count being the operator's;
/// short ones let a secondary that missed a packet catch up quickly, and one that misses them
/// all still polls at its SOA refresh.
const WAITS: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(6),
    Duration::from_secs(8),
    Duration::from_secs(12),
];

/// Sends NOTIFY to every target for every zone whose serial changes after this call, until
/// `shutdown`. The serials are taken here, not when the future first runs, so that a change in
/// between is not taken for the starting point.
pub fn serve_notify(
    zones: SharedZones,
    mut published: watch::Receiver<u64>,
    targets: Vec<SocketAddr>,
    key: Option<Arc<Key>>,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // What the secondaries were told last (at start: what they can transfer already).
    let mut told: HashMap<Name, u32> = serials(&zones.load());
    published.mark_unchanged();
    async move {
        if targets.is_empty() {
            return;
        }
        info!(?targets, "sending NOTIFY on serial changes");
        let mut sending: HashMap<(Name, SocketAddr), tokio::task::AbortHandle> = HashMap::new();
        let mut tasks = JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                r = published.changed() => if r.is_err() { break },
            }
            let now = zones.load();
            for zone in now.zones() {
                let apex = zone.apex();
                if told.get(apex) == Some(&zone.serial()) {
                    continue;
                }
                told.insert(apex.clone(), zone.serial());
                for &target in &targets {
                    // A NOTIFY still retrying for an older serial is replaced by the new one.
                    if let Some(old) = sending.remove(&(apex.clone(), target)) {
                        old.abort();
                    }
                    let task =
                        tasks.spawn(notify(apex.clone(), zone.soa_record(), target, key.clone()));
                    sending.insert((apex.clone(), target), task);
                }
            }
            told.retain(|apex, _| now.zone(apex).is_some());
            while tasks.try_join_next().is_some() {}
            sending.retain(|_, t| !t.is_finished());
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
}

fn serials(zones: &ZoneSet) -> HashMap<Name, u32> {
    zones
        .zones()
        .map(|z| (z.apex().clone(), z.serial()))
        .collect()
}

/// One NOTIFY (RFC 1996: a question for the zone's SOA, our SOA in the answer section as a hint),
/// retried until answered or out of tries.
async fn notify(apex: Name, soa: Record, target: SocketAddr, key: Option<Arc<Key>>) {
    let serial = match soa.data() {
        hickory_proto::rr::RData::SOA(s) => s.serial(),
        _ => 0,
    };
    match send(&apex, soa, target, key.as_deref()).await {
        Ok(Some(rcode)) => {
            debug!(zone = %apex, serial, %target, %rcode, "NOTIFY answered");
        }
        Ok(None) => {
            warn!(zone = %apex, serial, %target, tries = WAITS.len(), "NOTIFY not answered")
        }
        Err(e) => warn!(zone = %apex, serial, %target, "NOTIFY: {e}"),
    }
}

/// The answer's RCODE, or `None` if no answer came.
async fn send(
    apex: &Name,
    soa: Record,
    target: SocketAddr,
    key: Option<&Key>,
) -> std::io::Result<Option<hickory_proto::op::ResponseCode>> {
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    let id = message_id();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Notify)
        .set_authoritative(true)
        .add_query(Query::query(apex.clone(), RecordType::SOA))
        .add_answer(soa);
    let bytes = msg
        .to_vec()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let mut buf = vec![0u8; 4096];
    for wait in WAITS {
        // Signed anew for each try, so that its time stays within the receiver's fudge.
        let signed = key.map(|k| {
            let mut m = bytes.clone();
            tsig::sign_request(&mut m, k, tsig::now(), NOTIFY_FUDGE);
            m
        });
        sock.send(signed.as_deref().unwrap_or(&bytes)).await?;
        let answer = timeout(wait, async {
            loop {
                // A refused port (ICMP) shows as an error here: wait out the try, then retry.
                let len = match sock.recv(&mut buf).await {
                    Ok(len) => len,
                    Err(_) => std::future::pending().await,
                };
                let Ok(r) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                // The answer echoes the query's ID and opcode, with QR set.
                if r.id() == id
                    && r.message_type() == MessageType::Response
                    && r.op_code() == OpCode::Notify
                {
                    return r.response_code();
                }
            }
        })
        .await;
        if let Ok(rcode) = answer {
            return Ok(Some(rcode));
        }
    }
    Ok(None)
}

/// Fudge of a signed NOTIFY's time, in seconds (RFC 8945 recommends 300).
const NOTIFY_FUDGE: u16 = 300;

/// A message ID hard to guess from outside (it only needs to tell our answers from stray
/// packets on a fresh socket).
fn message_id() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u16
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::ResponseCode;

    use super::*;
    use crate::zone::{Change, Edit, ZoneSpec};

    /// A zone set holding example.com, and its apex.
    fn one_zone() -> (Name, ZoneSet) {
        let apex = Name::from_ascii("example.com.").unwrap();
        let ns = Name::from_ascii("ns1.example.com.").unwrap();
        let mut zs = ZoneSet::new();
        zs.apply(Edit::CreateZone(ZoneSpec::new(
            apex.clone(),
            ns.clone(),
            ns.clone(),
            vec![ns],
        )))
        .unwrap();
        (apex, zs)
    }

    /// With a key, each NOTIFY carries a TSIG that the secondary's copy of the key verifies.
    #[tokio::test]
    async fn a_notify_is_signed_with_its_key() {
        use crate::tsig::{locate, verify, Algorithm, KeyRing};

        let (apex, zs) = one_zone();
        let soa = zs.zone(&apex).unwrap().soa_record();
        let key = Key::new("notify-key", Algorithm::HmacSha256, vec![7; 32]).unwrap();
        let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = secondary.local_addr().unwrap();
        let sending = tokio::spawn({
            let (apex, key) = (apex.clone(), key.clone());
            async move { send(&apex, soa, target, Some(&key)).await }
        });
        let mut buf = vec![0u8; 4096];
        let len = timeout(Duration::from_secs(10), secondary.recv(&mut buf))
            .await
            .expect("a NOTIFY in time")
            .unwrap();
        let msg = &buf[..len];
        let at = locate(msg).unwrap().expect("signed");
        let theirs = KeyRing::new([key]);
        assert!(verify(&theirs, msg, at, tsig::now()).is_ok());
        let wrong =
            KeyRing::new([Key::new("notify-key", Algorithm::HmacSha256, vec![8; 32]).unwrap()]);
        assert!(verify(&wrong, msg, at, tsig::now()).is_err());
        sending.abort();
    }

    /// A secondary that answers the second NOTIFY it gets: the first goes unanswered (lost), the
    /// retry is answered; a change of serial sends again.
    #[tokio::test]
    async fn notifies_on_serial_change_and_retries() {
        let (apex, mut zs) = one_zone();
        let zones = SharedZones::new(zs.clone());
        let (tick, rx) = watch::channel(0u64);
        let secondary = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = secondary.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let sender = tokio::spawn(serve_notify(
            zones.clone(),
            rx,
            vec![target],
            None,
            shutdown.clone(),
        ));

        let set = Change::Set {
            name: Name::from_ascii("www.example.com.").unwrap(),
            rtype: RecordType::TXT,
            ttl: 60,
            records: vec![hickory_proto::rr::RData::TXT(
                hickory_proto::rr::rdata::TXT::new(vec!["x".into()]),
            )],
        };
        zs.apply(Edit::Rrset(apex.clone(), set)).unwrap();
        let serial = zs.zone(&apex).unwrap().serial();
        zones.publish(std::sync::Arc::new(zs));
        tick.send_modify(|n| *n += 1);

        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        for _ in 0..2 {
            let (len, from) = timeout(Duration::from_secs(10), secondary.recv_from(&mut buf))
                .await
                .expect("a NOTIFY in time")
                .unwrap();
            let m = Message::from_vec(&buf[..len]).unwrap();
            assert_eq!(m.op_code(), OpCode::Notify);
            assert!(m.authoritative());
            assert_eq!(m.queries()[0].name(), &apex);
            assert_eq!(m.queries()[0].query_type(), RecordType::SOA);
            let hickory_proto::rr::RData::SOA(soa) = m.answers()[0].data() else {
                panic!("no SOA in {m}");
            };
            assert_eq!(soa.serial(), serial);
            got.push((m.id(), from));
        }
        // The retry is the same NOTIFY; answer it.
        assert_eq!(got[0], got[1]);
        let mut answer = Message::new();
        answer
            .set_id(got[1].0)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Notify)
            .set_response_code(ResponseCode::NoError);
        secondary
            .send_to(&answer.to_vec().unwrap(), got[1].1)
            .await
            .unwrap();
        // Answered: no third try (it would come 3 s after the second).
        let more = timeout(Duration::from_secs(4), secondary.recv_from(&mut buf)).await;
        assert!(more.is_err(), "a NOTIFY after it was answered");

        shutdown.cancel();
        timeout(Duration::from_secs(5), sender)
            .await
            .expect("the sender stops")
            .unwrap();
    }
}
