//! A job's log: JSON lines in `<data_dir>/jobs/<id>/log.jsonl`, each with a
//! sequence number (the Server-Sent Events id a reader resumes after), kept
//! after the job ends. While a job is not finished its writer is registered
//! here, and readers following the log wait on it for new lines.

use super::JobId;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// One line of a job's log.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobLogLine {
    /// 1, 2, …: the line's place in the log, and its event id.
    pub seq: u64,
    pub at: DateTime<Utc>,
    /// `node` (queued, started, resumed, ended), `progress`, `worker` (the
    /// trainer's own messages) or `stderr`.
    pub source: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// The node's job logs, and the live ones' writers' signals.
pub struct LogFollowers {
    dir: PathBuf,
    /// Jobs not yet finished: the latest line's number.
    live: DashMap<JobId, watch::Receiver<u64>>,
}

/// Where the next read of a log starts.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LogCursor {
    offset: u64,
}

impl LogCursor {
    /// The cursor at byte `offset` of the log.
    pub fn at(offset: u64) -> LogCursor {
        LogCursor { offset }
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl LogFollowers {
    pub fn new(dir: PathBuf) -> Arc<LogFollowers> {
        Arc::new(LogFollowers {
            dir,
            live: DashMap::new(),
        })
    }

    /// The job's folder: its log and its worker's files.
    pub fn job_dir(&self, id: JobId) -> PathBuf {
        self.dir.join(id.to_string())
    }

    fn path(&self, id: JobId) -> PathBuf {
        self.job_dir(id).join("log.jsonl")
    }

    /// A signal that changes with each line written from now on, while the
    /// job's log is still written; `None` once it is finished (or never was
    /// here).
    pub fn live(&self, id: JobId) -> Option<watch::Receiver<u64>> {
        self.live.get(&id).map(|r| {
            // A clone has seen what the kept receiver has (nothing): without
            // this its `changed()` would answer at once, every time.
            let mut signal = r.clone();
            signal.borrow_and_update();
            signal
        })
    }

    /// The whole lines from `cursor` on, and where the next read starts. A
    /// line still being written is left for the next read.
    /// At most about `max_bytes` of them: the next read goes on from there.
    pub async fn read(
        &self,
        id: JobId,
        cursor: LogCursor,
        max_bytes: usize,
    ) -> std::io::Result<(Vec<JobLogLine>, LogCursor)> {
        let path = self.path(id);
        tokio::task::spawn_blocking(move || read_lines(&path, cursor, max_bytes))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Opens the job's log for appending, numbering on from its last line,
    /// and marks it live until the writer is dropped.
    pub fn writer(self: &Arc<Self>, id: JobId) -> std::io::Result<LogWriter> {
        self.writer_after(id, 0)
    }

    /// [`LogFollowers::writer`], numbering on from line `after` at least:
    /// the log of a job taken over from another node goes on from the lines
    /// written there.
    pub fn writer_after(self: &Arc<Self>, id: JobId, after: u64) -> std::io::Result<LogWriter> {
        let path = self.path(id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let (lines, _) = read_lines(&path, LogCursor::default(), usize::MAX).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok((Vec::new(), LogCursor::default()))
            } else {
                Err(e)
            }
        })?;
        let seq = lines.last().map_or(0, |l| l.seq).max(after);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (tx, rx) = watch::channel(seq);
        self.live.insert(id, rx);
        Ok(LogWriter {
            id,
            file,
            seq,
            tx,
            followers: self.clone(),
        })
    }
}

fn read_lines(
    path: &Path,
    cursor: LogCursor,
    max_bytes: usize,
) -> std::io::Result<(Vec<JobLogLine>, LogCursor)> {
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(cursor.offset))?;
    let mut reader = std::io::BufReader::new(file);
    let mut lines = Vec::new();
    let mut offset = cursor.offset;
    let mut buf = String::new();
    while offset - cursor.offset < max_bytes as u64 {
        buf.clear();
        let n = reader.read_line(&mut buf)?;
        if n == 0 || !buf.ends_with('\n') {
            break;
        }
        offset += n as u64;
        // Every line is written whole by this module; one that does not
        // parse (a disk that filled mid-line) is skipped, not fatal.
        if let Ok(line) = serde_json::from_str(buf.trim_end()) {
            lines.push(line);
        }
    }
    Ok((lines, LogCursor { offset }))
}

/// Appends to one job's log.
pub struct LogWriter {
    id: JobId,
    file: std::fs::File,
    seq: u64,
    tx: watch::Sender<u64>,
    followers: Arc<LogFollowers>,
}

impl LogWriter {
    /// The number of the last line written.
    pub fn lines(&self) -> u64 {
        self.seq
    }

    /// Appends a line. A log that cannot be written loses the line, with a
    /// warning: the job itself goes on.
    pub fn append(
        &mut self,
        source: &str,
        message: impl Into<String>,
        data: Option<serde_json::Value>,
    ) {
        let line = JobLogLine {
            seq: self.seq + 1,
            at: Utc::now(),
            source: source.to_string(),
            message: message.into(),
            data,
        };
        let mut text = match serde_json::to_string(&line) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(job = %self.id, "cannot encode a log line: {e}");
                return;
            }
        };
        text.push('\n');
        if let Err(e) = self.file.write_all(text.as_bytes()) {
            tracing::warn!(job = %self.id, "cannot write the job's log: {e}");
            return;
        }
        self.seq += 1;
        self.tx.send_replace(self.seq);
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Followers see the sender go, read what is left and end.
        self.followers.live.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_log_numbers_on_across_writers_and_reads_resume_where_they_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = LogFollowers::new(dir.path().to_path_buf());
        let id = uuid::Uuid::now_v7();
        let mut w = logs.writer(id).expect("writer");
        let mut live = logs.live(id).expect("live while written");
        w.append("node", "queued", None);
        w.append("node", "started", None);
        assert_eq!(*live.borrow_and_update(), 2);
        // A follower that joins now waits for the next line.
        let joined = logs.live(id).expect("live");
        assert_eq!(joined.has_changed().ok(), Some(false));
        let (lines, cursor) = logs
            .read(id, LogCursor::default(), usize::MAX)
            .await
            .expect("read");
        assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2]);
        // A bounded read stops after a line, and the next goes on from it.
        let (first, after_first) = logs.read(id, LogCursor::default(), 1).await.expect("read");
        assert_eq!(first.iter().map(|l| l.seq).collect::<Vec<_>>(), [1]);
        let (second, _) = logs.read(id, after_first, 1).await.expect("read");
        assert_eq!(second.iter().map(|l| l.seq).collect::<Vec<_>>(), [2]);
        w.append("node", "running", None);
        assert_eq!(joined.has_changed().ok(), Some(true));
        let (third, cursor) = logs.read(id, cursor, usize::MAX).await.expect("read");
        assert_eq!(third.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
        assert_eq!(*live.borrow_and_update(), 3);
        drop(w);
        assert!(logs.live(id).is_none(), "not live once the writer is gone");
        assert!(live.changed().await.is_err(), "followers see the end");
        // A resumed job's writer numbers on.
        let mut w = logs.writer(id).expect("writer");
        w.append("node", "resumed", Some(serde_json::json!({"steps": 5})));
        let (lines, _) = logs.read(id, cursor, usize::MAX).await.expect("read on");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].seq, 4);
        assert_eq!(lines[0].message, "resumed");
    }
}
