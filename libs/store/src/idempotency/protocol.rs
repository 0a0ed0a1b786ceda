//! The claim / replay / in-flight protocol, the one implementation orders and payments share.
//!
//! [`Idempotency::begin`] is called with the request's key and its [`Fingerprint`] (the
//! parameters a retry must repeat: the customer and items of an order, the order and amount
//! of a charge) and answers:
//!
//! - [`Begin::Run`]: the key was free; this caller runs the request and then
//!   [`complete`](Idempotency::complete)s it with the response (or
//!   [`abandon`](Idempotency::abandon)s the [`Claimed`] key when it failed, so a retry may
//!   run it again);
//! - [`Begin::Replay`]: the request already ran; these are its response bytes;
//! - [`IdempotencyError::Mismatch`]: the key was first used with other parameters; the
//!   error names each field that differs (Stripe's semantics: a key names one request);
//! - [`IdempotencyError::InFlight`]: another attempt still holds the key after waiting as
//!   long as allowed.
//!
//! A duplicate that finds the key in flight waits for the holder instead of failing at
//! once: a completion in this process wakes it immediately; a holder in another process
//! (a replica sharing Redis) is noticed by re-claiming with a backoff from 5 ms to 200 ms,
//! never a tight loop. It stops waiting at its deadline, or after [`MAX_WAIT`]. If the
//! holder died, its lease ([`LEASE`]) runs out and a waiter acquires the key.
//!
//! The stored values carry the fingerprint: in flight `token(16) fingerprint`, completed
//! `len(u32 LE) fingerprint response`; the token tells this attempt's claim from a later
//! one, so an abandon never drops another attempt's claim.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Claim, IdempotencyStore};
use crate::error::StoreError;

/// How long a claim keeps its key when its holder neither completes nor abandons it (the
/// holder died): after that another request may take the key over.
pub const LEASE: Duration = Duration::from_secs(30);
/// The longest a duplicate waits for the holder of its key (less when its deadline is
/// nearer).
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// First and last pause between re-claims while waiting for a holder in another process.
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(200);
/// Bytes of the random token that starts an in-flight value.
const TOKEN_LEN: usize = 16;

/// The parameters of a request that a reuse of its idempotency key must repeat, as
/// `(field, value)` pairs in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    fields: Vec<(String, String)>,
}

impl Fingerprint {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field; `name` should be the request's field name (`customer_id`).
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.fields.push((name.to_owned(), value.into()));
        self
    }

    /// `name=value` lines, with `\` and newlines in values escaped.
    fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (name, value) in &self.fields {
            out.push_str(name);
            out.push('=');
            for c in value.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    /// The inverse of [`Fingerprint::encode`]; bytes it did not write decode to a field
    /// named `(unreadable)`, which differs from every real fingerprint.
    fn decode(bytes: &[u8]) -> Self {
        let unreadable = || Fingerprint::new().with("(unreadable)", String::from_utf8_lossy(bytes));
        let Ok(text) = std::str::from_utf8(bytes) else {
            return unreadable();
        };
        let mut fields = Vec::new();
        for line in text.split_terminator('\n') {
            let Some((name, escaped)) = line.split_once('=') else {
                return unreadable();
            };
            let mut value = String::with_capacity(escaped.len());
            let mut chars = escaped.chars();
            while let Some(c) = chars.next() {
                match (c, c == '\\') {
                    (_, true) => match chars.next() {
                        Some('n') => value.push('\n'),
                        Some(other) => value.push(other),
                        None => return unreadable(),
                    },
                    (c, false) => value.push(c),
                }
            }
            fields.push((name.to_owned(), value));
        }
        Fingerprint { fields }
    }

    /// The fields whose values differ between `self` (the first use) and `now`.
    pub fn differences(&self, now: &Fingerprint) -> Vec<Difference> {
        let get = |fp: &Fingerprint, name: &str| {
            fp.fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let mut names: Vec<&str> = self.fields.iter().map(|(n, _)| n.as_str()).collect();
        for (n, _) in &now.fields {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        names
            .into_iter()
            .filter_map(|name| {
                let (first, now) = (get(self, name), get(now, name));
                (first != now).then(|| Difference {
                    field: name.to_owned(),
                    first,
                    now,
                })
            })
            .collect()
    }
}

/// One field whose value differs from the first use of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub field: String,
    /// The value the key was first used with (`None`: the field was absent).
    pub first: Option<String>,
    /// The value of this request.
    pub now: Option<String>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.as_ref().map_or("(none)".into(), |v| format!("{v:?}"));
        write!(
            f,
            "{} {} (this request: {})",
            self.field,
            shown(&self.first),
            shown(&self.now)
        )
    }
}

/// Why [`Idempotency::begin`] did not let the request run or replay.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key was first used for a request with other parameters.
    #[error("idempotency_key: {key:?} was first used with {}", list(.differences))]
    Mismatch {
        key: String,
        differences: Vec<Difference>,
    },
    /// Another attempt with the key was still running when this one stopped waiting.
    #[error(
        "idempotency_key: a request with key {key:?} is still in flight (waited {waited_ms} ms)"
    )]
    InFlight { key: String, waited_ms: u64 },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn list(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`Idempotency::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Run the request; then complete the key, or abandon this claim.
    Run(Claimed),
    /// The request already ran: the response bytes it completed with.
    Replay(Vec<u8>),
}

/// A key this attempt holds in flight.
#[derive(Debug)]
#[must_use = "complete the key or abandon the claim"]
pub struct Claimed {
    key: String,
    holder: Vec<u8>,
}

impl Claimed {
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// The protocol over one service's [`IdempotencyStore`]. Clones share the store and the
/// in-process wake-ups.
#[derive(Clone, Debug)]
pub struct Idempotency {
    store: IdempotencyStore,
    ttl: Duration,
    lease: Duration,
    max_wait: Duration,
    waiters: Arc<Waiters>,
}

impl Idempotency {
    /// Completed responses are replayable for `ttl`; claims last [`LEASE`]; duplicates
    /// wait at most [`MAX_WAIT`].
    pub fn new(store: IdempotencyStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            lease: LEASE,
            max_wait: MAX_WAIT,
            waiters: Arc::default(),
        }
    }

    /// Other lease and wait bounds (tests of expiry).
    pub fn with_timing(mut self, lease: Duration, max_wait: Duration) -> Self {
        self.lease = lease;
        self.max_wait = max_wait;
        self
    }

    pub fn store(&self) -> &IdempotencyStore {
        &self.store
    }

    /// Claims `key` for a request with `fingerprint`, waiting (until `deadline`, at most
    /// [`MAX_WAIT`]) while another attempt holds it. See the module docs.
    pub async fn begin(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        deadline: Option<Instant>,
    ) -> Result<Begin, IdempotencyError> {
        let encoded = fingerprint.encode();
        let mut holder = Vec::with_capacity(TOKEN_LEN + encoded.len());
        holder.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        holder.extend_from_slice(&encoded);
        let claim = self.store.claim(key, &holder, self.lease).await?;
        if let Some(begun) = settle(claim, key, fingerprint, &holder)? {
            return Ok(begun);
        }
        // In flight: watch for a local completion, then claim again (a completion between
        // the first claim and the watch is seen by this second claim).
        let started = Instant::now();
        let until = deadline.map_or(started + self.max_wait, |d| d.min(started + self.max_wait));
        let watch = self.waiters.watch(key);
        let mut pause = FIRST_POLL;
        loop {
            let woken = watch.notify.notified();
            let claim = self.store.claim(key, &holder, self.lease).await?;
            if let Some(begun) = settle(claim, key, fingerprint, &holder)? {
                return Ok(begun);
            }
            let now = Instant::now();
            if now >= until {
                return Err(IdempotencyError::InFlight {
                    key: key.to_owned(),
                    waited_ms: u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX),
                });
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(pause.min(until - now)) => {}
            }
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Records `response` as the answer of the request with `key` and `fingerprint`
    /// (whoever holds the claim, or none: a request finished by a recovery worker) and
    /// wakes the duplicates waiting in this process.
    pub async fn complete(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        response: &[u8],
    ) -> Result<(), StoreError> {
        let encoded = fingerprint.encode();
        let len = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
        let mut value = Vec::with_capacity(4 + encoded.len() + response.len());
        value.extend_from_slice(&len.to_le_bytes());
        value.extend_from_slice(&encoded);
        value.extend_from_slice(response);
        let stored = self.store.complete(key, &value, self.ttl).await;
        self.waiters.wake(key);
        stored
    }

    /// Drops this attempt's claim (the request failed before any effect that a retry
    /// could repeat) and wakes the waiting duplicates, one of which then runs it.
    pub async fn abandon(&self, claimed: Claimed) -> Result<(), StoreError> {
        let dropped = self.store.abandon(&claimed.key, &claimed.holder).await;
        self.waiters.wake(&claimed.key);
        dropped
    }
}

/// `Some` when the claim settles the request (run, replay, or a mismatch), `None` while it
/// is in flight with the same parameters.
fn settle(
    claim: Claim,
    key: &str,
    fingerprint: &Fingerprint,
    holder: &[u8],
) -> Result<Option<Begin>, IdempotencyError> {
    let (first, replay) = match claim {
        Claim::Acquired => {
            return Ok(Some(Begin::Run(Claimed {
                key: key.to_owned(),
                holder: holder.to_vec(),
            })));
        }
        Claim::InFlight(other) => (
            Fingerprint::decode(other.get(TOKEN_LEN..).unwrap_or(&[])),
            None,
        ),
        Claim::Completed(value) => {
            let (first, response) = split_completed(&value);
            (first, Some(response.to_vec()))
        }
    };
    let differences = first.differences(fingerprint);
    if !differences.is_empty() {
        return Err(IdempotencyError::Mismatch {
            key: key.to_owned(),
            differences,
        });
    }
    Ok(replay.map(Begin::Replay))
}

/// A completed value's fingerprint and response.
fn split_completed(value: &[u8]) -> (Fingerprint, &[u8]) {
    let len = value
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match len.and_then(|len| value.get(4..4 + len).map(|fp| (fp, &value[4 + len..]))) {
        Some((fp, response)) => (Fingerprint::decode(fp), response),
        None => (Fingerprint::decode(value), &[]),
    }
}

/// Duplicates waiting in this process, by key: completing or abandoning a key wakes them.
#[derive(Debug, Default)]
struct Waiters {
    by_key: Mutex<HashMap<String, Arc<Notify>>>,
}

/// One waiter's interest in a key; the entry goes when its last waiter does.
struct Watch {
    waiters: Arc<Waiters>,
    key: String,
    notify: Arc<Notify>,
}

impl Waiters {
    fn watch(self: &Arc<Self>, key: &str) -> Watch {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let notify = by_key.entry(key.to_owned()).or_default().clone();
        Watch {
            waiters: self.clone(),
            key: key.to_owned(),
            notify,
        }
    }

    fn wake(&self, key: &str) {
        let woken = self
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(notify) = woken {
            notify.notify_waiters();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut by_key = self
            .waiters
            .by_key
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else waits on this entry.
        if by_key
            .get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2)
        {
            by_key.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_and_name_differences() {
        let a = Fingerprint::new()
            .with("customer_id", "c1")
            .with("items", "sku-1x2\nodd\\value=x");
        assert_eq!(Fingerprint::decode(&a.encode()), a);
        let b = Fingerprint::new()
            .with("customer_id", "c2")
            .with("items", "sku-1x2\nodd\\value=x");
        let diff = a.differences(&b);
        assert_eq!(diff.len(), 1);
        assert_eq!(
            diff[0].to_string(),
            "customer_id \"c1\" (this request: \"c2\")"
        );
        assert!(a.differences(&a.clone()).is_empty());
        let garbage = Fingerprint::decode(&[0xff, 0x00]);
        assert!(!garbage.differences(&a).is_empty());
    }

    #[test]
    fn completed_values_split_into_fingerprint_and_response() {
        let fp = Fingerprint::new().with("order_id", "o1");
        let encoded = fp.encode();
        let mut value = (encoded.len() as u32).to_le_bytes().to_vec();
        value.extend_from_slice(&encoded);
        value.extend_from_slice(&[0, 1, 255]);
        let (got, response) = split_completed(&value);
        assert_eq!(got, fp);
        assert_eq!(response, &[0, 1, 255]);
        // A value in no known layout is a mismatch, never a replay of garbage.
        let (got, _) = split_completed(b"\x01charge-id");
        assert!(!got.differences(&fp).is_empty());
    }
}
