//! The in-process backend: a map behind a std `Mutex`, never held across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Claim;

/// Expired entries are swept once this many operations have passed since the last sweep, or
/// as many as there are entries if that is more, so sweeping costs O(1) per operation.
const MIN_OPS_BETWEEN_SWEEPS: usize = 1024;

/// Idempotency keys in this process. Clones share the map.
///
/// Expiry is read from [`tokio::time::Instant`], so tests can run on a paused clock.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    ops_since_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// Claimed; the holder's bytes.
    InFlight(Vec<u8>),
    /// Completed; the response.
    Completed(Vec<u8>),
}

impl MemoryStore {
    pub(super) fn claim(&self, key: &str, holder: &[u8], lease: Duration) -> Claim {
        let now = Instant::now();
        let mut state = self.lock(now);
        match state.entries.get(key) {
            Some(entry) if entry.expires > now => match &entry.value {
                Value::InFlight(holder) => Claim::InFlight(holder.clone()),
                Value::Completed(response) => Claim::Completed(response.clone()),
            },
            _ => {
                let entry = Entry {
                    expires: now + lease,
                    value: Value::InFlight(holder.to_vec()),
                };
                state.entries.insert(key.to_owned(), entry);
                Claim::Acquired
            }
        }
    }

    pub(super) fn complete(&self, key: &str, response: &[u8], ttl: Duration) {
        let now = Instant::now();
        let entry = Entry {
            expires: now + ttl,
            value: Value::Completed(response.to_vec()),
        };
        self.lock(now).entries.insert(key.to_owned(), entry);
    }

    pub(super) fn abandon(&self, key: &str, holder: &[u8]) {
        let mut state = self.lock(Instant::now());
        if state
            .entries
            .get(key)
            .is_some_and(|e| matches!(&e.value, Value::InFlight(h) if h == holder))
        {
            state.entries.remove(key);
        }
    }

    /// Entries held, including expired ones not swept yet.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }

    /// Whether no entries are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Locks the map, sweeping expired entries when enough operations have passed.
    fn lock(&self, now: Instant) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave an entry half-written: keep going.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.ops_since_sweep += 1;
        if state.ops_since_sweep >= state.entries.len().max(MIN_OPS_BETWEEN_SWEEPS) {
            state.entries.retain(|_, e| e.expires > now);
            state.ops_since_sweep = 0;
        }
        state
    }
}
