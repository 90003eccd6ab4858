//! Pure: discovery datagrams on the wire — a `Discovery` message signed with HMAC-SHA256
//! keyed by the node token, and the checks a received datagram passes before anything in it
//! is believed (signature, age, replay), each failure named by an [`Ignored`] reason.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

use crate::proto::{Discovery, Signed};

/// Binds a MAC to this protocol, so a MAC made with the node token for anything else cannot
/// pass as a discovery message.
const LABEL: &[u8] = b"sqd-discovery-v1\0";
/// A message older (or further in the future) than this is stale: clocks of one segment are
/// assumed within a few seconds of each other.
pub(crate) const MAX_AGE_MS: i64 = 30_000;
/// Largest datagram read or sent; a message is a few hundred bytes.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Nonces remembered for replay detection.
pub(crate) const NONCE_CACHE: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// Why a received datagram was ignored; one metric label each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Ignored {
    /// Not a `Signed` message, or its payload not a `Discovery`.
    Malformed,
    /// No MAC.
    Unsigned,
    /// A MAC that the node token did not make.
    Forged,
    /// Sent more than 30 s before (or after) it was received.
    Stale,
    /// A nonce already seen (or too old to tell, once the cache is full).
    Replayed,
    /// A leader of another cluster (a node), or an answer for another cluster.
    OtherCluster,
    /// Signed and fresh, but not a message this receiver expects (e.g. an ack to a node).
    Unexpected,
}

impl Ignored {
    pub(crate) const ALL: [Ignored; 7] = [
        Ignored::Malformed,
        Ignored::Unsigned,
        Ignored::Forged,
        Ignored::Stale,
        Ignored::Replayed,
        Ignored::OtherCluster,
        Ignored::Unexpected,
    ];

    /// The metric label and log spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ignored::Malformed => "malformed",
            Ignored::Unsigned => "unsigned",
            Ignored::Forged => "forged",
            Ignored::Stale => "stale",
            Ignored::Replayed => "replayed",
            Ignored::OtherCluster => "other_cluster",
            Ignored::Unexpected => "unexpected",
        }
    }
}

/// The key of every discovery MAC: the node token's bytes.
#[derive(Clone)]
pub(crate) struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    pub(crate) fn new(secret: &[u8]) -> Self {
        Key(secret.to_vec())
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        };
        mac.update(LABEL);
        mac
    }

    /// The datagram carrying `msg`, signed.
    pub(crate) fn seal(&self, msg: &Discovery) -> Vec<u8> {
        let payload = msg.encode_to_vec();
        let mut mac = self.mac();
        mac.update(&payload);
        let signed = Signed {
            payload,
            mac: mac.finalize().into_bytes().to_vec(),
        };
        signed.encode_to_vec()
    }

    /// The message of a datagram whose MAC this key made (compared in constant time).
    pub(crate) fn open(&self, datagram: &[u8]) -> Result<Discovery, Ignored> {
        let signed = Signed::decode(datagram).map_err(|_| Ignored::Malformed)?;
        if signed.mac.is_empty() {
            return Err(Ignored::Unsigned);
        }
        let mut mac = self.mac();
        mac.update(&signed.payload);
        mac.verify_slice(&signed.mac).map_err(|_| Ignored::Forged)?;
        Discovery::decode(signed.payload.as_slice()).map_err(|_| Ignored::Malformed)
    }
}

/// Whether a message sent at `sent_ms` is too old, or too far ahead, at `now_ms`.
pub(crate) fn is_stale(sent_ms: u64, now_ms: i64) -> bool {
    let sent = i64::try_from(sent_ms).unwrap_or(i64::MAX);
    now_ms.saturating_sub(sent).saturating_abs() > MAX_AGE_MS
}

/// The nonces of messages accepted lately, bounded. Once full, the oldest is forgotten and
/// every message no newer than it is refused from then on: bounded memory never lets a replay
/// through, at worst it refuses a late original.
#[derive(Debug)]
pub(crate) struct NonceCache {
    seen: BTreeSet<(u64, Vec<u8>)>,
    capacity: usize,
    /// Messages sent at or before this are refused (their nonce may have been forgotten).
    floor_ms: Option<u64>,
}

impl NonceCache {
    pub(crate) fn new(capacity: usize) -> Self {
        NonceCache {
            seen: BTreeSet::new(),
            capacity: capacity.max(1),
            floor_ms: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// Records `(sent_ms, nonce)`; `false` when it was seen before or may have been.
    pub(crate) fn first_time(&mut self, sent_ms: u64, nonce: &[u8], now_ms: i64) -> bool {
        if self.floor_ms.is_some_and(|floor| sent_ms <= floor) {
            return false;
        }
        // Entries past the age limit are refused as stale anyway: drop them first.
        let horizon = u64::try_from(now_ms.saturating_sub(MAX_AGE_MS)).unwrap_or(0);
        while let Some(first) = self.seen.first() {
            if first.0 >= horizon {
                break;
            }
            self.seen.pop_first();
        }
        if !self.seen.insert((sent_ms, nonce.to_vec())) {
            return false;
        }
        while self.seen.len() > self.capacity {
            if let Some((evicted, _)) = self.seen.pop_first() {
                self.floor_ms = Some(self.floor_ms.map_or(evicted, |f| f.max(evicted)));
            }
        }
        // The message just recorded may itself have been the one evicted.
        self.seen.contains(&(sent_ms, nonce.to_vec()))
    }
}

/// A receiver's checks in order: signature, age, replay. Forged messages never reach the
/// nonce cache, so without the key nobody can fill it.
#[derive(Debug)]
pub(crate) struct Verifier {
    key: Key,
    nonces: NonceCache,
}

impl Verifier {
    pub(crate) fn new(key: Key) -> Self {
        Verifier {
            key,
            nonces: NonceCache::new(NONCE_CACHE),
        }
    }

    pub(crate) fn key(&self) -> &Key {
        &self.key
    }

    pub(crate) fn accept(&mut self, datagram: &[u8], now_ms: i64) -> Result<Discovery, Ignored> {
        let msg = self.key.open(datagram)?;
        if is_stale(msg.sent_ms, now_ms) {
            return Err(Ignored::Stale);
        }
        if !self.nonces.first_time(msg.sent_ms, &msg.nonce, now_ms) {
            return Err(Ignored::Replayed);
        }
        Ok(msg)
    }
}
