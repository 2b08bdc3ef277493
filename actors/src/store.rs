//! Where a node keeps twin records and checkpoints. The traits live here, beside
//! the actors that use them; the runtime provides the implementations (sled and
//! object storage by default).

use crate::record::{TwinId, TwinRecord};
use std::future::Future;
use std::pin::Pin;

pub type StoreResult<T> = Result<T, StoreError>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Durable twin records.
pub trait TwinStore: Send + Sync + 'static {
    fn put(&self, record: &TwinRecord) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<TwinRecord>>>;
    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TwinRecord>>>;
    /// Returns whether a record was there.
    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<bool>>;
}

/// Durable checkpoints (encoded `SimState`s), the latest one per twin.
pub trait CheckpointStore: Send + Sync + 'static {
    fn put(&self, id: TwinId, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>>;
    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>>;
    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<()>>;
}
