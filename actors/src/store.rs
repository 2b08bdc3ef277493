//! Where a node keeps twin records and checkpoints. The traits live here, beside
//! the actors that use them; the runtime provides the implementations (sled and
//! object storage by default).

use crate::record::{TwinId, TwinRecord};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type StoreResult<T> = Result<T, StoreError>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    message: String,
    conflict: bool,
}

impl StoreError {
    /// The store failed.
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            conflict: false,
        }
    }

    /// The write conflicts with what is stored (a name already taken).
    pub fn conflict(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            conflict: true,
        }
    }

    pub fn is_conflict(&self) -> bool {
        self.conflict
    }
}

/// A twin and the node holding it (none: released).
pub type Holding = (TwinId, Option<String>);

/// One change to the twin records.
// Writes are moved once into the writer's queue; boxing the record would
// add an allocation per write for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RecordWrite {
    Put(TwinRecord),
    Delete(TwinId),
}

/// Durable twin records.
pub trait TwinStore: Send + Sync + 'static {
    fn put(&self, record: &TwinRecord) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<TwinRecord>>>;
    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TwinRecord>>>;
    /// Returns whether a record was there.
    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<bool>>;

    /// Applies `writes` in order, each durable once this returns, with one
    /// result per write (a delete's says whether the record was there). A
    /// store that can makes the whole batch durable at once: a group commit,
    /// so a burst of creates costs one flush, not one each.
    fn write_batch<'a>(
        &'a self,
        writes: &'a [RecordWrite],
    ) -> BoxFuture<'a, Vec<StoreResult<bool>>> {
        Box::pin(async move {
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(match write {
                    RecordWrite::Put(record) => self.put(record).await.map(|()| true),
                    RecordWrite::Delete(id) => self.delete(*id).await,
                });
            }
            results
        })
    }

    /// Stored twins `node` may take over, leaving out `held` (those it holds
    /// already): held by nobody, by `node` itself, or by a node not in
    /// `live`. A store that can filters where the records are, so a node
    /// receives only these, not every record.
    fn claimable<'a>(
        &'a self,
        node: &'a str,
        live: &'a [String],
        held: &'a [TwinId],
    ) -> BoxFuture<'a, StoreResult<Vec<TwinRecord>>> {
        Box::pin(async move {
            let held: std::collections::HashSet<&TwinId> = held.iter().collect();
            Ok(self
                .list()
                .await?
                .into_iter()
                .filter(|r| {
                    !held.contains(&r.id)
                        && r.status
                            .node
                            .as_ref()
                            .is_none_or(|h| h == node || !live.contains(h))
                })
                .collect())
        })
    }

    /// Of `ids`, those stored with a holder other than `node`, and that
    /// holder.
    fn held_elsewhere<'a>(
        &'a self,
        node: &'a str,
        ids: &'a [TwinId],
    ) -> BoxFuture<'a, StoreResult<Vec<Holding>>> {
        Box::pin(async move {
            let ids: std::collections::HashSet<&TwinId> = ids.iter().collect();
            Ok(self
                .list()
                .await?
                .into_iter()
                .filter(|r| ids.contains(&r.id) && r.status.node.as_deref() != Some(node))
                .map(|r| (r.id, r.status.node))
                .collect())
        })
    }

    /// Records that `node` is alive now. Only a store that several nodes share
    /// needs it; the default does nothing.
    fn heartbeat(&self, _node: &str) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// The nodes that recorded a heartbeat within `lease`; `None` when the
    /// store is this node's alone, so no other node can hold one of its twins.
    fn live_nodes(&self, _lease: Duration) -> BoxFuture<'_, StoreResult<Option<Vec<String>>>> {
        Box::pin(async { Ok(None) })
    }

    /// Makes `node` the twin's holder (`status.node`) if it has none, is held
    /// by `node` already, or by `from` (a node whose lease ran out). Returns the
    /// record as stored when the claim took, `None` when another node holds
    /// it or it is gone. A shared store must do this atomically; the default
    /// suits a store one node uses alone.
    fn claim<'a>(
        &'a self,
        id: TwinId,
        node: &'a str,
        from: Option<&'a str>,
    ) -> BoxFuture<'a, StoreResult<Option<TwinRecord>>> {
        Box::pin(async move {
            let Some(mut record) = self.get(id).await? else {
                return Ok(None);
            };
            let holder = record.status.node.as_deref();
            if holder.is_none() || holder == Some(node) || holder == from {
                record.status.node = Some(node.to_string());
                self.put(&record).await?;
                Ok(Some(record))
            } else {
                Ok(None)
            }
        })
    }
}

/// Durable checkpoints (encoded `SimState`s), the latest one per twin.
pub trait CheckpointStore: Send + Sync + 'static {
    fn put(&self, id: TwinId, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>>;
    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<()>>;
}
