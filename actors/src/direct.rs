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
//! - the host let the actor go (stopped, deleted, passivated, crashed,
//!   moved): it retires the actor's view, and routes holding that view are
//!   ignored. Only that twin's callers resolve again; a fork discarded by
//!   one agent leaves every other agent's routes as they were; or
//! - the host changed what a key may mean (a rename): it bumps the cache's
//!   epoch, and entries of older epochs are ignored.

use crate::protocol::{Scope, TwinMsg};
use crate::remote::ClusterLink;
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
        (entry.0 == epoch && !entry.1.view.is_retired()).then(|| entry.1.clone())
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
    /// Other nodes caching this twin's state read, told once when it next
    /// changes ([`RemoteViews`]); `watched` says whether any are, so a
    /// change costs one atomic read when none is.
    watchers: std::sync::Mutex<Vec<Watcher>>,
    watched: std::sync::atomic::AtomicBool,
    state_json: std::sync::Mutex<Option<(u64, bytes::Bytes)>>,
    /// Set once the host lets the actor go: routes to it are stale.
    retired: std::sync::atomic::AtomicBool,
    /// When the view was made; `last_read_ms` counts from it.
    made: std::time::Instant,
    /// The latest read served from the view, so a twin polled only through
    /// it does not look idle to passivation.
    last_read_ms: AtomicU64,
    /// Requests routed to the actor and not answered yet.
    pub mailbox: crate::inspector::Mailbox,
}

impl Default for TwinView {
    fn default() -> Self {
        TwinView {
            version: AtomicU64::new(0),
            watchers: std::sync::Mutex::new(Vec::new()),
            watched: std::sync::atomic::AtomicBool::new(false),
            state_json: std::sync::Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
            made: std::time::Instant::now(),
            last_read_ms: AtomicU64::new(0),
            mailbox: crate::inspector::Mailbox::default(),
        }
    }
}

impl TwinView {
    /// The twin may answer differently from now on.
    pub(crate) fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
        self.tell_watchers();
    }

    /// The twin's actor ended (stopped, crashed, passivated, moved): a
    /// restarted one has a new view, so nodes watching this one are told now.
    pub(crate) fn ended(&self) {
        self.retired.store(true, Ordering::Release);
        self.tell_watchers();
    }

    /// Whether the host has let this actor go ([`TwinView::ended`]).
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Node `watcher.node` caches the answer it is about to get, under its
    /// own key, until told the twin changed.
    pub(crate) fn watch(&self, watcher: Watcher) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        if !watchers.contains(&watcher) {
            watchers.push(watcher);
        }
        self.watched.store(true, Ordering::Release);
    }

    fn tell_watchers(&self) {
        if !self.watched.swap(false, Ordering::AcqRel) {
            return;
        }
        let watchers =
            std::mem::take(&mut *self.watchers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in watchers {
            w.link.twin_changed(&w.node, &w.scope, &w.key);
        }
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

/// A node caching a twin's state read, and the scope and key it asked with
/// (what it caches under).
#[derive(Clone)]
pub(crate) struct Watcher {
    pub node: String,
    pub scope: Scope,
    pub key: String,
    pub link: std::sync::Arc<dyn ClusterLink>,
}

impl PartialEq for Watcher {
    fn eq(&self, other: &Self) -> bool {
        (&self.node, &self.scope, &self.key) == (&other.node, &other.scope, &other.key)
    }
}

/// How long a state read of a twin on another node is served from this
/// node's cache at most. The owner tells this node when the twin changes;
/// the lease bounds how stale an answer can be should that word be lost
/// (its link broke and came back).
pub const REMOTE_READ_LEASE: std::time::Duration = std::time::Duration::from_millis(250);

/// State reads of twins on other nodes, cached on this node (the AFS
/// callback: the owner promises to say when the answer changes, once).
///
/// An entry holds the JSON with the counts it was asked at: its own count of
/// changes reported by the owner, and this node's count of everything that
/// may change any twin (a write routed from here, a membership change). It
/// is served only while both are unchanged and within
/// [`REMOTE_READ_LEASE`].
#[derive(Default)]
pub struct RemoteViews {
    all: AtomicU64,
    entries: DashMap<(Scope, String), RemoteEntry>,
}

#[derive(Default)]
struct RemoteEntry {
    changes: u64,
    state: Option<(ReadStamp, std::time::Instant, bytes::Bytes)>,
}

/// The counts a remote read was asked at.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadStamp {
    all: u64,
    changes: u64,
    membership: u64,
}

impl RemoteViews {
    /// The cached answer for `key`, if still good (`membership`: the
    /// cluster's [`ClusterLink::membership_version`] now).
    pub(crate) fn cached(&self, scope: &Scope, key: &str, membership: u64) -> Option<bytes::Bytes> {
        let all = self.all.load(Ordering::Acquire);
        let entry = self.entries.get(&(scope.clone(), key.to_string()))?;
        let (stamp, at, json) = entry.state.as_ref()?;
        (*stamp
            == ReadStamp {
                all,
                changes: entry.changes,
                membership,
            }
            && at.elapsed() < REMOTE_READ_LEASE)
            .then(|| json.clone())
    }

    /// The counts to stamp a read with: taken before asking, so a change
    /// reported while the answer travels leaves it stale.
    pub(crate) fn stamp(&self, scope: &Scope, key: &str, membership: u64) -> ReadStamp {
        let all = self.all.load(Ordering::Acquire);
        let changes = self
            .entries
            .get(&(scope.clone(), key.to_string()))
            .map_or(0, |e| e.changes);
        ReadStamp {
            all,
            changes,
            membership,
        }
    }

    /// Keeps an answer asked at `stamp`, unless something changed since.
    pub(crate) fn keep(&self, scope: &Scope, key: &str, stamp: ReadStamp, json: bytes::Bytes) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
            self.all_changed();
        }
        let mut entry = self
            .entries
            .entry((scope.clone(), key.to_string()))
            .or_default();
        if entry.changes == stamp.changes && self.all.load(Ordering::Acquire) == stamp.all {
            entry.state = Some((stamp, std::time::Instant::now(), json));
        }
    }

    /// The owner says the twin `key` names has changed.
    pub fn changed(&self, scope: &Scope, key: &str) {
        // Made if missing: a read in flight since before it keeps nothing.
        let mut entry = self
            .entries
            .entry((scope.clone(), key.to_string()))
            .or_default();
        entry.changes += 1;
        entry.state = None;
    }

    /// Any twin may have changed: a write went out from this node (under a
    /// key that may alias another), or the cluster's membership changed.
    pub fn all_changed(&self) {
        self.all.fetch_add(1, Ordering::AcqRel);
    }
}

/// A running twin's actor, and what can be read of it without a message.
#[derive(Clone)]
pub struct DirectRoute {
    pub actor: ActorRef<TwinMsg>,
    pub view: std::sync::Arc<TwinView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An actor standing in for a twin's: routes only need its reference.
    struct Idle;

    impl ractor::Actor for Idle {
        type Msg = TwinMsg;
        type State = ();
        type Arguments = ();
        async fn pre_start(
            &self,
            _: ActorRef<TwinMsg>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_route_goes_stale_with_its_own_actor_and_on_a_rename_only() {
        let routes = RouteCache::default();
        let scope = Scope::Node;
        let mut handles = Vec::new();
        let mut routes_to = Vec::new();
        for _ in 0..2 {
            let (actor, handle) = ractor::Actor::spawn(None, Idle, ()).await.expect("spawn");
            handles.push((actor.clone(), handle));
            routes_to.push(DirectRoute {
                actor,
                view: Arc::default(),
            });
        }
        let (fork, arm) = (
            routes_to.pop().expect("fork"),
            routes_to.pop().expect("arm"),
        );
        let epoch = routes.epoch();
        routes.put(&scope, "arm", epoch, arm.clone());
        routes.put(&scope, "arm-fork", epoch, fork.clone());
        assert!(routes.get(&scope, "arm").is_some());

        // Discarding a fork retires its route, and no other.
        fork.view.ended();
        assert!(routes.get(&scope, "arm-fork").is_none());
        assert!(routes.get(&scope, "arm").is_some());
        // A route resolved before its actor was let go is never served.
        routes.put(&scope, "arm-fork", routes.epoch(), fork);
        assert!(routes.get(&scope, "arm-fork").is_none());

        // A rename may give a name to another twin: every route is stale,
        // and one resolved while the host renamed too.
        let before = routes.epoch();
        routes.invalidate();
        assert!(routes.get(&scope, "arm").is_none());
        routes.put(&scope, "arm", before, arm.clone());
        assert!(routes.get(&scope, "arm").is_none());
        routes.put(&scope, "arm", routes.epoch(), arm);
        assert!(routes.get(&scope, "arm").is_some());

        for (actor, handle) in handles {
            actor.stop(None);
            handle.await.expect("stopped");
        }
    }

    #[test]
    fn a_remote_read_is_served_only_until_its_twin_or_the_cluster_changes() {
        let views = RemoteViews::default();
        let scope = Scope::Node;
        let json = bytes::Bytes::from_static(b"{\"step\":1}");
        assert!(views.cached(&scope, "arm", 0).is_none());

        let stamp = views.stamp(&scope, "arm", 0);
        views.keep(&scope, "arm", stamp, json.clone());
        assert_eq!(views.cached(&scope, "arm", 0), Some(json.clone()));
        // Another key, scope or membership is another entry.
        assert!(views.cached(&scope, "conveyor", 0).is_none());
        let acme = Scope::Organization(crate::Name::new("acme").expect("name"));
        assert!(views.cached(&acme, "arm", 0).is_none());
        assert!(views.cached(&scope, "arm", 1).is_none());

        // The owner's word drops it.
        views.changed(&scope, "arm");
        assert!(views.cached(&scope, "arm", 0).is_none());

        // An answer asked before a change arrives after it: not kept, even
        // for a key never read before.
        let stamp = views.stamp(&scope, "belt", 0);
        views.changed(&scope, "belt");
        views.keep(&scope, "belt", stamp, json.clone());
        assert!(views.cached(&scope, "belt", 0).is_none());

        // A write from this node drops every entry, and voids answers in
        // flight.
        let stamp = views.stamp(&scope, "arm", 0);
        views.keep(&scope, "arm", stamp, json.clone());
        let in_flight = views.stamp(&scope, "belt", 0);
        views.all_changed();
        assert!(views.cached(&scope, "arm", 0).is_none());
        views.keep(&scope, "belt", in_flight, json.clone());
        assert!(views.cached(&scope, "belt", 0).is_none());

        // The lease bounds an entry nobody invalidated.
        let stamp = views.stamp(&scope, "arm", 0);
        views.keep(&scope, "arm", stamp, json);
        std::thread::sleep(REMOTE_READ_LEASE);
        assert!(views.cached(&scope, "arm", 0).is_none());
    }
}
