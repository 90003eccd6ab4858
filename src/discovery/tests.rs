use std::net::SocketAddr;

use proptest::prelude::*;

use super::rules::{ACKS_PER_WINDOW, AckAnswers, Candidates, Tally, grpc_target, is_conflict};
use super::wire::{Ignored, Key, MAX_AGE_MS, NonceCache, Verifier, is_stale};
use crate::proto::{Discovery, NodeRole, ProbeAck, ProbeInit, Signed, discovery::Body};
use prost::Message;

const NOW: i64 = 1_800_000_000_000;

fn key() -> Key {
    Key::new(b"0123456789abcdef0123456789abcdef")
}

fn probe(cluster: &str, id: &str, started_ms: u64) -> ProbeInit {
    ProbeInit {
        cluster: cluster.into(),
        leader_id: id.into(),
        version: "0.1.0".into(),
        grpc_addr: "0.0.0.0".into(),
        grpc_port: 7070,
        query_port: 0,
        metrics_port: 0,
        started_ms,
        interval_ms: 2000,
    }
}

fn msg(nonce: &[u8], sent_ms: i64, body: Body) -> Discovery {
    Discovery {
        nonce: nonce.to_vec(),
        sent_ms: u64::try_from(sent_ms).unwrap(),
        body: Some(body),
    }
}

fn src(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 40000))
}

#[test]
fn a_signed_message_opens_with_its_key_only() {
    let m = msg(b"n1", NOW, Body::ProbeInit(probe("sqd", "a", 1)));
    let datagram = key().seal(&m);
    assert_eq!(key().open(&datagram), Ok(m));
    let other = Key::new(b"another token, also 32 bytes....");
    assert_eq!(other.open(&datagram), Err(Ignored::Forged));
}

#[test]
fn unsigned_tampered_and_garbage_datagrams_are_named() {
    let m = msg(b"n1", NOW, Body::ProbeInit(probe("sqd", "a", 1)));
    let unsigned = Signed {
        payload: m.encode_to_vec(),
        mac: Vec::new(),
    }
    .encode_to_vec();
    assert_eq!(key().open(&unsigned), Err(Ignored::Unsigned));
    let mut signed = Signed::decode(key().seal(&m).as_slice()).unwrap();
    signed.payload[0] ^= 1;
    assert_eq!(key().open(&signed.encode_to_vec()), Err(Ignored::Forged));
    assert_eq!(key().open(&[0xff, 0xff, 0xff]), Err(Ignored::Malformed));
}

#[test]
fn staleness_is_thirty_seconds_either_way() {
    let now = NOW;
    let sent = |d: i64| u64::try_from(now + d).unwrap();
    assert!(!is_stale(sent(-MAX_AGE_MS), now));
    assert!(is_stale(sent(-MAX_AGE_MS - 1), now));
    assert!(!is_stale(sent(MAX_AGE_MS), now));
    assert!(is_stale(sent(MAX_AGE_MS + 1), now));
    assert!(is_stale(0, now));
    assert!(is_stale(u64::MAX, now));
}

#[test]
fn the_verifier_refuses_stale_then_replayed_messages() {
    let mut v = Verifier::new(key());
    let fresh = key().seal(&msg(
        b"n1",
        NOW - 1000,
        Body::ProbeInit(probe("sqd", "a", 1)),
    ));
    assert!(v.accept(&fresh, NOW).is_ok());
    assert_eq!(v.accept(&fresh, NOW + 10).unwrap_err(), Ignored::Replayed);
    let old = key().seal(&msg(
        b"n2",
        NOW - 31_000,
        Body::ProbeInit(probe("sqd", "a", 1)),
    ));
    assert_eq!(v.accept(&old, NOW).unwrap_err(), Ignored::Stale);
    // A forged message never reaches the nonce cache.
    let forged = Key::new(b"not the node token at all.......").seal(&msg(
        b"n3",
        NOW,
        Body::ProbeInit(probe("sqd", "a", 1)),
    ));
    assert_eq!(v.accept(&forged, NOW).unwrap_err(), Ignored::Forged);
    let genuine = key().seal(&msg(b"n3", NOW, Body::ProbeInit(probe("sqd", "a", 1))));
    assert!(v.accept(&genuine, NOW).is_ok());
}

proptest! {
    /// Whatever the traffic, a cache of any capacity never accepts a (sent, nonce) twice,
    /// and never holds more than its capacity.
    #[test]
    fn the_nonce_cache_is_bounded_and_never_lets_a_replay_through(
        capacity in 1usize..8,
        msgs in prop::collection::vec((0u64..40, 0u8..6), 1..80),
    ) {
        let mut cache = NonceCache::new(capacity);
        let mut accepted = std::collections::HashSet::new();
        for (i, (sent, nonce)) in msgs.into_iter().enumerate() {
            let now = NOW + i64::try_from(i).unwrap();
            let sent_ms = u64::try_from(NOW).unwrap() - 40 + sent;
            if cache.first_time(sent_ms, &[nonce], now) {
                prop_assert!(accepted.insert((sent_ms, nonce)), "accepted twice: {sent_ms} {nonce}");
            }
            prop_assert!(cache.len() <= capacity);
        }
    }

    /// Signing then opening returns the message, for any content.
    #[test]
    fn sealing_round_trips(nonce in prop::collection::vec(any::<u8>(), 0..32), sent in any::<u64>(), cluster in "[a-z]{1,8}") {
        let m = Discovery { nonce, sent_ms: sent, body: Some(Body::ProbeInit(probe(&cluster, "x", 3))) };
        prop_assert_eq!(key().open(&key().seal(&m)), Ok(m));
    }

    /// The node's choice: only its cluster, and of those the leader that started last.
    #[test]
    fn the_node_joins_the_newest_leader_of_its_cluster(
        heard in prop::collection::vec((0u8..3, 0u8..2, 0u64..5), 1..12),
    ) {
        let mut c = Candidates::new("c0");
        let mut best: Option<(u64, String)> = None;
        for (i, (id, cluster, started)) in heard.iter().enumerate() {
            let p = probe(&format!("c{cluster}"), &format!("l{id}"), *started);
            let r = c.observe(&p, &[], src(*id), NOW + i64::try_from(i).unwrap());
            if *cluster == 0 {
                prop_assert!(r.is_ok());
            } else {
                prop_assert_eq!(r, Err(Ignored::OtherCluster));
            }
        }
        // Last probe of each leader of c0 wins; then the newest start.
        let mut last: std::collections::BTreeMap<String, u64> = Default::default();
        for (id, cluster, started) in &heard {
            if *cluster == 0 { last.insert(format!("l{id}"), *started); }
        }
        for (id, started) in &last {
            if best.as_ref().is_none_or(|(s, _)| started >= s) { best = Some((*started, id.clone())); }
        }
        let chosen = c.choose(NOW + 100).map(|h| (h.started_ms, h.leader_id.clone()));
        prop_assert_eq!(chosen.map(|c| c.0), best.map(|b| b.0));
    }
}

#[test]
fn a_leader_unheard_for_three_intervals_is_forgotten() {
    let mut c = Candidates::new("sqd");
    c.observe(&probe("sqd", "old", 1), &[], src(1), NOW)
        .unwrap();
    assert_eq!(
        c.choose(NOW + 6_000).map(|h| h.leader_id.as_str()),
        Some("old")
    );
    assert!(c.choose(NOW + 6_001).is_none());
}

#[test]
fn a_leader_that_moved_replaces_the_old_one_when_heard() {
    let mut c = Candidates::new("sqd");
    c.observe(&probe("sqd", "old", 100), &[], src(1), NOW)
        .unwrap();
    c.observe(&probe("sqd", "new", 200), &[], src(2), NOW + 500)
        .unwrap();
    c.observe(&probe("sqd", "old", 100), &[], src(1), NOW + 1000)
        .unwrap();
    let h = c.choose(NOW + 1000).unwrap();
    assert_eq!(
        (h.leader_id.as_str(), h.target.as_str()),
        ("new", "10.0.0.2:7070")
    );
}

#[test]
fn the_grpc_target_uses_the_source_for_an_unspecified_listen_address() {
    let mut p = probe("sqd", "a", 1);
    assert_eq!(grpc_target(&p, src(9)), "10.0.0.9:7070");
    p.grpc_addr = "192.0.2.1".into();
    assert_eq!(grpc_target(&p, src(9)), "192.0.2.1:7070");
    p.grpc_addr = "::1".into();
    assert_eq!(grpc_target(&p, src(9)), "[::1]:7070");
    p.grpc_addr = "leader.example".into();
    assert_eq!(grpc_target(&p, src(9)), "leader.example:7070");
}

fn ack(id: &str, cluster: &str, version: &str) -> ProbeAck {
    ProbeAck {
        role: NodeRole::Worker as i32,
        id: id.into(),
        version: version.into(),
        cluster: cluster.into(),
        probe_nonce: Vec::new(),
    }
}

#[test]
fn register_acks_accept_refuse_and_count_retries_down() {
    let mut a = AckAnswers::new("sqd", "0.1.0", "10.0.0.1:7070");
    let ok = a.answer(&ack("w1", "sqd", "0.1.4"), b"x", NOW).unwrap();
    assert!(ok.accepted, "{}", ok.message);
    assert_eq!(ok.retries_left, ACKS_PER_WINDOW - 1);
    assert_eq!(ok.ack_nonce, b"x");
    let other = a.answer(&ack("w2", "prod", "0.1.0"), b"y", NOW).unwrap();
    assert!(
        !other.accepted && other.message.contains("--cluster"),
        "{}",
        other.message
    );
    let old = a.answer(&ack("w3", "sqd", "0.2.0"), b"z", NOW).unwrap();
    assert!(
        !old.accepted && old.message.contains("0.1.x"),
        "{}",
        old.message
    );
    for _ in 1..ACKS_PER_WINDOW {
        assert!(
            a.answer(&ack("w1", "sqd", "0.1.0"), b"x", NOW + 1)
                .is_some()
        );
    }
    assert!(
        a.answer(&ack("w1", "sqd", "0.1.0"), b"x", NOW + 2)
            .is_none(),
        "out of retries"
    );
    let next_window = a
        .answer(&ack("w1", "sqd", "0.1.0"), b"x", NOW + 60_000)
        .unwrap();
    assert_eq!(next_window.retries_left, ACKS_PER_WINDOW - 1);
}

#[test]
fn another_leader_of_the_same_cluster_is_a_conflict() {
    assert!(is_conflict("sqd", "me", &probe("sqd", "other", 1)));
    assert!(
        !is_conflict("sqd", "me", &probe("sqd", "me", 1)),
        "our own, looped back"
    );
    assert!(!is_conflict("sqd", "me", &probe("prod", "other", 1)));
}

#[test]
fn the_tally_counts_every_reason_and_logs_at_powers_of_two() {
    let mut t = Tally::default();
    let logged: Vec<_> = (0..9).filter_map(|_| t.count(Ignored::Forged)).collect();
    assert_eq!(logged, [1, 2, 4, 8]);
    assert_eq!(t.get(Ignored::Forged), 9);
    assert_eq!(t.get(Ignored::Stale), 0);
}
