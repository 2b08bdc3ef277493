//! The direct path: step, commands, observations and clock go from a caller
//! straight to a running twin's actor, without waiting in the host's mailbox
//! behind scene reads and store writes.
//!
//! The host resolves a twin once ([`crate::host::HostMsg::Resolve`]); the
//! resolved actor is cached here by the caller's scope and the key it named
//! (id or name). An entry stops being used when
//! - the actor has ended (it crashed and restarted, was stopped, moved to
//!   another node): sending to it fails, and the message goes through the
//!   host instead, which answers as it always did; or
//! - the host changed what a key may mean (a rename, a delete, a stop): it
//!   bumps the cache's epoch, and entries of older epochs are ignored.

use crate::protocol::{Scope, TwinMsg};
use dashmap::DashMap;
use ractor::ActorRef;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries kept at most; past it the cache starts afresh (they are cheap to
/// resolve again).
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct RouteCache {
    epoch: AtomicU64,
    entries: DashMap<(Scope, String), (u64, DirectRoute)>,
}

impl RouteCache {
    /// Every entry resolved before now is stale.
    pub fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The epoch to stamp a resolution with: read before asking the host, so
    /// a change made while the host answers leaves the entry stale.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, scope: &Scope, key: &str) -> Option<DirectRoute> {
        let epoch = self.epoch();
        let entry = self.entries.get(&(scope.clone(), key.to_string()))?;
        (entry.0 == epoch).then(|| entry.1.clone())
    }

    pub(crate) fn put(&self, scope: &Scope, key: &str, epoch: u64, route: DirectRoute) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries
            .insert((scope.clone(), key.to_string()), (epoch, route));
    }

    pub(crate) fn forget(&self, scope: &Scope, key: &str) {
        self.entries.remove(&(scope.clone(), key.to_string()));
    }
}

/// What callers can read of a running twin without messaging its actor:
/// the JSON of its last state read, valid while the twin has not changed
/// since. The actor counts every message that may change what it would
/// answer ([`TwinView::changed`]); a cached answer carries the count it was
/// made at, and one made before the latest change is never served.
pub struct TwinView {
    version: AtomicU64,
    state_json: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
    /// When the view was made; `last_read_ms` counts from it.
    made: std::time::Instant,
    /// The latest read served from the view, so a twin polled only through
    /// it does not look idle to passivation.
    last_read_ms: AtomicU64,
}

impl Default for TwinView {
    fn default() -> Self {
        TwinView {
            version: AtomicU64::new(0),
            state_json: std::sync::Mutex::new(None),
            made: std::time::Instant::now(),
            last_read_ms: AtomicU64::new(0),
        }
    }
}

impl TwinView {
    /// The twin may answer differently from now on.
    pub(crate) fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The version to stamp an answer with: read before asking the actor, so
    /// an answer that raced a change is already stale when it is stored.
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The state JSON, if none of the twin's messages came since it was made.
    pub(crate) fn cached_state(&self) -> Option<bytes::Bytes> {
        let version = self.version();
        // A poisoned lock still holds a whole (version, bytes) pair.
        let slot = self.state_json.lock().unwrap_or_else(|p| p.into_inner());
        let hit = slot
            .as_ref()
            .filter(|(v, _)| *v == version)
            .map(|(_, b)| b.clone());
        drop(slot);
        if hit.is_some() {
            let ms = self.made.elapsed().as_millis() as u64;
            self.last_read_ms.fetch_max(ms, Ordering::Relaxed);
        }
        hit
    }

    pub(crate) fn keep_state(&self, version: u64, json: bytes::Bytes) {
        let mut slot = self.state_json.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_none_or(|(v, _)| *v < version) {
            *slot = Some((version, json));
        }
    }

    /// When a read was last served from the view, if ever.
    pub(crate) fn last_read(&self) -> Option<std::time::Instant> {
        match self.last_read_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.made + std::time::Duration::from_millis(ms)),
        }
    }
}

/// A running twin's actor, and what can be read of it without a message.
#[derive(Clone)]
pub struct DirectRoute {
    pub actor: ActorRef<TwinMsg>,
    pub view: std::sync::Arc<TwinView>,
}
