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
    entries: DashMap<(Scope, String), (u64, ActorRef<TwinMsg>)>,
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

    pub(crate) fn get(&self, scope: &Scope, key: &str) -> Option<ActorRef<TwinMsg>> {
        let epoch = self.epoch();
        let entry = self.entries.get(&(scope.clone(), key.to_string()))?;
        (entry.0 == epoch).then(|| entry.1.clone())
    }

    pub(crate) fn put(&self, scope: &Scope, key: &str, epoch: u64, actor: ActorRef<TwinMsg>) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries
            .insert((scope.clone(), key.to_string()), (epoch, actor));
    }

    pub(crate) fn forget(&self, scope: &Scope, key: &str) {
        self.entries.remove(&(scope.clone(), key.to_string()));
    }
}
