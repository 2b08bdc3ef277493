//! The live supervision tree: which actors a node runs, under whom, in what
//! state, how often they restarted and how many messages they handled; and
//! the stream of events (started, failed, restarted, stopped) that changes it.
//! The API serves both (`/v1/cluster/tree`), and the inspector page draws them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One actor and its children.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorNode {
    /// The actor's id in the runtime (changes when it restarts).
    pub actor_id: Option<String>,
    pub name: String,
    /// `node`, `host`, `twin`, `fork` or `gym`.
    pub kind: String,
    /// `running`, `passivated`, `stopped` or `failed`.
    pub status: String,
    /// What it simulates or serves (a twin's id, a gym batch's task).
    pub target: Option<String>,
    pub restarts: u32,
    pub messages: u64,
    pub children: Vec<ActorNode>,
}

impl ActorNode {
    /// A twin or fork held by the host; `running`: its actor and the
    /// messages it handled.
    pub fn twin(record: &crate::TwinRecord, running: Option<(ractor::ActorId, u64)>) -> ActorNode {
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
            messages: running.map_or(0, |(_, m)| m),
            children: Vec::new(),
        }
    }

    /// A node and its twin host, with the host's children: twins (by name)
    /// first, then gym batches (by id).
    pub fn node(node_id: &str, mut twins: Vec<ActorNode>, mut gyms: Vec<ActorNode>) -> ActorNode {
        twins.sort_by(|a, b| a.name.cmp(&b.name));
        gyms.sort_by(|a, b| a.name.cmp(&b.name));
        twins.extend(gyms);
        let host = ActorNode {
            actor_id: None,
            name: "twin-host".into(),
            kind: "host".into(),
            status: "running".into(),
            target: None,
            restarts: 0,
            messages: 0,
            children: twins,
        };
        ActorNode {
            actor_id: None,
            name: format!("node:{node_id}"),
            kind: "node".into(),
            status: "running".into(),
            target: None,
            restarts: 0,
            messages: 0,
            children: vec![host],
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
/// inspector's live view); cheap to clone, and nobody watching is fine.
#[derive(Debug, Clone)]
pub struct TreeEvents(tokio::sync::broadcast::Sender<TreeEvent>);

impl Default for TreeEvents {
    fn default() -> Self {
        // A watcher further behind than this misses events and is told so
        // (`RecvError::Lagged`); the tree itself can always be read again.
        TreeEvents(tokio::sync::broadcast::channel(256).0)
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
        let _ = self.0.send(TreeEvent {
            at: Utc::now(),
            organization: organization.to_string(),
            name: name.to_string(),
            kind: kind.to_string(),
            event: event.to_string(),
            detail,
        });
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
        self.0.subscribe()
    }
}

/// How many messages an actor has handled, shared with whoever reports it.
#[derive(Debug, Clone, Default)]
pub struct MessageCount(Arc<AtomicU64>);

impl MessageCount {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
