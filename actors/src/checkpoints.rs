//! The node's checkpoints: the newest state of every twin, in memory, and one
//! writer task that makes them durable.
//!
//! A twin hands its checkpoint to [`Checkpoints::offer`] directly, not through
//! the host's mailbox: each twin has one latest-wins slot, so a twin that
//! checkpoints faster than storage writes (a `fast` clock) replaces its pending
//! state instead of queueing copies. Memory is bounded by one pending state per
//! twin, whatever the rates.

use crate::record::TwinId;
use crate::store::CheckpointStore;
use hanzo_twin_engines::SimState;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, watch};

/// What the writer should do next for one twin.
enum Pending {
    Put(Arc<SimState>),
    Delete,
}

#[derive(Default)]
struct Slots {
    /// The newest checkpoint of each registered twin (a crash restarts from it).
    latest: HashMap<TwinId, Arc<SimState>>,
    /// Twins whose checkpoints are accepted, and whether they are written
    /// durably (forks are not).
    registered: HashMap<TwinId, bool>,
    /// Writes not yet started, one per twin: a newer put replaces an older one.
    pending: HashMap<TwinId, Pending>,
    /// Bumped for every change of `pending`; the writer reports the last
    /// number it has finished in `written`.
    queued: u64,
}

struct Inner {
    slots: Mutex<Slots>,
    /// Shared with the writer task, which holds no strong handle on `Inner`
    /// while it waits, so it ends when the last handle is dropped.
    wake: Arc<Notify>,
    written: watch::Sender<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the writer so it sees it is no longer needed.
        self.wake.notify_one();
    }
}

/// A cloneable handle on the node's checkpoints and their writer task.
#[derive(Clone)]
pub struct Checkpoints {
    inner: Arc<Inner>,
}

impl Checkpoints {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn CheckpointStore>) -> Checkpoints {
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            slots: Mutex::new(Slots::default()),
            wake: wake.clone(),
            written: watch::channel(0).0,
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let (batch, upto) = {
                    let mut slots = lock(&inner.slots);
                    (std::mem::take(&mut slots.pending), slots.queued)
                };
                if batch.is_empty() {
                    drop(inner);
                    // A permit stored by a notify since the take is not lost.
                    wake.notified().await;
                    continue;
                }
                for (id, job) in batch {
                    match job {
                        Pending::Put(state) => {
                            if let Err(e) = store.put(id, state.to_bytes()).await {
                                tracing::error!(twin = %id, error = %e, "writing checkpoint failed");
                            }
                        }
                        Pending::Delete => {
                            if let Err(e) = store.delete(id).await {
                                tracing::error!(twin = %id, error = %e, "deleting checkpoint failed");
                            }
                        }
                    }
                }
                inner.written.send_replace(upto);
            }
        });
        Checkpoints { inner }
    }

    /// Accepts checkpoints of `id` from now on; `durable`: write them to
    /// storage (forks keep theirs in memory only).
    pub fn register(&self, id: TwinId, durable: bool) {
        lock(&self.inner.slots).registered.insert(id, durable);
    }

    /// The twin's newest checkpoint, replacing any pending write of an older
    /// one. Ignored for a twin that is not registered (deleted, moved away),
    /// so a late checkpoint never brings one back.
    pub fn offer(&self, id: TwinId, state: Arc<SimState>) {
        let mut slots = lock(&self.inner.slots);
        let Some(&durable) = slots.registered.get(&id) else {
            return;
        };
        slots.latest.insert(id, state.clone());
        if durable {
            slots.pending.insert(id, Pending::Put(state));
            slots.queued += 1;
            drop(slots);
            self.inner.wake.notify_one();
        }
    }

    /// The newest checkpoint in memory.
    pub fn latest(&self, id: TwinId) -> Option<Arc<SimState>> {
        lock(&self.inner.slots).latest.get(&id).cloned()
    }

    /// Stops accepting checkpoints of `id` and forgets the one in memory;
    /// the stored one stays (the twin was handed off or is held elsewhere).
    /// A write not yet started is dropped: after a hand-off the caller
    /// flushed first; a twin another node took over must not be written.
    pub fn release(&self, id: TwinId) {
        let mut slots = lock(&self.inner.slots);
        slots.registered.remove(&id);
        slots.latest.remove(&id);
        if matches!(slots.pending.get(&id), Some(Pending::Put(_))) {
            slots.pending.remove(&id);
        }
    }

    /// Forgets the twin and deletes its stored checkpoint; returns once the
    /// delete is done.
    pub async fn delete(&self, id: TwinId) {
        {
            let mut slots = lock(&self.inner.slots);
            slots.registered.remove(&id);
            slots.latest.remove(&id);
            slots.pending.insert(id, Pending::Delete);
            slots.queued += 1;
        }
        self.inner.wake.notify_one();
        self.flush().await;
    }

    /// Returns once every write queued before the call is done.
    pub async fn flush(&self) {
        let target = lock(&self.inner.slots).queued;
        let mut written = self.inner.written.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = written.wait_for(|w| *w >= target).await;
    }

    /// Twins with a pending write, for tests and metrics.
    pub fn pending(&self) -> usize {
        lock(&self.inner.slots).pending.len()
    }
}

/// The slots stay consistent under a panic elsewhere (every update is one
/// map operation), so a poisoned lock is still usable.
fn lock(m: &Mutex<Slots>) -> MutexGuard<'_, Slots> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BoxFuture, StoreResult};
    use hanzo_twin_engines::EngineKind;

    /// A store that records writes and can be held up.
    struct Recorder {
        writes: Mutex<Vec<(TwinId, u64)>>,
        deletes: Mutex<Vec<TwinId>>,
        gate: tokio::sync::Semaphore,
    }

    impl Default for Recorder {
        fn default() -> Recorder {
            Recorder {
                writes: Mutex::default(),
                deletes: Mutex::default(),
                gate: tokio::sync::Semaphore::new(0),
            }
        }
    }

    impl CheckpointStore for Recorder {
        fn put(&self, id: TwinId, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>> {
            Box::pin(async move {
                let _permit = self.gate.acquire().await;
                let state = SimState::from_bytes(&bytes).expect("a state");
                self.writes.lock().expect("lock").push((id, state.step));
                Ok(())
            })
        }
        fn get(&self, _id: TwinId) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>> {
            Box::pin(async { Ok(None) })
        }
        fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<()>> {
            Box::pin(async move {
                self.deletes.lock().expect("lock").push(id);
                Ok(())
            })
        }
    }

    fn state(step: u64) -> Arc<SimState> {
        Arc::new(SimState {
            engine: EngineKind::Rapier3d,
            format: 1,
            scene_fingerprint: 7,
            time: step as f64,
            step,
            data: vec![0; 8],
        })
    }

    #[tokio::test]
    async fn a_twin_that_checkpoints_faster_than_storage_writes_keeps_one_pending_state() {
        let store = Arc::new(Recorder::default());
        let checkpoints = Checkpoints::start(store.clone());
        let id = TwinId::new();
        checkpoints.register(id, true);
        // Storage is stuck while the twin offers a thousand states.
        for step in 0..1000 {
            checkpoints.offer(id, state(step));
            assert!(checkpoints.pending() <= 1);
        }
        assert_eq!(checkpoints.latest(id).map(|s| s.step), Some(999));
        store.gate.add_permits(1_000_000);
        checkpoints.flush().await;
        let writes = store.writes.lock().expect("lock").clone();
        // At most one write started before the newest replaced the rest.
        assert!(writes.len() <= 2, "{writes:?}");
        assert_eq!(writes.last(), Some(&(id, 999)));
    }

    #[tokio::test]
    async fn a_deleted_or_released_twin_is_never_written_back() {
        let store = Arc::new(Recorder::default());
        store.gate.add_permits(1_000_000);
        let checkpoints = Checkpoints::start(store.clone());
        let (gone, moved, fork) = (TwinId::new(), TwinId::new(), TwinId::new());
        checkpoints.register(gone, true);
        checkpoints.register(moved, true);
        checkpoints.register(fork, false);
        checkpoints.offer(gone, state(1));
        checkpoints.delete(gone).await;
        checkpoints.offer(gone, state(2));
        checkpoints.release(moved);
        checkpoints.offer(moved, state(3));
        checkpoints.offer(fork, state(4));
        checkpoints.flush().await;
        let writes = store.writes.lock().expect("lock").clone();
        assert!(
            writes.iter().all(|(id, _)| *id != moved && *id != fork),
            "{writes:?}"
        );
        assert!(!writes.contains(&(gone, 2)), "{writes:?}");
        assert_eq!(store.deletes.lock().expect("lock").as_slice(), &[gone]);
        assert_eq!(checkpoints.latest(fork).map(|s| s.step), Some(4));
        assert!(checkpoints.latest(gone).is_none() && checkpoints.latest(moved).is_none());
    }
}
