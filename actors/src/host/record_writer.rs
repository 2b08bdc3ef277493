//! The one writer of a host's twin records. Writes leave the host in order
//! and are applied in that order; what queued while the store was busy goes
//! in the next batch, made durable at once (a group commit). A create is
//! acknowledged only once its record is durable, but the host's loop does
//! not wait for the disk meanwhile.

use crate::record::{TwinId, TwinRecord};
use crate::store::{RecordWrite, StoreError, StoreResult, TwinStore};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Writes waiting for the store; the host waits for room beyond this.
const QUEUE: usize = 4096;
/// The most writes made durable by one flush.
const BATCH: usize = 512;

struct Pending {
    write: RecordWrite,
    done: oneshot::Sender<StoreResult<bool>>,
}

#[derive(Clone)]
pub struct RecordWriter {
    queue: mpsc::Sender<Pending>,
}

/// A queued write; it answers once the write is durable (or failed).
pub struct Durable(oneshot::Receiver<StoreResult<bool>>);

impl Durable {
    pub async fn wait(self) -> StoreResult<bool> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::new("the twin record writer stopped")))
    }
}

impl RecordWriter {
    /// Starts the writer; it ends once every handle is dropped and what was
    /// queued is written.
    pub fn start(store: Arc<dyn TwinStore>) -> RecordWriter {
        let (queue, mut inbox) = mpsc::channel::<Pending>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while inbox.recv_many(&mut batch, BATCH).await > 0 {
                let (writes, done): (Vec<RecordWrite>, Vec<_>) =
                    batch.drain(..).map(|p| (p.write, p.done)).unzip();
                let results = store.write_batch(&writes).await;
                metrics::histogram!("hanzo_twin_record_batch_size").record(writes.len() as f64);
                let mut results = results.into_iter();
                for done in done {
                    let result = results.next().unwrap_or_else(|| {
                        Err(StoreError::new(
                            "the store answered fewer writes than it was given",
                        ))
                    });
                    // The asker may have gone (its request timed out); the
                    // write stands.
                    let _ = done.send(result);
                }
            }
        });
        RecordWriter { queue }
    }

    async fn queue(&self, write: RecordWrite) -> Durable {
        let (done, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = self.queue.send(Pending { write, done }).await
        {
            let _ = pending
                .done
                .send(Err(StoreError::new("the twin record writer stopped")));
        }
        Durable(answer)
    }

    /// Queues `record` to be stored behind the writes before it.
    pub async fn put(&self, record: TwinRecord) -> Durable {
        self.queue(RecordWrite::Put(record)).await
    }

    /// Queues the twin's record to be deleted behind the writes before it.
    pub async fn delete(&self, id: TwinId) -> Durable {
        self.queue(RecordWrite::Delete(id)).await
    }
}
