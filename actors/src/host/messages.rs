//! The messages a node's twin host takes: requests from the API, the cluster
//! and embedded agents, and the host's own internal continuations.

use crate::definition::TwinDefinition;
use crate::error::TwinError;
use crate::protocol::{
    ForkOptions, LiveCopy, Reply, Scope, StartOptions, TwinFilter, TwinMsg, TwinRef,
};
use crate::record::{Clock, TwinId, TwinRecord};
use hanzo_twin_engines::SimState;

/// Messages to a node's twin host, the one entry point for twins on a node.
// Messages are moved into the mailbox once; boxing the large definitions would
// add an allocation per request for no gain.
#[allow(clippy::large_enum_variant)]
pub enum HostMsg {
    /// Creating, changing, starting, stopping and deleting twins, and
    /// their checkpoints ([`super::lifecycle`]).
    Lifecycle(LifecycleMsg),
    Get {
        twin: TwinRef,
        reply: Reply<TwinRecord>,
    },
    List {
        filter: TwinFilter,
        scope: Scope,
        reply: Reply<Vec<TwinRecord>>,
    },
    Fork {
        twin: TwinRef,
        options: ForkOptions,
        reply: Reply<TwinRecord>,
    },
    /// A fork whose running parent copied its simulation for it
    /// ([`TwinMsg::ForkInto`]); with no copy, forked as [`HostMsg::Fork`] is.
    ForkCopied {
        parent: TwinRef,
        copied: Result<Option<LiveCopy>, TwinError>,
        options: ForkOptions,
        reply: Reply<TwinRecord>,
    },
    /// Internal: spawn the actor of a fork just answered (sent to itself,
    /// so the answer goes out before the spawn's work).
    LaunchFork {
        /// Holds a simulation (Send, not Sync): only ever moved.
        launch: sync_wrapper::SyncWrapper<Box<super::forks::ForkLaunch>>,
    },
    /// Internal: a fork's actor, spawned off the host's loop once the fork
    /// was answered; requests for the fork waited for it.
    ForkSpawned {
        id: TwinId,
        activation: Box<super::Activation>,
        spawned: Result<ractor::ActorRef<TwinMsg>, ractor::SpawnErr>,
    },
    /// Deliver `msg` to the twin's actor, or reject it if the twin is not running.
    Route { twin: TwinRef, msg: TwinMsg },
    /// The running twin's actor, for a caller to message directly
    /// ([`crate::direct`]); an error when it is not running.
    Resolve {
        twin: TwinRef,
        /// The actor, and whether this request reactivated the twin.
        reply: Reply<(crate::direct::DirectRoute, bool)>,
    },
    /// Stop every twin with a final checkpoint, keeping their status so the next
    /// start of the node resumes them; answers once checkpoints are durable.
    Shutdown { reply: Reply<()> },
    /// Run one scene and one command sequence on several engines and report
    /// how their trajectories diverge. Answers when the runs finish; the host
    /// goes on serving meanwhile.
    CompareEngines {
        request: crate::compare::CompareRequest,
        scope: Scope,
        reply: Reply<hanzo_twin_engines::compare::CompareReport>,
    },
    /// About the node's RL environment batches.
    Gym(crate::gym::BatchMsg),
    /// The node's supervision tree now.
    Tree {
        scope: Scope,
        reply: Reply<crate::inspector::ActorNode>,
    },
    /// Events that change the tree, from now on.
    WatchTree {
        reply: Reply<tokio::sync::broadcast::Receiver<crate::inspector::TreeEvent>>,
    },
    /// What a fork of the twin starts from: the parent's record and state
    /// (live when it runs, else its last checkpoint), for a fork on another node.
    ForkSource {
        twin: TwinRef,
        reply: Reply<(TwinRecord, SimState)>,
    },
    /// Spawn a fork of `parent` (a twin on another node) here from `state`.
    ForkFrom {
        parent: Box<TwinRecord>,
        options: ForkOptions,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// Take over a running fork from another node, keeping its id.
    AdoptFork {
        record: Box<TwinRecord>,
        clock: Clock,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// Stored twins (matching `filter`, as `scope` sees them) that no node in
    /// `members` holds: released mid hand-off, or held by a node that is gone.
    ListUnheld {
        filter: TwinFilter,
        members: Vec<String>,
        scope: Scope,
        reply: Reply<Vec<TwinRecord>>,
    },
    /// How many twins run on this node.
    Load { reply: Reply<usize> },
    /// Bring what this node holds in line with placement: hand off up to
    /// `max_moves` twins it no longer owns (checkpoint, stop, release), and
    /// take over the twins it owns that no live node holds.
    Rebalance {
        max_moves: usize,
        reply: Reply<Rebalanced>,
    },
}

/// What changes a twin's lifecycle: create, update, start, stop, delete,
/// restore, checkpoint and passivation, with the host's own continuations.
// As HostMsg: moved once, not boxed.
#[allow(clippy::large_enum_variant)]
pub enum LifecycleMsg {
    /// A definition without an organization gets the scope's; one naming
    /// another organization than the scope's is refused.
    Create {
        definition: TwinDefinition,
        scope: Scope,
        reply: Reply<TwinRecord>,
    },
    /// Internal: a create whose scene was read off the host's loop.
    Admit {
        checked: Result<TwinDefinition, TwinError>,
        reply: Reply<TwinRecord>,
    },
    /// Internal: an admitted twin whose record could not be stored; it
    /// was not created after all.
    Unadmit {
        id: TwinId,
    },
    /// Apply a JSON merge patch (RFC 7396) to the definition.
    Update {
        twin: TwinRef,
        patch: serde_json::Value,
        reply: Reply<TwinRecord>,
    },
    /// Internal: an update whose new scene or engine was checked off the
    /// host's loop, against the record as it was changed last at `base`.
    UpdateChecked {
        id: TwinId,
        base: chrono::DateTime<chrono::Utc>,
        checked: Result<TwinDefinition, TwinError>,
        reply: Reply<TwinRecord>,
    },
    Delete {
        twin: TwinRef,
        reply: Reply<()>,
    },
    /// Internal: a twin whose deletion failed in the store; the host holds
    /// it again.
    Rehold {
        record: Box<TwinRecord>,
    },
    Start {
        twin: TwinRef,
        options: StartOptions,
        reply: Reply<TwinRecord>,
    },
    /// Internal: a start whose scene and checkpoint were read off the
    /// host's loop.
    Launch {
        id: TwinId,
        prepared: Result<super::lifecycle::Launch, TwinError>,
        then: Launched,
    },
    /// From a twin's actor: it has been paused and without requests for
    /// `passivate_after`; the host may passivate it.
    Idle {
        id: TwinId,
        actor: ractor::ActorId,
    },
    Stop {
        twin: TwinRef,
        reply: Reply<TwinRecord>,
    },
    /// Load a checkpoint into a twin: into the running simulation, or as the state
    /// the next start resumes from.
    Restore {
        twin: TwinRef,
        state: SimState,
        reply: Reply<TwinRecord>,
    },
    /// The latest checkpoint: live state when running, the stored one otherwise.
    Checkpoint {
        twin: TwinRef,
        reply: Reply<SimState>,
    },
}

impl HostMsg {
    /// The twin a request names, if it names one.
    pub fn twin_ref(&self) -> Option<&TwinRef> {
        match self {
            HostMsg::Lifecycle(msg) => msg.twin_ref(),
            HostMsg::Get { twin, .. }
            | HostMsg::Fork { twin, .. }
            | HostMsg::ForkCopied { parent: twin, .. }
            | HostMsg::Route { twin, .. }
            | HostMsg::Resolve { twin, .. }
            | HostMsg::ForkSource { twin, .. } => Some(twin),
            _ => None,
        }
    }

    /// Answers a request naming a twin with `err`, unhandled.
    pub fn refuse(self, err: TwinError) {
        // A caller that stopped waiting is not an error here.
        match self {
            HostMsg::Lifecycle(msg) => msg.refuse(err),
            HostMsg::Get { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Fork { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::ForkCopied { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::Route { msg, .. } => msg.reject(err),
            HostMsg::Resolve { reply, .. } => drop(reply.send(Err(err))),
            HostMsg::ForkSource { reply, .. } => drop(reply.send(Err(err))),
            other => {
                tracing::error!(
                    "refuse() called on a request that names no twin: {}",
                    std::any::type_name_of_val(&other)
                );
            }
        }
    }
}

impl LifecycleMsg {
    /// The twin a request names, if it names one.
    pub fn twin_ref(&self) -> Option<&TwinRef> {
        match self {
            LifecycleMsg::Update { twin, .. }
            | LifecycleMsg::Delete { twin, .. }
            | LifecycleMsg::Start { twin, .. }
            | LifecycleMsg::Stop { twin, .. }
            | LifecycleMsg::Restore { twin, .. }
            | LifecycleMsg::Checkpoint { twin, .. } => Some(twin),
            _ => None,
        }
    }

    /// Answers a request naming a twin with `err`, unhandled.
    pub fn refuse(self, err: TwinError) {
        // A caller that stopped waiting is not an error here.
        match self {
            LifecycleMsg::Update { reply, .. } => drop(reply.send(Err(err))),
            LifecycleMsg::Delete { reply, .. } => drop(reply.send(Err(err))),
            LifecycleMsg::Start { reply, .. } => drop(reply.send(Err(err))),
            LifecycleMsg::Stop { reply, .. } => drop(reply.send(Err(err))),
            LifecycleMsg::Restore { reply, .. } => drop(reply.send(Err(err))),
            LifecycleMsg::Checkpoint { reply, .. } => drop(reply.send(Err(err))),
            other => {
                tracing::error!(
                    "refuse() called on a request that names no twin: {}",
                    std::any::type_name_of_val(&other)
                );
            }
        }
    }
}

/// Who waits for a launch.
pub enum Launched {
    /// A start request, answered with the record.
    Started(Reply<TwinRecord>),
    /// A request for a passivated twin's actor.
    Reactivated(Reply<(crate::direct::DirectRoute, bool)>),
}

/// What one [`HostMsg::Rebalance`] did.
#[derive(Default)]
pub struct Rebalanced {
    /// Lasting twins released for their new owner.
    pub released: Vec<TwinId>,
    /// Twins taken over.
    pub adopted: Vec<TwinId>,
    /// Forks stopped here, to be adopted by their new owner: they live in no
    /// store, so their state travels with them.
    pub forks: Vec<(TwinRecord, Clock, SimState)>,
}

/// Local only: never sent between nodes.
impl ractor::Message for HostMsg {}

impl From<LifecycleMsg> for HostMsg {
    fn from(msg: LifecycleMsg) -> Self {
        HostMsg::Lifecycle(msg)
    }
}

impl From<crate::gym::BatchMsg> for HostMsg {
    fn from(msg: crate::gym::BatchMsg) -> Self {
        HostMsg::Gym(msg)
    }
}
