//! What the node knows about a twin: its definition plus lifecycle status.

use crate::definition::TwinDefinition;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A twin's id: a UUID (v7, so ids sort by creation time).
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
)]
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
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
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

    /// The twin as the API shows it: the definition's fields at the top
    /// level, as the spec's schema lists them, plus status and lineage.
    pub fn resource(&self) -> TwinResource {
        TwinResource {
            definition: self.definition.clone(),
            id: self.id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            parent: self.parent,
            ephemeral: self.ephemeral,
            status: self.status.clone(),
            runtime: None,
        }
    }

    /// [`TwinRecord::resource`] as JSON.
    pub fn to_api_json(&self) -> serde_json::Value {
        // Plain data with string keys: always representable.
        serde_json::to_value(self.resource()).unwrap_or(serde_json::Value::Null)
    }
}

/// A twin in the API: its definition's fields, then what the node adds.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct TwinResource {
    #[serde(flatten)]
    pub definition: TwinDefinition,
    pub id: TwinId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The twin this one was forked from.
    pub parent: Option<TwinId>,
    /// A fork: it never outlives the node process that runs it.
    pub ephemeral: bool,
    pub status: TwinStatus,
    /// The running actor's live figures, when the twin runs and answered
    /// promptly (`GET /v1/twins/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::protocol::TwinRuntimeInfo>,
}
