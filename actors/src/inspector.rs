//! The live supervision tree: which actors a node runs, under whom, in what
//! state, how often they restarted and how many messages they handled; and
//! the stream of events (started, failed, restarted, stopped) that changes it.
//! The API serves both (`/v1/cluster/tree`), and the inspector page draws them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One actor and its children.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActorNode {
    /// The actor's id in the runtime (changes when it restarts).
    pub actor_id: Option<String>,
    pub name: String,
    /// `node`, `host`, `twin`, `fork`, `gym`, `render_pool`,
    /// `render_worker`, or a twin child's (`sync`, `publish`).
    pub kind: String,
    /// `running`, `passivated`, `stopped` or `failed`.
    pub status: String,
    /// What it simulates or serves (a twin's id, a gym batch's task).
    pub target: Option<String>,
    pub restarts: u32,
    pub messages: u64,
    /// Seconds since its actor's figures began (its start); `null` for the
    /// node and host rows.
    #[serde(default)]
    pub uptime_s: Option<f64>,
    /// Mean time (µs) its actor took to handle a message, over the messages
    /// it timed; `null` before the first.
    #[serde(default)]
    pub handling_mean_us: Option<f64>,
    /// Whose actor it is (twins, forks, their children and gym batches).
    #[serde(default)]
    pub organization: Option<String>,
    /// Requests sent to the actor and not answered yet: its mailbox and the
    /// one in hand (ractor does not expose a queue length, so the senders
    /// count): a twin's and a gym batch's routed requests, the frames
    /// waiting in the render pool, and the frame a render worker draws (0
    /// or 1). `null` where the actor takes no routed requests.
    #[serde(default)]
    pub mailbox: Option<u64>,
    /// Size of the engine state the actor holds, in bytes, as of its latest
    /// checkpoint; `null` before one or where there is none.
    #[serde(default)]
    pub state_bytes: Option<u64>,
    /// Its latest failures, restarts and give-ups, oldest first.
    #[serde(default)]
    pub timeline: Vec<TimelineEntry>,
    pub children: Vec<ActorNode>,
}

/// One failure, restart or give-up of an actor.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `failed`, `restarted` or `gave_up`.
    pub event: String,
    /// The reason, where one was given.
    pub detail: Option<String>,
}

impl ActorNode {
    /// A twin or fork held by the host; `running`: its actor and the
    /// messages it handled.
    pub fn twin(
        record: &crate::TwinRecord,
        running: Option<(ractor::ActorId, &MessageCount)>,
    ) -> ActorNode {
        let status = match (&running, record.status.state) {
            (Some(_), _) => "running",
            (None, crate::Lifecycle::Running) if record.status.passivated => "passivated",
            (None, crate::Lifecycle::Failed) => "failed",
            (None, _) => "stopped",
        };
        ActorNode {
            actor_id: running.as_ref().map(|(id, _)| id.to_string()),
            name: record.definition.name.to_string(),
            kind: if record.ephemeral { "fork" } else { "twin" }.into(),
            status: status.into(),
            target: Some(record.id.to_string()),
            restarts: record.status.restarts,
            messages: running.as_ref().map_or(0, |(_, m)| m.get()),
            uptime_s: running.as_ref().map(|(_, m)| m.uptime_s()),
            handling_mean_us: running.as_ref().and_then(|(_, m)| m.handling_mean_us()),
            organization: Some(record.definition.organization().to_string()),
            state_bytes: running.as_ref().and_then(|(_, m)| m.state_bytes()),
            ..ActorNode::default()
        }
    }

    /// A node and its twin host, with the host's children: twins (by name)
    /// first, then gym batches (by id); then the node's render pool.
    pub fn node(
        node_id: &str,
        mut twins: Vec<ActorNode>,
        mut gyms: Vec<ActorNode>,
        render: Option<ActorNode>,
        jobs: ActorNode,
    ) -> ActorNode {
        twins.sort_by(|a, b| a.name.cmp(&b.name));
        gyms.sort_by(|a, b| a.name.cmp(&b.name));
        twins.extend(gyms);
        let host = ActorNode {
            actor_id: None,
            name: "twin-host".into(),
            kind: "host".into(),
            status: "running".into(),
            children: twins,
            ..ActorNode::default()
        };
        ActorNode {
            actor_id: None,
            name: format!("node:{node_id}"),
            kind: "node".into(),
            status: "running".into(),
            children: std::iter::once(host)
                .chain(render)
                .chain(std::iter::once(jobs))
                .collect(),
            ..ActorNode::default()
        }
    }
}

/// Something that changed the tree.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeEvent {
    pub at: DateTime<Utc>,
    /// Whose actor it is (watchers see only their organization's).
    pub organization: String,
    /// The actor's name as the tree shows it.
    pub name: String,
    pub kind: String,
    /// `started`, `failed`, `restarted`, `gave_up` or `stopped`.
    pub event: String,
    pub detail: Option<String>,
}

/// Where changes to the supervision tree are told to whoever watches it (the
/// inspector's live view), and where the latest failures and restarts are
/// kept for the tree's timelines; cheap to clone, and nobody watching is fine.
#[derive(Debug, Clone)]
pub struct TreeEvents {
    sender: tokio::sync::broadcast::Sender<TreeEvent>,
    restarts: Arc<std::sync::Mutex<std::collections::VecDeque<TreeEvent>>>,
}

/// Failures, restarts and give-ups kept for the timelines, node-wide.
const TIMELINE_KEPT: usize = 2000;
/// At most this many of them per actor in the tree.
const TIMELINE_PER_ACTOR: usize = 20;

impl Default for TreeEvents {
    fn default() -> Self {
        // A watcher further behind than this misses events and is told so
        // (`RecvError::Lagged`); the tree itself can always be read again.
        TreeEvents {
            sender: tokio::sync::broadcast::channel(256).0,
            restarts: Arc::default(),
        }
    }
}

/// Timelines by organization and the actor's name in events.
pub type Timelines = std::collections::HashMap<(String, String), Vec<TimelineEntry>>;

impl ActorNode {
    /// Gives this actor and those under it their timelines: a row with an
    /// organization is found by its name, a twin's child by
    /// `<twin>/<child>` as its events name it.
    pub fn attach_timelines(&mut self, timelines: &Timelines, parent: Option<&str>) {
        if let Some(org) = &self.organization {
            let name = match parent {
                Some(p) => format!("{p}/{}", self.name),
                None => self.name.clone(),
            };
            if let Some(entries) = timelines.get(&(org.clone(), name)) {
                self.timeline = entries.clone();
            }
        }
        let own = (self.organization.is_some() && parent.is_none()).then(|| self.name.clone());
        for child in &mut self.children {
            child.attach_timelines(timelines, own.as_deref());
        }
    }
}

impl TreeEvents {
    /// An actor of `organization`, shown as `name`, changed.
    pub fn emit(
        &self,
        organization: &str,
        name: &str,
        kind: &str,
        event: &str,
        detail: Option<String>,
    ) {
        let event = TreeEvent {
            at: Utc::now(),
            organization: organization.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail,
        };
        if matches!(event.event.as_str(), "failed" | "restarted" | "gave_up")
            && let Ok(mut kept) = self.restarts.lock()
        {
            if kept.len() == TIMELINE_KEPT {
                kept.pop_front();
            }
            kept.push_back(event.clone());
        }
        let _ = self.sender.send(event);
    }

    /// The kept failures, restarts and give-ups, by actor, newest
    /// [`TIMELINE_PER_ACTOR`] of each, oldest first.
    pub fn timelines(&self) -> Timelines {
        let mut by_actor = Timelines::new();
        let Ok(kept) = self.restarts.lock() else {
            return by_actor;
        };
        for e in kept.iter().rev() {
            let entries = by_actor
                .entry((e.organization.clone(), e.name.clone()))
                .or_default();
            if entries.len() < TIMELINE_PER_ACTOR {
                entries.push(TimelineEntry {
                    at: e.at,
                    event: e.event.clone(),
                    detail: e.detail.clone(),
                });
            }
        }
        for entries in by_actor.values_mut() {
            entries.reverse();
        }
        by_actor
    }

    /// A twin's (or fork's) actor changed.
    pub fn twin(&self, record: &crate::TwinRecord, event: &str, detail: Option<String>) {
        let kind = if record.ephemeral { "fork" } else { "twin" };
        let organization = record.definition.organization();
        self.emit(
            organization,
            record.definition.name.as_str(),
            kind,
            event,
            detail,
        );
    }

    /// Events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TreeEvent> {
        self.sender.subscribe()
    }
}

/// How many messages an actor has handled and how long they took, since its
/// figures began; shared with whoever reports it.
#[derive(Debug, Clone)]
pub struct MessageCount(Arc<Figures>);

#[derive(Debug)]
struct Figures {
    messages: AtomicU64,
    /// Messages whose handling was timed, and their total time.
    timed: AtomicU64,
    busy_ns: AtomicU64,
    /// Bytes of the engine state at the latest checkpoint; 0: none yet.
    state_bytes: AtomicU64,
    since: std::time::Instant,
}

impl Default for MessageCount {
    fn default() -> Self {
        MessageCount(Arc::new(Figures {
            messages: AtomicU64::new(0),
            timed: AtomicU64::new(0),
            busy_ns: AtomicU64::new(0),
            state_bytes: AtomicU64::new(0),
            since: std::time::Instant::now(),
        }))
    }
}

impl MessageCount {
    pub fn bump(&self) {
        self.0.messages.fetch_add(1, Ordering::Relaxed);
    }

    /// One message handled, in `took`.
    pub fn handled(&self, took: std::time::Duration) {
        self.bump();
        self.0.timed.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.busy_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Times the handling of one message: it counts, with its time, when
    /// the returned guard is dropped (a panic included).
    pub fn time(&self) -> HandlingTimer {
        HandlingTimer {
            count: self.clone(),
            started: std::time::Instant::now(),
        }
    }

    pub fn get(&self) -> u64 {
        self.0.messages.load(Ordering::Relaxed)
    }

    pub fn uptime_s(&self) -> f64 {
        self.0.since.elapsed().as_secs_f64()
    }

    /// The engine state the actor holds was `bytes` long when last saved.
    pub fn set_state_bytes(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.0.state_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn state_bytes(&self) -> Option<u64> {
        Some(self.0.state_bytes.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    pub fn handling_mean_us(&self) -> Option<f64> {
        let timed = self.0.timed.load(Ordering::Relaxed);
        (timed > 0).then(|| self.0.busy_ns.load(Ordering::Relaxed) as f64 / timed as f64 / 1e3)
    }
}

/// See [`MessageCount::time`].
pub struct HandlingTimer {
    count: MessageCount,
    started: std::time::Instant,
}

impl Drop for HandlingTimer {
    fn drop(&mut self) {
        self.count.handled(self.started.elapsed());
    }
}

/// Requests sent to one actor and not answered yet (see
/// [`ActorNode::mailbox`]); shared by its senders.
#[derive(Debug, Clone, Default)]
pub struct Mailbox(Arc<AtomicU64>);

impl Mailbox {
    /// One request sent: it counts until the returned guard is dropped, when
    /// its answer came (or the sender stopped waiting).
    pub fn sent(&self) -> Pending {
        self.0.fetch_add(1, Ordering::Relaxed);
        Pending(self.clone())
    }

    pub fn depth(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// See [`Mailbox::sent`].
pub struct Pending(Mailbox);

impl Drop for Pending {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The jobs a node's jobs host runs, as the tree shows them: kept by the
/// jobs host, read by the twin host when it draws the tree.
#[derive(Debug, Clone, Default)]
pub struct JobsBoard(Arc<std::sync::Mutex<std::collections::BTreeMap<String, JobRow>>>);

#[derive(Debug, Clone)]
struct JobRow {
    actor: ractor::ActorId,
    organization: String,
    /// What it does (`train robot-arm-cell`).
    target: String,
    attempts: u32,
    since: std::time::Instant,
}

impl JobsBoard {
    /// Job `id` of `organization` runs in `actor`.
    pub fn started(
        &self,
        id: &str,
        actor: ractor::ActorId,
        organization: &str,
        target: String,
        attempts: u32,
    ) {
        if let Ok(mut rows) = self.0.lock() {
            rows.insert(
                id.to_string(),
                JobRow {
                    actor,
                    organization: organization.to_string(),
                    target,
                    attempts,
                    since: std::time::Instant::now(),
                },
            );
        }
    }

    pub fn ended(&self, id: &str) {
        if let Ok(mut rows) = self.0.lock() {
            rows.remove(id);
        }
    }

    /// No job runs (a jobs host starting).
    pub fn clear(&self) {
        if let Ok(mut rows) = self.0.lock() {
            rows.clear();
        }
    }

    /// The jobs host and the running jobs `admits` lets through (by
    /// organization), oldest id first.
    pub fn tree_node(&self, admits: impl Fn(&str) -> bool) -> ActorNode {
        let children = self.0.lock().map_or_else(
            |_| Vec::new(),
            |rows| {
                rows.iter()
                    .filter(|(_, r)| admits(&r.organization))
                    .map(|(id, r)| ActorNode {
                        actor_id: Some(r.actor.to_string()),
                        name: id.clone(),
                        kind: "job".into(),
                        status: "running".into(),
                        target: Some(r.target.clone()),
                        // A job that resumed (node restart, take-over) ran before.
                        restarts: r.attempts.saturating_sub(1),
                        uptime_s: Some(r.since.elapsed().as_secs_f64()),
                        organization: Some(r.organization.clone()),
                        ..ActorNode::default()
                    })
                    .collect()
            },
        );
        ActorNode {
            name: "jobs".into(),
            kind: "jobs".into(),
            status: "running".into(),
            children,
            ..ActorNode::default()
        }
    }
}
