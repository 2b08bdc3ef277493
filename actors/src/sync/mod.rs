//! Live sync: a twin following its physical counterpart.
//!
//! Each source in the definition's `sync.sources` is a child actor of its
//! twin ([`crate::children`]): it connects, reads messages, maps them to USD
//! attributes, and queues the readings in the twin's bounded [`Inbox`]. The
//! twin takes them in its own loop ([`TwinSync::take`]): commands (a joint's
//! `target_position`, `target_velocity` or `effort`) drive the simulation;
//! measurements are kept, newest per attribute, beside what the simulation
//! predicts for them.

pub mod alerts;
mod drift;
#[cfg(feature = "kafka")]
pub mod kafka;
mod link;
pub mod mqtt;
#[cfg(feature = "opcua")]
pub mod opcua;
pub mod publish;
pub mod readings;
pub mod recalibrate;
pub mod replay;
#[cfg(feature = "ros2")]
pub mod ros2;

use crate::definition::{DriftResponse, PublishSpec, SourceSpec, SyncMode, SyncSpec, Target};
use crate::protocol::{
    BufferStatus, ChildSpec, ReadingStatus, SourceStatus, SyncEvent, SyncHistoryPage, SyncStatus,
    SyncValue,
};
use chrono::{DateTime, Utc};
use hanzo_twin_engines::{JointCommand, Observation, Simulation};
use readings::{Inbox, Reading};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One source's counters and connection state, shared by the source's actor
/// (which writes it, across its restarts) and its twin (which reports it).
pub struct SourceStats {
    status: Mutex<(SourceStatus, RateWindow)>,
}

/// Messages per second over the last [`RATE_WINDOW_S`] seconds.
const RATE_WINDOW_S: u64 = 10;

#[derive(Default)]
struct RateWindow {
    /// (second since start, messages in it)
    buckets: VecDeque<(u64, u64)>,
    origin: Option<Instant>,
}

impl RateWindow {
    fn now_s(&mut self) -> u64 {
        self.origin
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs()
    }

    fn count(&mut self) {
        let now = self.now_s();
        match self.buckets.back_mut() {
            Some((s, n)) if *s == now => *n += 1,
            _ => self.buckets.push_back((now, 1)),
        }
        self.trim(now);
    }

    fn trim(&mut self, now: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + RATE_WINDOW_S <= now)
        {
            self.buckets.pop_front();
        }
    }

    fn rate(&mut self) -> f64 {
        let now = self.now_s();
        self.trim(now);
        let total: u64 = self.buckets.iter().map(|(_, n)| n).sum();
        // A source younger than the window is averaged over its own age.
        let span = (now + 1).min(RATE_WINDOW_S);
        total as f64 / span as f64
    }
}

impl SourceStats {
    pub fn new(name: String, kind: &str, endpoint: String, topic: String) -> SourceStats {
        SourceStats {
            status: Mutex::new((
                SourceStatus {
                    name,
                    kind: kind.to_string(),
                    endpoint,
                    topic,
                    state: "connecting".into(),
                    last_error: None,
                    connected_since: None,
                    last_message_at: None,
                    messages: 0,
                    messages_per_s: 0.0,
                    readings: 0,
                    unparsed: 0,
                    unmapped: 0,
                    reconnects: 0,
                    skipped: 0,
                },
                RateWindow::default(),
            )),
        }
    }

    /// A message that gave no reading: counted by why, kept as the last
    /// error, and an event in the twin's history under this source's name.
    pub fn unread(&self, history: &SyncHistory, what: readings::Unread) {
        let (kind, detail) = match what {
            readings::Unread::Unparsed(detail) => ("unparsed", detail),
            readings::Unread::Unmapped(detail) => ("unmapped", detail),
        };
        self.update(|s| {
            match kind {
                "unparsed" => s.unparsed += 1,
                _ => s.unmapped += 1,
            }
            s.last_error = Some(detail.clone());
        });
        history.record(Some(&self.name()), kind, detail, None);
    }

    /// The source or publisher cannot run, for `reason`: what its status
    /// says until it can.
    pub fn refuse(&self, reason: &str) {
        self.update(|s| {
            s.state = "refused".into();
            s.last_error = Some(reason.to_string());
        });
    }

    pub fn update(&self, f: impl FnOnce(&mut SourceStatus)) {
        let mut guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard.0);
    }

    /// A message arrived.
    pub fn message(&self, at: DateTime<Utc>) {
        let mut guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.messages += 1;
        guard.0.last_message_at = Some(at);
        guard.1.count();
    }

    pub fn snapshot(&self) -> SourceStatus {
        let mut guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let rate = guard.1.rate();
        let mut status = guard.0.clone();
        status.messages_per_s = rate;
        status
    }

    pub fn name(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .name
            .clone()
    }
}

/// Events kept per twin; older ones are dropped (and counted).
pub const HISTORY_CAPACITY: usize = 1000;

/// A twin's sync history, written by its sources and by the twin, kept in
/// memory for the twin's run (a restart of the twin begins a new one).
#[derive(Clone, Default)]
pub struct SyncHistory(Arc<Mutex<HistoryInner>>);

#[derive(Default)]
struct HistoryInner {
    events: VecDeque<SyncEvent>,
    next_seq: u64,
    dropped: u64,
}

impl SyncHistory {
    /// Records an event. The same kind from the same source right after
    /// the last one is folded into it (`count`), so a flood of bad messages
    /// costs one event, not a thousand.
    pub fn record(&self, source: Option<&str>, kind: &str, detail: String, seconds: Option<f64>) {
        self.push(source, kind, detail, seconds, None);
    }

    /// Records what a recalibration found: never folded, each is its own.
    pub fn record_recalibration(&self, detail: String, found: recalibrate::Recalibration) {
        self.push(None, "recalibrated", detail, None, Some(Box::new(found)));
    }

    fn push(
        &self,
        source: Option<&str>,
        kind: &str,
        detail: String,
        seconds: Option<f64>,
        recalibration: Option<Box<recalibrate::Recalibration>>,
    ) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seconds.is_none()
            && recalibration.is_none()
            && let Some(last) = h.events.back_mut()
            && last.kind == kind
            && last.source.as_deref() == source
        {
            last.count += 1;
            last.at = Utc::now();
            last.detail = detail;
            return;
        }
        h.next_seq += 1;
        let seq = h.next_seq;
        if h.events.len() >= HISTORY_CAPACITY {
            h.events.pop_front();
            h.dropped += 1;
        }
        h.events.push_back(SyncEvent {
            seq,
            at: Utc::now(),
            source: source.map(str::to_string),
            kind: kind.to_string(),
            detail,
            seconds,
            count: 1,
            recalibration,
        });
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub fn page(&self, after: Option<u64>, limit: usize) -> SyncHistoryPage {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let limit = limit.max(1);
        let mut events: Vec<SyncEvent> = h
            .events
            .iter()
            .filter(|e| after.is_none_or(|a| e.seq > a))
            .take(limit + 1)
            .cloned()
            .collect();
        let next_cursor = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.seq)
        } else {
            None
        };
        SyncHistoryPage {
            events,
            next_cursor,
            dropped: h.dropped,
        }
    }
}

/// The newest reading of one measured attribute.
struct Latest {
    source: usize,
    value: SyncValue,
    received_at: DateTime<Utc>,
}

/// A twin's side of sync: its inbox, its sources' stats, and the newest
/// reading of each measured attribute.
pub struct TwinSync {
    mode: SyncMode,
    /// In batch mode, how often queued readings are applied.
    window: Option<Duration>,
    inbox: Inbox,
    sources: Vec<Arc<SourceStats>>,
    publishers: Vec<Arc<SourceStats>>,
    latest: BTreeMap<Target, Latest>,
    budget: Duration,
    late: u64,
    twin_label: String,
    history: SyncHistory,
    drift: Option<crate::definition::DriftDetection>,
    /// Per measured attribute: its recent errors, newest last.
    errors: BTreeMap<Target, VecDeque<(Instant, f64)>>,
    /// Attributes drifting now.
    drifting: std::collections::BTreeSet<Target>,
    /// Drift alerts for the alert child to deliver, when there is one.
    alerts: Option<tokio::sync::mpsc::Sender<serde_json::Value>>,
    /// With `auto_recalibrate`: the tape recalibration replays.
    recorder: Option<recalibrate::Recorder>,
    /// A recalibration is running (its result comes to the twin as
    /// [`crate::protocol::TwinMsg::Recalibrated`]).
    recalibrating: bool,
    /// When the last response to drift (a fit ended, a hard reset) was:
    /// the next waits a window, so a fit's tape holds readings taken with
    /// the values the last one applied, and resets do not repeat per reading.
    responded_at: Option<Instant>,
    /// The twin's actor, which recalibration results go to.
    twin: Option<ractor::ActorRef<crate::protocol::TwinMsg>>,
    /// In replay mode: the recording, as it comes due.
    replay: Option<replay::ReplayFeed>,
    /// With `record`: the queue of the recording's writer.
    recording: Option<tokio::sync::mpsc::Sender<replay::ToRecord>>,
    recording_stats: Option<Arc<SourceStats>>,
}

/// The node's Kafka stream (`stream` in its configuration): the brokers
/// of Kafka publishers that name none, how to reach them, and the prefix of
/// their topic; and where the node keeps sync recordings.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub brokers: Option<String>,
    /// TLS to `brokers` (`stream.tls`); `None` reaches them in the clear.
    pub tls: Option<Arc<KafkaTls>>,
    pub topic_prefix: String,
    /// `<data_dir>/recordings`; `None` where nothing is recorded (tests).
    pub recordings: Option<PathBuf>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            brokers: None,
            tls: None,
            topic_prefix: "hanzo.twin".into(),
            recordings: None,
        }
    }
}

/// Mutual TLS to the node's Kafka brokers: the CA their certificates are
/// checked against (and each must name the host it is reached at), and the
/// node's own certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTls {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Kafka brokers (`host:port`, comma-separated) and how a client reaches
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaBrokers {
    pub list: String,
    pub tls: Option<Arc<KafkaTls>>,
}

impl KafkaBrokers {
    /// As the sync status shows them: `ssl://` before brokers reached over
    /// TLS.
    pub fn shown(&self) -> String {
        match self.tls {
            Some(_) => format!("ssl://{}", self.list),
            None => self.list.clone(),
        }
    }
}

impl StreamSettings {
    /// Where a Kafka publisher of twin `twin_label` publishes: its brokers
    /// and topic, or the node's brokers and `<topic_prefix>.<twin id>.predictions`.
    pub fn kafka_target(
        &self,
        spec: &crate::definition::KafkaPublishSpec,
        twin_label: &str,
    ) -> (Option<KafkaBrokers>, String) {
        let topic = spec
            .topic
            .clone()
            .unwrap_or_else(|| format!("{}.{twin_label}.predictions", self.topic_prefix));
        (self.kafka_brokers(spec.brokers.as_ref()), topic)
    }

    /// The brokers a twin names (on loopback, in the clear: see
    /// `check_kafka_brokers`), else the node's, over its TLS where it has
    /// one.
    pub fn kafka_brokers(&self, named: Option<&String>) -> Option<KafkaBrokers> {
        match named {
            Some(list) => Some(KafkaBrokers {
                list: list.clone(),
                tls: None,
            }),
            None => self.brokers.as_ref().map(|list| KafkaBrokers {
                list: list.clone(),
                tls: self.tls.clone(),
            }),
        }
    }

    /// Refuses a sync block this node cannot publish: a Kafka publisher
    /// without brokers where the node has no stream, or any Kafka publisher
    /// on a node built without Kafka.
    pub fn check(&self, spec: &SyncSpec) -> Result<(), (String, String)> {
        for (i, source) in spec.sources.iter().enumerate() {
            if let Some(missing) = missing_feature(source) {
                return Err((format!("sync.sources[{i}].type"), missing.into()));
            }
        }
        if let Some(kafka) = spec.replay.as_ref().and_then(|r| r.kafka.as_ref()) {
            if !cfg!(feature = "kafka") {
                return Err((
                    "sync.replay.kafka".into(),
                    "this node was built without Kafka (cargo feature `kafka`)".into(),
                ));
            }
            if kafka.brokers.is_none() && self.brokers.is_none() {
                return Err((
                    "sync.replay.kafka.brokers".into(),
                    "no brokers, and the node has no stream.brokers (HANZO_TWIN_STREAM_BROKERS) to read from".into(),
                ));
            }
        }
        for (i, sink) in spec.publish.iter().enumerate() {
            let PublishSpec::Kafka(kafka) = sink else {
                continue;
            };
            if !cfg!(feature = "kafka") {
                return Err((
                    format!("sync.publish[{i}].type"),
                    "this node was built without Kafka (cargo feature `kafka`)".into(),
                ));
            }
            if kafka.brokers.is_none() && self.brokers.is_none() {
                return Err((
                    format!("sync.publish[{i}].brokers"),
                    "no brokers, and the node has no stream.brokers (HANZO_TWIN_STREAM_BROKERS) to publish to".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Why this node cannot run `source`: the cargo feature it was built
/// without.
fn missing_feature(source: &SourceSpec) -> Option<&'static str> {
    match source {
        SourceSpec::Ros2(_) if !cfg!(feature = "ros2") => {
            Some("this node was built without ROS 2 (cargo feature `ros2`)")
        }
        SourceSpec::Opcua(_) if !cfg!(feature = "opcua") => {
            Some("this node was built without OPC-UA (cargo feature `opcua`)")
        }
        _ => None,
    }
}

/// A source refused when written on a node built without it
/// ([`TwinSync::check`]); one stored before says so in its status.
#[cfg(not(all(feature = "ros2", feature = "opcua")))]
fn unbuilt(stats: &SourceStats, source: &SourceSpec) {
    let reason = missing_feature(source).unwrap_or("this node cannot run this source");
    stats.refuse(reason);
}

/// Recalibrations running on this node's blocking threads: one per core.
static FITS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
});

/// A standalone twin's: no sources, nothing published.
impl Default for TwinSync {
    fn default() -> Self {
        TwinSync::start(&SyncSpec::default(), "", &StreamSettings::default(), None).0
    }
}

impl TwinSync {
    /// The twin's sync state and the source actors it supervises.
    ///
    /// A twin whose sync block changes passes its `previous` sync: its
    /// history goes on, the latest readings stay, and readings still queued
    /// move to the new buffer (a switch from batch to realtime applies them
    /// at once; see [`TwinSync::has_queued`]).
    pub fn start(
        spec: &SyncSpec,
        twin_label: &str,
        stream: &StreamSettings,
        previous: Option<TwinSync>,
    ) -> (TwinSync, Vec<Arc<dyn ChildSpec>>) {
        // A replay's readings are pulled by the twin as it steps.
        let wakes = !matches!(spec.mode, SyncMode::Batch | SyncMode::Replay);
        let inbox = Inbox::new(spec.buffer_size, wakes);
        let (history, latest) = match previous {
            Some(previous) => {
                if previous.mode != spec.mode {
                    previous.history.record(
                        None,
                        "mode",
                        format!("{} → {}", previous.mode.as_str(), spec.mode.as_str()),
                        None,
                    );
                }
                inbox.refill(previous.inbox.take());
                (previous.history, previous.latest)
            }
            None => (SyncHistory::default(), BTreeMap::new()),
        };
        let mut sources = Vec::new();
        let mut children: Vec<Arc<dyn ChildSpec>> = Vec::new();
        for (index, source) in spec.sources.iter().enumerate() {
            let name = source.name(index);
            match source {
                SourceSpec::Mqtt(mqtt) => {
                    let stats = Arc::new(SourceStats::new(
                        name.clone(),
                        "mqtt",
                        mqtt.broker.clone(),
                        mqtt.topic.clone(),
                    ));
                    sources.push(stats.clone());
                    children.push(Arc::new(mqtt::MqttChild {
                        child_name: format!("sync:{name}"),
                        index,
                        spec: (**mqtt).clone(),
                        backoff_ms: spec.reconnect_backoff_ms.clone(),
                        inbox: inbox.clone(),
                        stats,
                        twin_label: twin_label.to_string(),
                        history: history.clone(),
                    }));
                }
                SourceSpec::Ros2(ros2) => {
                    let topics: Vec<&str> = ros2.topics.keys().map(String::as_str).collect();
                    let stats = Arc::new(SourceStats::new(
                        name.clone(),
                        "ros2",
                        format!("dds://127.0.0.1/domain/{}", ros2.domain_id),
                        topics.join(","),
                    ));
                    sources.push(stats.clone());
                    #[cfg(feature = "ros2")]
                    children.push(Arc::new(ros2::Ros2Child {
                        child_name: format!("sync:{name}"),
                        index,
                        spec: ros2.clone(),
                        inbox: inbox.clone(),
                        stats,
                        history: history.clone(),
                    }));
                    #[cfg(not(feature = "ros2"))]
                    unbuilt(&stats, source);
                }
                SourceSpec::Opcua(opcua) => {
                    let nodes: Vec<&str> = opcua.mapping.keys().map(String::as_str).collect();
                    let stats = Arc::new(SourceStats::new(
                        name.clone(),
                        "opcua",
                        opcua.endpoint.clone(),
                        nodes.join(","),
                    ));
                    sources.push(stats.clone());
                    #[cfg(feature = "opcua")]
                    children.push(Arc::new(opcua::OpcuaChild {
                        child_name: format!("sync:{name}"),
                        index,
                        spec: (**opcua).clone(),
                        backoff_ms: spec.reconnect_backoff_ms.clone(),
                        inbox: inbox.clone(),
                        stats,
                        history: history.clone(),
                    }));
                    #[cfg(not(feature = "opcua"))]
                    unbuilt(&stats, source);
                }
            }
        }
        let mut publishers = Vec::new();
        for (index, sink) in spec.publish.iter().enumerate() {
            let name = sink.name(index);
            match sink {
                PublishSpec::Mqtt(mqtt) => {
                    let broker = mqtt
                        .connection(&spec.sources)
                        .map(|c| c.broker.to_string())
                        .unwrap_or_default();
                    let stats = Arc::new(SourceStats::new(
                        name.clone(),
                        "mqtt",
                        broker,
                        mqtt.topic.clone(),
                    ));
                    publishers.push(stats.clone());
                    children.push(Arc::new(publish::MqttPublisherChild {
                        child_name: format!("publish:{name}"),
                        index,
                        spec: mqtt.clone(),
                        sources: spec.sources.clone(),
                        rate_hz: spec.rate_hz,
                        backoff_ms: spec.reconnect_backoff_ms.clone(),
                        stats,
                        history: history.clone(),
                        twin_label: twin_label.to_string(),
                    }));
                }
                PublishSpec::Kafka(kafka) => {
                    let (brokers, topic) = stream.kafka_target(kafka, twin_label);
                    let stats = Arc::new(SourceStats::new(
                        name.clone(),
                        "kafka",
                        brokers
                            .as_ref()
                            .map(KafkaBrokers::shown)
                            .unwrap_or_default(),
                        topic.clone(),
                    ));
                    publishers.push(stats.clone());
                    match brokers {
                        #[cfg(feature = "kafka")]
                        Some(brokers) => children.push(Arc::new(kafka::KafkaPublisherChild {
                            child_name: format!("publish:{name}"),
                            brokers,
                            topic,
                            rate_hz: spec.rate_hz,
                            stats,
                            twin_label: twin_label.to_string(),
                        })),
                        // Refused at create (see `StreamSettings::check`);
                        // a node restarted without its stream says why here.
                        _ => stats.refuse(if cfg!(feature = "kafka") {
                            "no brokers: set brokers, or the node's stream.brokers"
                        } else {
                            "this node was built without Kafka (cargo feature `kafka`)"
                        }),
                    }
                }
            }
        }
        let recordings = stream.recordings.clone();
        let mut replay = None;
        if let Some(spec_replay) = spec
            .replay
            .as_ref()
            .filter(|_| spec.mode == SyncMode::Replay)
        {
            let (origin, endpoint, topic) = match (&spec_replay.recording, &spec_replay.kafka) {
                (_, Some(kafka)) => {
                    // Refused at create without brokers (`StreamSettings::check`);
                    // a node restarted without its stream fails to open them.
                    let brokers =
                        stream
                            .kafka_brokers(kafka.brokers.as_ref())
                            .unwrap_or(KafkaBrokers {
                                list: String::new(),
                                tls: None,
                            });
                    let shown = brokers.shown();
                    let origin = replay::Origin::Kafka {
                        brokers,
                        topic: kafka.topic.clone(),
                    };
                    (origin, shown, kafka.topic.clone())
                }
                (name, None) => {
                    let name = name.clone().unwrap_or_default();
                    let file = recordings
                        .clone()
                        .unwrap_or_else(|| PathBuf::from("recordings"))
                        .join(&name);
                    (replay::Origin::File(file), name, String::new())
                }
            };
            let stats = Arc::new(SourceStats::new("replay".into(), "replay", endpoint, topic));
            let index = sources.len();
            sources.push(stats.clone());
            let (child, feed) = replay::ReplayChild::new(
                origin,
                spec_replay.speed,
                spec.buffer_size,
                index,
                stats,
                history.clone(),
            );
            children.push(Arc::new(child));
            replay = Some(feed);
        }
        let mut recording = None;
        let mut recording_stats = None;
        if spec.record {
            let file = recordings
                .unwrap_or_else(|| PathBuf::from("recordings"))
                .join(format!("{twin_label}.jsonl"));
            let stats = Arc::new(SourceStats::new(
                "record".into(),
                "recording",
                format!("{twin_label}.jsonl"),
                String::new(),
            ));
            publishers.push(stats.clone());
            let (child, queue) = replay::RecordChild::new(file, stats.clone());
            children.push(Arc::new(child));
            recording = Some(queue);
            recording_stats = Some(stats);
        }
        let mut alerts = None;
        if let Some(drift) = spec.drift_detection.as_ref().filter(|d| d.enabled) {
            let targets = alert_targets(drift, twin_label, stream);
            if !targets.is_empty() {
                for target in &targets {
                    publishers.push(match target {
                        alerts::AlertTarget::Webhook { stats, .. } => stats.clone(),
                        #[cfg(feature = "kafka")]
                        alerts::AlertTarget::Kafka { stats, .. } => stats.clone(),
                    });
                }
                let (tx, rx) = tokio::sync::mpsc::channel(alerts::QUEUE);
                alerts = Some(tx);
                children.push(Arc::new(alerts::AlertChild {
                    targets,
                    queue: Arc::new(tokio::sync::Mutex::new(rx)),
                    history: history.clone(),
                    twin_label: twin_label.to_string(),
                }));
            }
        }
        let sync = TwinSync {
            alerts,
            mode: spec.mode,
            window: (spec.mode == SyncMode::Batch)
                .then(|| Duration::from_secs_f64(1.0 / spec.rate_hz)),
            inbox,
            sources,
            publishers,
            latest,
            budget: Duration::from_millis(spec.latency_budget_ms),
            late: 0,
            twin_label: twin_label.to_string(),
            history,
            recorder: spec
                .drift_detection
                .as_ref()
                .filter(|d| d.enabled && d.response == DriftResponse::AutoRecalibrate)
                .map(|d| recalibrate::Recorder::new(Duration::from_secs_f64(d.window_seconds))),
            drift: spec.drift_detection.clone().filter(|d| d.enabled),
            errors: BTreeMap::new(),
            drifting: Default::default(),
            recalibrating: false,
            responded_at: None,
            twin: None,
            replay,
            recording,
            recording_stats,
        };
        (sync, children)
    }

    /// In batch mode, the sync period: the twin applies what is queued once
    /// per period.
    pub fn window(&self) -> Option<Duration> {
        self.window
    }

    /// Where recalibration results go: the twin's own actor.
    pub fn attach(&mut self, twin: ractor::ActorRef<crate::protocol::TwinMsg>) {
        self.twin = Some(twin);
    }

    /// Simulated seconds per wall-clock second on the realtime clock: a
    /// replay's speed, else 1.
    pub fn clock_rate(&self) -> f64 {
        self.replay.as_ref().map_or(1.0, |r| r.speed)
    }

    /// In replay mode, whether the twin's clock must wait for the
    /// recording's next reading (the player is still reading it).
    pub fn replay_starved(&mut self) -> bool {
        self.replay.as_mut().is_some_and(|r| r.starved())
    }

    /// In replay mode, queues the readings due at the twin's simulated
    /// `time`; whether there are any to take.
    pub fn replay_due(&mut self, time: f64) -> bool {
        match &mut self.replay {
            Some(feed) => feed.due(time, &self.inbox),
            None => false,
        }
    }

    /// The twin is about to step `sim`.
    pub fn before_step(&mut self, sim: &dyn Simulation) {
        if let Some(recorder) = &mut self.recorder {
            recorder.step(sim);
        }
    }

    /// The twin applied a joint command to `sim`.
    pub fn commanded(&mut self, sim: &dyn Simulation, joint: &str, command: JointCommand) {
        if let Some(recorder) = &mut self.recorder {
            recorder.command(sim, joint, command);
        }
    }

    /// A caller set a physical parameter of `sim`.
    pub fn parameter_set(&mut self, sim: &dyn Simulation, prim: &str, name: &str, value: f64) {
        if let Some(recorder) = &mut self.recorder {
            recorder.parameter(sim, prim, name, value);
        }
    }

    /// The twin's state was replaced (a restore): what was recorded no
    /// longer leads to it.
    pub fn state_replaced(&mut self) {
        if let Some(recorder) = &mut self.recorder {
            recorder.clear();
        }
        self.errors.clear();
    }

    /// Whether readings wait in the buffer.
    pub fn has_queued(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// Takes the queued readings: commands drive `sim`, measurements are
    /// kept. A reading naming what the scene lacks is counted as unmapped
    /// on its source.
    pub fn take(&mut self, sim: &mut dyn Simulation) {
        let mut measured = Vec::new();
        for reading in self.inbox.take() {
            let waited = reading.received.elapsed();
            metrics::histogram!("hanzo_twin_sync_latency_seconds", "twin" => self.twin_label.clone())
                .record(waited.as_secs_f64());
            if waited > self.budget {
                self.late += 1;
            }
            if let Some(queue) = &self.recording {
                let source = self.sources.get(reading.source).map(|s| s.name());
                if queue.try_send((reading.clone(), source)).is_err()
                    && let Some(stats) = &self.recording_stats
                {
                    stats.update(|s| s.skipped += 1);
                }
            }
            let target = reading.target.clone();
            match self.apply(sim, reading.clone()) {
                Ok(true) => measured.push(target),
                Ok(false) => {}
                Err(reason) => {
                    if let Some(stats) = self.sources.get(reading.source) {
                        stats.unread(&self.history, readings::Unread::Unmapped(reason));
                    }
                    metrics::counter!("hanzo_twin_sync_messages_total", "twin" => self.twin_label.clone(), "direction" => "in", "outcome" => "unmapped")
                    .increment(1);
                }
            }
        }
        if !measured.is_empty() {
            self.detect_drift(sim, measured);
            self.maybe_recalibrate(sim);
            self.maybe_hard_reset(sim);
        }
    }

    /// Applies a command, or keeps a measurement (then `Ok(true)`).
    fn apply(&mut self, sim: &mut dyn Simulation, reading: Reading) -> Result<bool, String> {
        let Reading {
            source,
            target,
            value,
            received_at,
            ..
        } = reading;
        let command = match target.attribute.as_deref() {
            Some("target_position") => Some(JointCommand::Position as fn(f64) -> JointCommand),
            Some("target_velocity") => Some(JointCommand::Velocity as fn(f64) -> JointCommand),
            Some("effort") => Some(JointCommand::Effort as fn(f64) -> JointCommand),
            _ => None,
        };
        if let Some(command) = command {
            let SyncValue::Scalar(v) = value else {
                return Err(format!("{target} takes a number"));
            };
            sim.set_joint_command(&target.prim, command(v))
                .map_err(|e| format!("{target}: {e}"))?;
            self.commanded(sim, &target.prim, command(v));
            return Ok(false);
        }
        if let Some(recorder) = &mut self.recorder {
            recorder.measure(sim, &target, &value);
        }
        self.latest.insert(
            target,
            Latest {
                source,
                value,
                received_at,
            },
        );
        Ok(true)
    }

    pub fn history(&self, after: Option<u64>, limit: usize) -> SyncHistoryPage {
        self.history.page(after, limit)
    }

    /// What a publisher sends: the twin's state, and for every measured
    /// attribute the latest reading beside what the twin predicts for it.
    pub fn prediction(&self, id: crate::record::TwinId, sim: &dyn Simulation) -> serde_json::Value {
        let observation = sim.observation("/").ok();
        serde_json::json!({
            "kind": "prediction",
            "twin_id": id,
            "time": sim.time(),
            "step": sim.step_count(),
            "wall_time": Utc::now(),
            "predictions": self.readings(observation.as_ref()),
            "drifting": self.drifting.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            "joints": observation.as_ref().map(|o| &o.joints),
            "bodies": observation.as_ref().map(|o| &o.bodies),
        })
    }

    fn readings(&self, observation: Option<&Observation>) -> Vec<ReadingStatus> {
        self.latest
            .iter()
            .map(|(target, latest)| {
                let predicted = observation.and_then(|o| predicted(o, target));
                let error = predicted.as_ref().and_then(|p| distance(p, &latest.value));
                let drift = self.drift_of(target);
                ReadingStatus {
                    drift: drift.map(|(mean, _, _)| mean),
                    threshold: drift.map(|(_, threshold, _)| threshold),
                    drifting: drift.is_some_and(|(_, _, drifting)| drifting),
                    target: target.to_string(),
                    source: self
                        .sources
                        .get(latest.source)
                        .map(|s| s.name())
                        .unwrap_or_default(),
                    value: latest.value.clone(),
                    received_at: latest.received_at,
                    predicted,
                    error,
                }
            })
            .collect()
    }

    pub fn status(&self, sim: &dyn Simulation) -> SyncStatus {
        let observation = sim.observation("/").ok();
        let readings = self.readings(observation.as_ref());
        SyncStatus {
            mode: self.mode,
            sources: self.sources.iter().map(|s| s.snapshot()).collect(),
            publishers: self.publishers.iter().map(|s| s.snapshot()).collect(),
            readings,
            buffer: BufferStatus {
                capacity: self.inbox.capacity(),
                queued: self.inbox.len(),
                dropped: self.inbox.dropped(),
                late: self.late,
            },
        }
    }
}

/// What the simulation holds for a measured attribute, where it models it:
/// a joint's `position` or `velocity`, a body's `pose`, `position` or
/// `xformOp:translate`.
fn predicted(observation: &Observation, target: &Target) -> Option<SyncValue> {
    let attribute = target.attribute.as_deref()?;
    if let Some(joint) = observation.joints.iter().find(|j| j.path == target.prim) {
        return match attribute {
            "position" => Some(SyncValue::Scalar(joint.position)),
            "velocity" => Some(SyncValue::Scalar(joint.velocity)),
            _ => None,
        };
    }
    let body = observation.bodies.iter().find(|b| b.path == target.prim)?;
    match attribute {
        "pose" => Some(SyncValue::Pose {
            position: body.position,
            orientation: body.orientation,
        }),
        "position" | "xformOp:translate" => Some(SyncValue::Vector(body.position)),
        _ => None,
    }
}

/// How far a reading is from its prediction: the absolute difference of
/// scalars, the Euclidean distance of positions.
fn distance(predicted: &SyncValue, measured: &SyncValue) -> Option<f64> {
    let position = |v: &SyncValue| match v {
        SyncValue::Vector(p) | SyncValue::Pose { position: p, .. } => Some(*p),
        SyncValue::Scalar(_) => None,
    };
    match (predicted, measured) {
        (SyncValue::Scalar(a), SyncValue::Scalar(b)) => Some((a - b).abs()),
        _ => {
            let (a, b) = (position(predicted)?, position(measured)?);
            Some(
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).powi(2))
                    .sum::<f64>()
                    .sqrt(),
            )
        }
    }
}

/// Where the twin's drift alerts go: the definition's webhook and, with
/// Kafka built in, the node's stream.
fn alert_targets(
    drift: &crate::definition::DriftDetection,
    twin_label: &str,
    stream: &StreamSettings,
) -> Vec<alerts::AlertTarget> {
    let mut targets = Vec::new();
    if let Some(url) = &drift.webhook {
        // The status shows where alerts go, never a token in the query.
        let shown = reqwest::Url::parse(url)
            .map(|mut u| {
                u.set_query(None);
                let _ = u.set_password(None);
                u.to_string()
            })
            .unwrap_or_default();
        targets.push(alerts::AlertTarget::Webhook {
            url: url.clone(),
            stats: Arc::new(SourceStats::new(
                "drift-webhook".into(),
                "webhook",
                shown,
                String::new(),
            )),
        });
    }
    #[cfg(feature = "kafka")]
    if let Some(brokers) = stream.kafka_brokers(None) {
        let topic = format!("{}.{twin_label}.alerts", stream.topic_prefix);
        targets.push(alerts::AlertTarget::Kafka {
            stats: Arc::new(SourceStats::new(
                "drift-stream".into(),
                "kafka",
                brokers.shown(),
                topic.clone(),
            )),
            brokers,
            topic,
        });
    }
    #[cfg(not(feature = "kafka"))]
    let _ = (twin_label, stream);
    targets
}
