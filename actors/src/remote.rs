//! Twin requests as data, so a cluster can carry them to the node that holds the
//! twin. A request travels as one frame: a JSON header (the request and the
//! caller's scope) and an opaque binary part (an encoded `SimState`, a
//! recording), so large states are never inflated into JSON.
//!
//! The cluster layer only moves bytes ([`ClusterLink`]); what they mean is
//! decided here, beside the messages they stand for.

use crate::definition::{Name, TwinDefinition};
use crate::error::TwinError;
use crate::protocol::{ForkOptions, Scope, StartOptions, TwinFilter, TwinOp, TwinOpReply};
use crate::record::{Clock, TwinRecord};
use crate::store::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a node of a cluster offers the twin layer: who owns a key, who else is
/// there, and a way to send a frame to another node and get one back.
pub trait ClusterLink: Send + Sync + 'static {
    /// This node's id.
    fn local_node(&self) -> String;
    /// Whether this node hosts twins (a client-only member does not).
    fn hosts_twins(&self) -> bool;
    /// The node that owns `key` (a twin id, or a name's placement key) among the
    /// live nodes that host twins.
    fn owner(&self, key: &str) -> Option<String>;
    /// The other live nodes that host twins.
    fn peers(&self) -> Vec<String>;
    /// Sends `frame` to `node` and waits at most `timeout` for its answer.
    /// `Err` says why there is none (unreachable, timed out), for people.
    fn call(
        &self,
        node: &str,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>>;
    /// Sends a request for the jobs of `node` ([`crate::jobs`]: a cancel, a
    /// page of a log) and waits at most `timeout` for its answer.
    fn call_jobs(
        &self,
        node: &str,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>>;
    /// Tells `node`, without waiting, that the twin it reads as `key` in
    /// `scope` has changed ([`crate::direct::RemoteViews`]); a word that
    /// cannot be sent is dropped (the reader's lease bounds what it misses).
    fn twin_changed(&self, node: &str, scope: &Scope, key: &str);
    /// Counts the membership's changes: a read cached from another node is
    /// not served across one (its twin may have moved, its owner restarted).
    fn membership_version(&self) -> u64;
}

/// Whether this node should hold `key` (a twin id), as placement decides.
pub trait Placement: Send + Sync + 'static {
    fn owns(&self, key: &str) -> bool;
}

/// One request for twins, by id or name where it names one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinRequest {
    Create {
        definition: TwinDefinition,
    },
    Get {
        twin: String,
    },
    List {
        filter: TwinFilter,
    },
    Update {
        twin: String,
        patch: serde_json::Value,
    },
    Delete {
        twin: String,
    },
    Start {
        twin: String,
        options: StartOptions,
    },
    Stop {
        twin: String,
    },
    Fork {
        twin: String,
        options: ForkOptions,
    },
    Checkpoint {
        twin: String,
    },
    /// The state travels as the binary part.
    Restore {
        twin: String,
    },
    /// An operation on the running twin.
    Twin {
        twin: String,
        op: TwinOp,
    },
    Recording {
        twin: String,
    },
    /// Spawn a fork of `parent` here from the state in the binary part.
    ForkFrom {
        parent: TwinRecord,
        options: ForkOptions,
    },
    /// Take over a running fork, keeping its id, from the state in the binary
    /// part (a hand-off when placement moves it here).
    AdoptFork {
        record: TwinRecord,
        clock: Clock,
    },
    /// The twin's state read, as JSON in the binary part. `watcher`, a node
    /// that will cache the answer, is told when the twin next changes.
    StateJson {
        twin: String,
        watcher: Option<String>,
    },
    /// Stored twins no node in `members` holds.
    ListUnheld {
        filter: TwinFilter,
        members: Vec<String>,
    },
    /// How many twins run here.
    Load,
}

impl TwinRequest {
    /// The twin the request names, if it names one.
    pub fn twin(&self) -> Option<&str> {
        use TwinRequest::*;
        match self {
            Get { twin }
            | Update { twin, .. }
            | Delete { twin }
            | Start { twin, .. }
            | Stop { twin }
            | Fork { twin, .. }
            | Checkpoint { twin }
            | Restore { twin }
            | Twin { twin, .. }
            | StateJson { twin, .. }
            | Recording { twin } => Some(twin),
            Create { .. }
            | List { .. }
            | ListUnheld { .. }
            | ForkFrom { .. }
            | AdoptFork { .. }
            | Load => None,
        }
    }
}

/// The answer to a [`TwinRequest`]; states and recordings travel as the binary
/// part.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TwinReply {
    Record(Box<TwinRecord>),
    Records(Vec<TwinRecord>),
    Done,
    /// An encoded `SimState` is in the binary part.
    State,
    /// A bincode-encoded `(SceneModel, Recording)` is in the binary part.
    Recording,
    /// A twin operation's answer, and whether the request reactivated the
    /// twin.
    Twin {
        reply: TwinOpReply,
        reactivated: bool,
    },
    Load(usize),
    /// A state read's JSON is in the binary part; `watched`: its reader
    /// will be told when it changes.
    StateJson {
        reactivated: bool,
        watched: bool,
    },
}

impl TwinRequest {
    /// Whether the request may change a twin (everything but reads).
    pub fn may_change_twin(&self) -> bool {
        use TwinRequest::*;
        match self {
            Get { .. } | List { .. } | ListUnheld { .. } | Checkpoint { .. } | Load => false,
            StateJson { .. } | Recording { .. } => false,
            Twin { op, .. } => !op.is_read(),
            _ => true,
        }
    }
}

/// A request as it crosses nodes: who asks (their organization, or the whole
/// node) and what.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    organization: Option<String>,
    request: TwinRequest,
}

/// Joins a JSON header and a binary part into one frame: the header's length
/// (u32, big-endian), the header, the binary part.
fn frame(header: &impl Serialize, blob: &[u8]) -> Vec<u8> {
    // Serializing these plain data types to JSON cannot fail.
    let head = serde_json::to_vec(header).unwrap_or_default();
    let mut out = Vec::with_capacity(4 + head.len() + blob.len());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(blob);
    out
}

fn unframe<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, Vec<u8>), String> {
    let len = bytes
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or("a frame shorter than its header length")?;
    let head = bytes
        .get(4..4 + len)
        .ok_or("a frame shorter than its header")?;
    let header = serde_json::from_slice(head).map_err(|e| format!("unreadable frame: {e}"))?;
    Ok((header, bytes[4 + len..].to_vec()))
}

fn organization_of(scope: &Scope) -> Option<String> {
    match scope {
        Scope::Node => None,
        Scope::Organization(org) => Some(org.to_string()),
    }
}

/// Encodes a request from `scope`.
pub fn encode_request(scope: &Scope, request: &TwinRequest, blob: &[u8]) -> Vec<u8> {
    let organization = organization_of(scope);
    let header = Header {
        organization,
        request: request.clone(),
    };
    frame(&header, blob)
}

/// A twin's change, as told to a node caching its state read.
pub fn encode_changed(scope: &Scope, key: &str) -> Vec<u8> {
    let organization = organization_of(scope);
    frame(&(organization, key), &[])
}

pub fn decode_changed(bytes: &[u8]) -> Result<(Scope, String), String> {
    let ((organization, key), _): ((Option<String>, String), Vec<u8>) = unframe(bytes)?;
    Ok((scope_of(organization)?, key))
}

fn scope_of(organization: Option<String>) -> Result<Scope, String> {
    Ok(match organization {
        None => Scope::Node,
        Some(org) => Scope::Organization(Name::new(&org)?),
    })
}

/// Decodes a request: its scope, the request, its binary part.
pub fn decode_request(bytes: &[u8]) -> Result<(Scope, TwinRequest, Vec<u8>), String> {
    let (header, blob): (Header, Vec<u8>) = unframe(bytes)?;
    Ok((scope_of(header.organization)?, header.request, blob))
}

pub fn encode_reply(result: Result<(TwinReply, Vec<u8>), TwinError>) -> Vec<u8> {
    match result {
        Ok((reply, blob)) => frame(&Ok::<TwinReply, TwinError>(reply), &blob),
        Err(e) => frame(&Err::<TwinReply, TwinError>(e), &[]),
    }
}

pub fn decode_reply(bytes: &[u8]) -> Result<Result<(TwinReply, Vec<u8>), TwinError>, String> {
    let (header, blob): (Result<TwinReply, TwinError>, Vec<u8>) = unframe(bytes)?;
    Ok(header.map(|r| (r, blob)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_errors_survive_the_wire() {
        let scope = Scope::Organization(Name::new("acme").expect("name"));
        let req = TwinRequest::Twin {
            twin: "arm".into(),
            op: TwinOp::Step { steps: 7 },
        };
        let bytes = encode_request(&scope, &req, &[1, 2, 3]);
        let (s, r, blob) = decode_request(&bytes).expect("decodes");
        assert_eq!(s, scope);
        assert!(matches!(
            r,
            TwinRequest::Twin {
                op: TwinOp::Step { steps: 7 },
                ..
            }
        ));
        assert_eq!(blob, vec![1, 2, 3]);

        let err = TwinError::Timeout {
            id: "x".into(),
            what: "state".into(),
            timeout_ms: 5,
        };
        let back = decode_reply(&encode_reply(Err(err))).expect("decodes");
        assert!(matches!(
            back,
            Err(TwinError::Timeout { ref what, timeout_ms: 5, .. }) if what == "state"
        ));
        let engine = TwinError::Engine {
            kind: crate::error::EngineFailure::Diverged,
            field: Some("steps".into()),
            message: "NaN".into(),
        };
        let back = decode_reply(&encode_reply(Err(engine))).expect("decodes");
        assert!(matches!(
            back,
            Err(TwinError::Engine {
                kind: crate::error::EngineFailure::Diverged,
                ..
            })
        ));
        assert!(decode_reply(&[0, 0]).is_err());
        assert!(decode_request(&[0, 0, 0, 9, b'{']).is_err());
    }
}
