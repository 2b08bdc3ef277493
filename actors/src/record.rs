//! What the node knows about a twin: its definition plus lifecycle status.

use crate::definition::TwinDefinition;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A twin's id: a UUID (v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TwinId(pub uuid::Uuid);

impl TwinId {
    pub fn new() -> TwinId {
        TwinId(uuid::Uuid::now_v7())
    }

    pub fn parse(s: &str) -> Option<TwinId> {
        uuid::Uuid::parse_str(s).ok().map(TwinId)
    }
}

impl Default for TwinId {
    fn default() -> Self {
        TwinId::new()
    }
}

impl fmt::Display for TwinId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a twin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Defined, no simulation allocated.
    Stopped,
    /// Simulation allocated and accepting commands.
    Running,
    /// Crashed more often than the restart limit allows; stays down until started
    /// again by hand.
    Failed,
}

/// How a running twin's clock advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// Steps at `step_hz` against the wall clock.
    #[default]
    Realtime,
    /// Steps as fast as the engine can, yielding between batches so commands
    /// still get through.
    Fast,
    /// Steps only when asked to.
    Paused,
}

/// Lifecycle status, kept with the definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinStatus {
    pub state: Lifecycle,
    pub clock: Clock,
    /// Restarts after crashes since the twin was last started by hand.
    pub restarts: u32,
    /// The last failure, for people.
    pub last_error: Option<String>,
    /// The node this twin runs on (or last ran on).
    pub node: Option<String>,
    /// A running twin whose paused clock and silence deactivated it: its
    /// state is its checkpoint and its actor is gone. The next request
    /// reactivates it (see `docs/semantics.md`).
    #[serde(default)]
    pub passivated: bool,
}

impl Default for TwinStatus {
    fn default() -> Self {
        TwinStatus {
            state: Lifecycle::Stopped,
            clock: Clock::Realtime,
            restarts: 0,
            last_error: None,
            node: None,
            passivated: false,
        }
    }
}

/// A stored twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinRecord {
    pub id: TwinId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub definition: TwinDefinition,
    /// The twin this one was forked from.
    pub parent: Option<TwinId>,
    /// Forks are ephemeral: they never outlive the node process that runs them.
    pub ephemeral: bool,
    pub status: TwinStatus,
}

impl TwinRecord {
    pub fn new(definition: TwinDefinition) -> TwinRecord {
        let now = Utc::now();
        TwinRecord {
            id: TwinId::new(),
            created_at: now,
            updated_at: now,
            definition,
            parent: None,
            ephemeral: false,
            status: TwinStatus::default(),
        }
    }

    /// The JSON shape the API returns: the definition's fields at the top level,
    /// as the spec's schema lists them, plus status and lineage.
    pub fn to_api_json(&self) -> serde_json::Value {
        let mut obj = match self.definition.to_value() {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        obj.insert("id".into(), serde_json::json!(self.id));
        obj.insert("created_at".into(), serde_json::json!(self.created_at));
        obj.insert("updated_at".into(), serde_json::json!(self.updated_at));
        obj.insert("parent".into(), serde_json::json!(self.parent));
        obj.insert("ephemeral".into(), serde_json::json!(self.ephemeral));
        obj.insert("status".into(), serde_json::json!(self.status));
        serde_json::Value::Object(obj)
    }
}
