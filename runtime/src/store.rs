//! The node's embedded storage: twin records in sled, checkpoints in object
//! storage (a local folder by default).

use bytes::Bytes;
use hanzo_twin_actors::jobs::{ArtifactStore, JobFilter, JobId, JobRecord, JobStore};
use hanzo_twin_actors::store::{BoxFuture, RecordWrite, StoreResult};
use hanzo_twin_actors::{CheckpointStore, StoreError, TwinId, TwinRecord, TwinStore};
use hanzo_twin_api::audit::{AuditEntry, AuditLog, AuditQuery};
use object_store::{ObjectStore, PutPayload, path::Path as ObjectPath};
use std::path::Path;
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

/// Twin records in a sled tree, one JSON document per twin id.
#[derive(Clone)]
pub struct SledTwinStore {
    db: sled::Db,
    twins: sled::Tree,
}

impl SledTwinStore {
    pub fn open(dir: &Path) -> Result<SledTwinStore, StoreError> {
        let db = sled::open(dir).map_err(|e| {
            StoreError::new(format!("cannot open the store at {}: {e}", dir.display()))
        })?;
        let twins = db.open_tree("twins").map_err(err)?;
        Ok(SledTwinStore { db, twins })
    }

    /// Reads and writes a small named value (the node id, say).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        let v = self.db.get(key).map_err(err)?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The audit log, in its own tree of the same database.
    pub fn audit_log(&self) -> Result<SledAuditLog, StoreError> {
        Ok(SledAuditLog {
            db: self.db.clone(),
            entries: self.db.open_tree("audit").map_err(err)?,
        })
    }

    /// Job records, in their own tree of the same database.
    pub fn job_store(&self) -> Result<SledJobStore, StoreError> {
        Ok(SledJobStore {
            jobs: self.db.open_tree("jobs").map_err(err)?,
        })
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.db.insert(key, value.as_bytes()).map_err(err)?;
        self.db.flush().map_err(err)?;
        Ok(())
    }
}

/// Audit entries keyed by a big-endian id from sled's monotonic counter, so
/// iteration order is the order they were written, across restarts too.
#[derive(Clone)]
pub struct SledAuditLog {
    db: sled::Db,
    entries: sled::Tree,
}

#[async_trait::async_trait]
impl AuditLog for SledAuditLog {
    async fn append(&self, mut entry: AuditEntry) -> Result<u64, String> {
        // Ids start at 1, so `before=1` reads as "nothing older".
        let id = self.db.generate_id().map_err(|e| e.to_string())? + 1;
        entry.id = id;
        let encoded = serde_json::to_vec(&entry).map_err(|e| e.to_string())?;
        self.entries
            .insert(id.to_be_bytes(), encoded)
            .map_err(|e| e.to_string())?;
        self.entries
            .flush_async()
            .await
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, String> {
        let range = match query.before {
            Some(before) => self.entries.range(..before.to_be_bytes()),
            None => self.entries.iter(),
        };
        let mut out = Vec::new();
        for item in range.rev() {
            let (_, value) = item.map_err(|e| e.to_string())?;
            let entry: AuditEntry = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
            if query.matches(&entry) {
                out.push(entry);
                if out.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

impl TwinStore for SledTwinStore {
    fn put(&self, record: &TwinRecord) -> BoxFuture<'_, StoreResult<()>> {
        let encoded = serde_json::to_vec(record).map_err(err);
        let id = record.id;
        Box::pin(async move {
            self.twins.insert(id.0.as_bytes(), encoded?).map_err(err)?;
            // A definition acknowledged to a client must survive a kill -9.
            self.twins.flush_async().await.map_err(err)?;
            Ok(())
        })
    }

    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<TwinRecord>>> {
        Box::pin(async move {
            match self.twins.get(id.0.as_bytes()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(err)?)),
                None => Ok(None),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, StoreResult<Vec<TwinRecord>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for item in self.twins.iter() {
                let (key, v) = item.map_err(err)?;
                let record: TwinRecord = serde_json::from_slice(&v).map_err(|e| {
                    StoreError::new(format!(
                        "stored twin {} is unreadable: {e}",
                        String::from_utf8_lossy(&key)
                    ))
                })?;
                out.push(record);
            }
            Ok(out)
        })
    }

    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            let existed = self.twins.remove(id.0.as_bytes()).map_err(err)?.is_some();
            self.twins.flush_async().await.map_err(err)?;
            Ok(existed)
        })
    }

    /// Applies the writes to the tree, then one flush makes them all
    /// durable: a group commit.
    fn write_batch<'a>(
        &'a self,
        writes: &'a [RecordWrite],
    ) -> BoxFuture<'a, Vec<StoreResult<bool>>> {
        Box::pin(async move {
            let mut results: Vec<StoreResult<bool>> = writes
                .iter()
                .map(|write| match write {
                    RecordWrite::Put(record) => {
                        let encoded = serde_json::to_vec(record).map_err(err)?;
                        self.twins
                            .insert(record.id.0.as_bytes(), encoded)
                            .map_err(err)?;
                        Ok(true)
                    }
                    RecordWrite::Delete(id) => {
                        Ok(self.twins.remove(id.0.as_bytes()).map_err(err)?.is_some())
                    }
                })
                .collect();
            if let Err(e) = self.twins.flush_async().await {
                let e = err(e);
                for result in results.iter_mut().filter(|r| r.is_ok()) {
                    *result = Err(e.clone());
                }
            }
            results
        })
    }
}

/// Job records keyed by their id, a UUIDv7: byte order is submission order,
/// so a page is a reverse range scan.
#[derive(Clone)]
pub struct SledJobStore {
    jobs: sled::Tree,
}

impl SledJobStore {
    fn decode(key: &[u8], value: &[u8]) -> StoreResult<JobRecord> {
        serde_json::from_slice(value).map_err(|e| {
            let id = uuid::Uuid::from_slice(key).map_or_else(|_| "?".into(), |u| u.to_string());
            StoreError::new(format!("stored job {id} is unreadable: {e}"))
        })
    }
}

impl JobStore for SledJobStore {
    fn put(&self, record: &JobRecord) -> BoxFuture<'_, StoreResult<()>> {
        let encoded = serde_json::to_vec(record).map_err(err);
        let id = record.id;
        Box::pin(async move {
            self.jobs.insert(id.as_bytes(), encoded?).map_err(err)?;
            self.jobs.flush_async().await.map_err(err)?;
            Ok(())
        })
    }

    fn get(&self, id: JobId) -> BoxFuture<'_, StoreResult<Option<JobRecord>>> {
        Box::pin(async move {
            match self.jobs.get(id.as_bytes()).map_err(err)? {
                Some(v) => Ok(Some(Self::decode(id.as_bytes(), &v)?)),
                None => Ok(None),
            }
        })
    }

    fn page<'a>(
        &'a self,
        filter: &'a JobFilter,
        after: Option<JobId>,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRecord>>> {
        Box::pin(async move {
            let range = match after {
                Some(after) => self.jobs.range(..after.as_bytes().to_vec()),
                None => self.jobs.iter(),
            };
            let mut out = Vec::new();
            for item in range.rev() {
                if out.len() >= limit {
                    break;
                }
                let (key, value) = item.map_err(err)?;
                let record = Self::decode(&key, &value)?;
                if filter.admits(&record) {
                    out.push(record);
                }
            }
            Ok(out)
        })
    }

    fn unfinished<'a>(&'a self, node: &'a str) -> BoxFuture<'a, StoreResult<Vec<JobRecord>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for item in self.jobs.iter() {
                let (key, value) = item.map_err(err)?;
                let record = Self::decode(&key, &value)?;
                if !record.state.is_final() && record.node.as_deref().is_none_or(|n| n == node) {
                    out.push(record);
                }
            }
            Ok(out)
        })
    }
}

/// What jobs produce, as objects `jobs/<job id>/<name>` in the checkpoints
/// bucket.
#[derive(Clone)]
pub struct ObjectArtifactStore {
    objects: Arc<dyn ObjectStore>,
}

impl ObjectArtifactStore {
    pub fn new(objects: Arc<dyn ObjectStore>) -> ObjectArtifactStore {
        ObjectArtifactStore { objects }
    }

    fn path(job: JobId, name: &str) -> ObjectPath {
        ObjectPath::from(format!("jobs/{job}/{name}"))
    }
}

async fn put_object(
    objects: &dyn ObjectStore,
    path: ObjectPath,
    bytes: Vec<u8>,
) -> StoreResult<()> {
    objects
        .put(&path, PutPayload::from(Bytes::from(bytes)))
        .await
        .map_err(err)?;
    Ok(())
}

async fn get_object(objects: &dyn ObjectStore, path: ObjectPath) -> StoreResult<Option<Vec<u8>>> {
    match objects.get(&path).await {
        Ok(r) => Ok(Some(r.bytes().await.map_err(err)?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(err(e)),
    }
}

impl ArtifactStore for ObjectArtifactStore {
    fn put(&self, job: JobId, name: &str, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>> {
        let path = Self::path(job, name);
        Box::pin(put_object(&*self.objects, path, bytes))
    }

    fn get(&self, job: JobId, name: &str) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>> {
        let path = Self::path(job, name);
        Box::pin(get_object(&*self.objects, path))
    }
}

/// Synthetic datasets in the datasets bucket, by key
/// (`<organization>/<dataset>/<job>/<file>`).
pub struct ObjectDatasetStore {
    objects: Arc<dyn ObjectStore>,
}

impl ObjectDatasetStore {
    pub fn new(objects: Arc<dyn ObjectStore>) -> ObjectDatasetStore {
        ObjectDatasetStore { objects }
    }
}

impl hanzo_twin_actors::jobs::DatasetStore for ObjectDatasetStore {
    fn put(&self, key: &str, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(put_object(&*self.objects, ObjectPath::from(key), bytes))
    }

    fn get(&self, key: &str) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>> {
        Box::pin(get_object(&*self.objects, ObjectPath::from(key)))
    }

    fn list(&self, prefix: &str) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        let prefix = ObjectPath::from(prefix);
        Box::pin(async move {
            use futures_util::TryStreamExt;
            let mut keys: Vec<String> = self
                .objects
                .list(Some(&prefix))
                .map_ok(|meta| meta.location.to_string())
                .try_collect()
                .await
                .map_err(err)?;
            keys.sort();
            Ok(keys)
        })
    }
}

/// Checkpoints as objects `<twin id>.ckpt` in the checkpoints bucket.
#[derive(Clone)]
pub struct ObjectCheckpointStore {
    objects: Arc<dyn ObjectStore>,
}

impl ObjectCheckpointStore {
    pub fn new(objects: Arc<dyn ObjectStore>) -> ObjectCheckpointStore {
        ObjectCheckpointStore { objects }
    }

    fn path(id: TwinId) -> ObjectPath {
        ObjectPath::from(format!("{id}.ckpt"))
    }
}

impl CheckpointStore for ObjectCheckpointStore {
    fn put(&self, id: TwinId, bytes: Vec<u8>) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            // The local store writes to a temporary file and renames it, so a
            // crash mid-write never leaves a torn checkpoint.
            self.objects
                .put(&Self::path(id), PutPayload::from(Bytes::from(bytes)))
                .await
                .map_err(err)?;
            Ok(())
        })
    }

    fn get(&self, id: TwinId) -> BoxFuture<'_, StoreResult<Option<Vec<u8>>>> {
        Box::pin(async move {
            match self.objects.get(&Self::path(id)).await {
                Ok(r) => Ok(Some(r.bytes().await.map_err(err)?.to_vec())),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(err(e)),
            }
        })
    }

    fn delete(&self, id: TwinId) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            match self.objects.delete(&Self::path(id)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(err(e)),
            }
        })
    }
}
