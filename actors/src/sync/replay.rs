//! Recording a twin's readings, and playing a recording through a twin.
//!
//! A recording is JSON Lines, one reading per line, in the order the twin
//! took them: `{"at": "<RFC 3339>", "source": "plc", "target":
//! "/World/Arm/elbow.position", "value": 0.4}`; `value` is a number, `[x, y,
//! z]` or `{"position": [...], "orientation": [...]}`.
//!
//! Both ends are child actors of the twin, each with a worker task: the
//! writer drains a bounded queue the twin fills without waiting (a full
//! queue drops the reading and counts it); the player reads the file and
//! hands readings over a bounded channel the twin pulls from as its
//! simulated time passes, so a long recording never sits in memory whole.

use super::readings::{Inbox, Reading, Unread};
use super::{SourceStats, SyncHistory};
use crate::definition::Target;
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, SyncValue};
use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc};

/// Readings waiting for the writer; past it, readings are dropped and counted.
pub const RECORD_QUEUE: usize = 4096;

/// A reading to record, with its source's name. The writer encodes it, so
/// the twin's own loop never spends time on JSON.
pub type ToRecord = (Reading, Option<String>);

/// One line of a recording.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    target: String,
    value: serde_json::Value,
}

/// A reading the twin took, as a recording line.
pub fn line(reading: &Reading, source: Option<String>) -> String {
    let line = Line {
        at: reading.received_at,
        source,
        target: reading.target.to_string(),
        value: serde_json::to_value(&reading.value).unwrap_or_default(),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// A recorded reading, `offset` seconds after the recording's first.
#[derive(Debug)]
pub struct Recorded {
    offset: f64,
    target: Target,
    value: SyncValue,
}

/// Reads one line, `first` being the time of the recording's first reading
/// (set by the first line read).
fn parse(text: &str, first: &mut Option<DateTime<Utc>>) -> Result<Recorded, String> {
    let line: Line = serde_json::from_str(text).map_err(|e| format!("not a reading: {e}"))?;
    let target = Target::parse(&line.target)?;
    let value = super::readings::json_value(&line.value)?;
    let first = *first.get_or_insert(line.at);
    let offset = (line.at - first).as_seconds_f64();
    if offset < 0.0 {
        return Err(format!(
            "recorded at {}, before the recording's first reading",
            line.at
        ));
    }
    Ok(Recorded {
        offset,
        target,
        value,
    })
}

/// The twin's end of a replay: readings come due as its simulated time
/// passes.
pub struct ReplayFeed {
    readings: mpsc::Receiver<Recorded>,
    next: Option<Recorded>,
    /// The twin's simulated time when the first reading came: offsets
    /// count from there.
    start: Option<f64>,
    /// The replay source's index among the twin's sources.
    index: usize,
    pub speed: f64,
    /// The player has read the whole recording (or given up).
    done: Arc<AtomicBool>,
}

impl ReplayFeed {
    /// Whether the twin must wait for the player: nothing is at hand and
    /// the recording goes on.
    pub fn starved(&mut self) -> bool {
        if self.next.is_none()
            && let Ok(next) = self.readings.try_recv()
        {
            self.next = Some(next);
        }
        self.next.is_none() && !self.done.load(Ordering::Acquire)
    }

    /// Puts the readings due at simulated time `now` in `inbox`; whether
    /// there were any.
    pub fn due(&mut self, now: f64, inbox: &Inbox) -> bool {
        let mut due = Vec::new();
        loop {
            if self.next.is_none() {
                match self.readings.try_recv() {
                    Ok(next) => self.next = Some(next),
                    Err(_) => break,
                }
            }
            let start = *self.start.get_or_insert(now);
            match self.next.take() {
                Some(next) if next.offset <= now - start + 1e-9 => {
                    let at = Utc::now();
                    due.push(Reading {
                        source: self.index,
                        target: next.target,
                        value: next.value,
                        received: Instant::now(),
                        received_at: at,
                    });
                }
                later => {
                    self.next = later;
                    break;
                }
            }
        }
        let any = !due.is_empty();
        inbox.refill(due);
        any
    }
}

/// Where a recording is.
#[derive(Debug, Clone)]
pub enum Origin {
    File(PathBuf),
    /// A topic's messages, one line each, up to where the topic ended when
    /// the player started.
    Kafka {
        brokers: super::KafkaBrokers,
        topic: String,
    },
}

/// How to spawn (and respawn) the player. A respawned one skips the lines
/// its predecessor handed over.
pub struct ReplayChild {
    pub origin: Origin,
    pub readings: mpsc::Sender<Recorded>,
    pub handed: Arc<AtomicU64>,
    pub done: Arc<AtomicBool>,
    pub stats: Arc<SourceStats>,
    pub history: SyncHistory,
}

impl ReplayChild {
    /// The player and the twin's end of it.
    pub fn new(
        origin: Origin,
        speed: f64,
        capacity: usize,
        index: usize,
        stats: Arc<SourceStats>,
        history: SyncHistory,
    ) -> (ReplayChild, ReplayFeed) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let done = Arc::new(AtomicBool::new(false));
        (
            ReplayChild {
                origin,
                readings: tx,
                handed: Arc::new(AtomicU64::new(0)),
                done: done.clone(),
                stats,
                history,
            },
            ReplayFeed {
                readings: rx,
                next: None,
                start: None,
                index,
                speed,
                done,
            },
        )
    }
}

impl ChildSpec for ReplayChild {
    fn name(&self) -> &str {
        "sync:replay"
    }

    fn kind(&self) -> &'static str {
        "sync"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = PlayerArgs {
            origin: self.origin.clone(),
            readings: self.readings.clone(),
            handed: self.handed.clone(),
            done: self.done.clone(),
            stats: self.stats.clone(),
            history: self.history.clone(),
        };
        crate::protocol::spawn_child(Player, args, context.supervisor)
    }
}

pub struct PlayerArgs {
    origin: Origin,
    readings: mpsc::Sender<Recorded>,
    handed: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    stats: Arc<SourceStats>,
    history: SyncHistory,
}

pub struct Player;

/// The player takes no messages: its worker reads the file.
pub enum NoMsg {}

/// Local only: never sent between nodes.
impl ractor::Message for NoMsg {}

/// A player's or writer's worker task, which ends with its actor.
pub struct WorkerState {
    worker: tokio::task::JoinHandle<()>,
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl Actor for Player {
    type Msg = NoMsg;
    type State = WorkerState;
    type Arguments = PlayerArgs;

    /// A recording that cannot be opened fails the start; the twin retries
    /// it on the child backoff, and the status says why.
    async fn pre_start(
        &self,
        _myself: ActorRef<NoMsg>,
        args: PlayerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let lines = match Lines::open(&args.origin).await {
            Ok(lines) => lines,
            Err(reason) => {
                args.stats.refuse(&reason);
                return Err(reason.into());
            }
        };
        args.stats.update(|s| {
            s.state = "playing".into();
            s.connected_since = Some(Utc::now());
        });
        Ok(WorkerState {
            worker: tokio::spawn(play(lines, args)),
        })
    }
}

/// A recording's lines, from a file or a topic.
enum Lines {
    File(tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>),
    #[cfg(feature = "kafka")]
    Kafka(super::kafka::TopicLines),
}

impl Lines {
    async fn open(origin: &Origin) -> Result<Lines, String> {
        match origin {
            Origin::File(path) => {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let file = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| format!("cannot open the recording {name}: {e}"))?;
                Ok(Lines::File(tokio::io::BufReader::new(file).lines()))
            }
            #[cfg(feature = "kafka")]
            Origin::Kafka { brokers, topic } => Ok(Lines::Kafka(
                super::kafka::TopicLines::open(brokers, topic).await?,
            )),
            #[cfg(not(feature = "kafka"))]
            Origin::Kafka { .. } => {
                Err("this node was built without Kafka (cargo feature `kafka`)".into())
            }
        }
    }

    async fn next_line(&mut self) -> Result<Option<String>, String> {
        match self {
            Lines::File(lines) => lines.next_line().await.map_err(|e| e.to_string()),
            #[cfg(feature = "kafka")]
            Lines::Kafka(lines) => lines.next_line().await,
        }
    }
}

/// Reads the recording to its end, handing each reading to the twin
/// (waiting while its channel is full).
async fn play(mut lines: Lines, args: PlayerArgs) {
    let skip = args.handed.load(Ordering::Relaxed);
    let mut first = None;
    let mut number = 0u64;
    loop {
        let text = match lines.next_line().await {
            Ok(Some(text)) => text,
            Ok(None) => break,
            Err(e) => {
                let reason = format!("reading the recording failed at line {}: {e}", number + 1);
                args.stats.refuse(&reason);
                args.history.record(Some("replay"), "refused", reason, None);
                args.done.store(true, Ordering::Release);
                return;
            }
        };
        number += 1;
        if text.trim().is_empty() {
            continue;
        }
        let parsed = parse(&text, &mut first);
        // Lines a previous player handed over are read again only for the
        // recording's start time.
        if number <= skip {
            continue;
        }
        args.handed.store(number, Ordering::Relaxed);
        match parsed {
            Ok(recorded) => {
                args.stats.message(Utc::now());
                args.stats.update(|s| s.readings += 1);
                if args.readings.send(recorded).await.is_err() {
                    return;
                }
            }
            Err(reason) => {
                let detail = format!("line {number}: {reason}");
                args.stats.unread(&args.history, Unread::Unparsed(detail));
            }
        }
    }
    let read = args.stats.snapshot().readings;
    args.done.store(true, Ordering::Release);
    args.stats.update(|s| s.state = "finished".into());
    args.history.record(
        Some("replay"),
        "replay_finished",
        format!("{read} readings handed to the twin; {number} lines read"),
        None,
    );
}

/// How to spawn (and respawn) the recording's writer. The queue outlives a
/// restart: lines queued while it was down are written by the next one.
pub struct RecordChild {
    pub file: PathBuf,
    pub queue: Arc<Mutex<mpsc::Receiver<ToRecord>>>,
    pub stats: Arc<SourceStats>,
}

impl RecordChild {
    /// The writer and the twin's end of its queue.
    pub fn new(file: PathBuf, stats: Arc<SourceStats>) -> (RecordChild, mpsc::Sender<ToRecord>) {
        let (tx, rx) = mpsc::channel(RECORD_QUEUE);
        (
            RecordChild {
                file,
                queue: Arc::new(Mutex::new(rx)),
                stats,
            },
            tx,
        )
    }
}

impl ChildSpec for RecordChild {
    fn name(&self) -> &str {
        "publish:record"
    }

    fn kind(&self) -> &'static str {
        "sync"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = WriterArgs {
            file: self.file.clone(),
            queue: self.queue.clone(),
            stats: self.stats.clone(),
        };
        crate::protocol::spawn_child(Writer, args, context.supervisor)
    }
}

pub struct WriterArgs {
    file: PathBuf,
    queue: Arc<Mutex<mpsc::Receiver<ToRecord>>>,
    stats: Arc<SourceStats>,
}

pub struct Writer;

impl Actor for Writer {
    type Msg = NoMsg;
    type State = WorkerState;
    type Arguments = WriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<NoMsg>,
        args: WriterArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let opened = async {
            if let Some(folder) = args.file.parent() {
                tokio::fs::create_dir_all(folder).await?;
            }
            tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&args.file)
                .await
        };
        let file = match opened.await {
            Ok(file) => file,
            Err(e) => {
                let reason = format!("cannot write the recording {}: {e}", args.file.display());
                args.stats.refuse(&reason);
                return Err(reason.into());
            }
        };
        args.stats.update(|s| {
            s.state = "connected".into();
            s.connected_since = Some(Utc::now());
        });
        Ok(WorkerState {
            worker: tokio::spawn(write(file, args)),
        })
    }
}

/// Appends each queued line, flushing whenever the queue is empty, so a
/// reader of the file sees every reading taken so far once the twin is
/// idle.
async fn write(file: tokio::fs::File, args: WriterArgs) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut queue = args.queue.lock().await;
    while let Some((reading, source)) = queue.recv().await {
        let line = line(&reading, source);
        let mut written = out.write_all(line.as_bytes()).await;
        if written.is_ok() {
            written = out.write_all(b"\n").await;
        }
        if written.is_ok() && queue.is_empty() {
            written = out.flush().await;
        }
        match written {
            Ok(()) => args.stats.message(Utc::now()),
            Err(e) => args.stats.update(|s| {
                s.skipped += 1;
                s.last_error = Some(format!("writing the recording failed: {e}"));
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_line_reads_back_as_the_reading_it_was() {
        let at = Utc::now();
        let reading = Reading {
            source: 0,
            target: Target::parse("/World/Arm/Link3.pose").expect("target"),
            value: SyncValue::Pose {
                position: [1.0, 2.0, 3.0],
                orientation: [0.0, 0.0, 0.0, 1.0],
            },
            received: Instant::now(),
            received_at: at,
        };
        let text = line(&reading, Some("plc".into()));
        let mut first = None;
        let back = parse(&text, &mut first).expect("parses");
        assert_eq!(back.target, reading.target);
        assert_eq!(back.value, reading.value);
        assert_eq!(back.offset, 0.0);
        let later = Reading {
            received_at: at + chrono::Duration::milliseconds(1500),
            value: SyncValue::Scalar(0.4),
            target: Target::parse("/World/Arm/elbow.position").expect("target"),
            ..reading
        };
        let back = parse(&line(&later, None), &mut first).expect("parses");
        assert!((back.offset - 1.5).abs() < 1e-9, "{back:?}");
        for bad in [
            "{",
            r#"{"at": "2026-12-05T00:00:00Z", "target": "nowhere", "value": 1}"#,
            r#"{"at": "2026-12-05T00:00:00Z", "target": "/World/A.x", "value": "warm"}"#,
        ] {
            assert!(parse(bad, &mut None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn readings_come_due_as_simulated_time_passes_from_the_first() {
        let (tx, rx) = mpsc::channel(8);
        let mut feed = ReplayFeed {
            readings: rx,
            next: None,
            start: None,
            index: 0,
            speed: 1.0,
            done: Arc::new(AtomicBool::new(false)),
        };
        let inbox = Inbox::new(8, false);
        assert!(!feed.due(5.0, &inbox), "nothing recorded yet");
        assert!(feed.starved(), "the player has not read anything yet");
        for (offset, v) in [(0.0, 1.0), (0.5, 2.0), (1.0, 3.0)] {
            tx.send(Recorded {
                offset,
                target: Target::parse("/World/A.temperature").expect("target"),
                value: SyncValue::Scalar(v),
            })
            .await
            .expect("sent");
        }
        let values = |inbox: &Inbox| -> Vec<SyncValue> {
            inbox.take().into_iter().map(|r| r.value).collect()
        };
        // The first reading arrives at simulated time 10: offsets count
        // from there.
        assert!(feed.due(10.0, &inbox));
        assert_eq!(values(&inbox), [SyncValue::Scalar(1.0)]);
        assert!(!feed.due(10.4, &inbox));
        assert!(feed.due(10.5, &inbox));
        assert_eq!(values(&inbox), [SyncValue::Scalar(2.0)]);
        assert!(feed.due(12.0, &inbox));
        assert_eq!(values(&inbox), [SyncValue::Scalar(3.0)]);
        assert!(feed.starved(), "the recording may go on");
        feed.done.store(true, Ordering::Release);
        assert!(!feed.starved(), "the recording ended");
    }
}
