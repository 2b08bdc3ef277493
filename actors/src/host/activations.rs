//! Which of the twins a host holds have an actor now, and what waits for
//! the ones changing: a start reading its scene, or a passivation draining
//! its actor. Callers' direct routes to a twin's actor (see `RouteCache`)
//! are dropped when that actor goes from here.

use super::HostMsg;
use crate::direct::RouteCache;
use crate::protocol::TwinMsg;
use crate::record::{Clock, TwinId};
use hanzo_twin_engines::SceneModel;
use ractor::{ActorId, ActorRef};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// A twin's running actor, and what its restart needs.
pub(super) struct Running {
    pub actor: ActorRef<TwinMsg>,
    pub view: Arc<crate::direct::TwinView>,
    pub messages: crate::inspector::MessageCount,
    pub scene: Arc<SceneModel>,
    pub clock: Clock,
    /// When this twin crashed recently, for the restart-intensity limit.
    pub crashes: VecDeque<Instant>,
    /// The twin's children, as the tree draws them.
    pub children: crate::children::ChildBoard,
}

impl Running {
    /// How callers reach this actor directly.
    pub fn route(&self) -> crate::direct::DirectRoute {
        crate::direct::DirectRoute {
            actor: self.actor.clone(),
            view: self.view.clone(),
        }
    }
}

/// What an actor that ended was to its host.
pub(super) enum Ended {
    /// The actor of a twin being passivated: the twin is settled now.
    Passivated(TwinId),
    /// The twin's current actor: it crashed, or ended when nobody asked.
    Current(TwinId),
    /// An actor the host had already let go (stopped, replaced).
    Released,
}

pub(super) struct Activations {
    running: HashMap<TwinId, Running>,
    /// Twins on their way up or down: requests naming them wait here, in
    /// order, and are handled again once they are settled.
    settling: HashMap<TwinId, Vec<HostMsg>>,
    /// Actors draining to passivate their twin, until they end.
    passivating: HashMap<ActorId, TwinId>,
    /// Every twin actor spawned whose end the host has not seen yet.
    by_actor: HashMap<ActorId, TwinId>,
    routes: Arc<RouteCache>,
}

impl Activations {
    pub fn new(routes: Arc<RouteCache>) -> Activations {
        Activations {
            running: HashMap::new(),
            settling: HashMap::new(),
            passivating: HashMap::new(),
            by_actor: HashMap::new(),
            routes,
        }
    }

    pub fn get(&self, id: TwinId) -> Option<&Running> {
        self.running.get(&id)
    }

    pub fn is_running(&self, id: TwinId) -> bool {
        self.running.contains_key(&id)
    }

    /// How many twins have an actor here.
    pub fn count(&self) -> usize {
        self.running.len()
    }

    pub fn running_ids(&self) -> Vec<TwinId> {
        self.running.keys().copied().collect()
    }

    /// Records the twin's freshly spawned actor.
    pub fn add(&mut self, id: TwinId, running: Running) {
        self.by_actor.insert(running.actor.get_id(), id);
        if let Some(replaced) = self.running.insert(id, running) {
            replaced.view.ended();
        }
    }

    /// Lets go of the twin's actor (its end is then `Released`).
    pub fn remove(&mut self, id: TwinId) -> Option<Running> {
        let running = self.running.remove(&id)?;
        // Routes to it are stale from now; nodes caching its state read must
        // not wait for a change that its successor's view would report.
        running.view.ended();
        Some(running)
    }

    /// Callers' routes to the twin's actor are stale, though it still runs
    /// until let go.
    pub fn retire(&self, id: TwinId) {
        if let Some(running) = self.running.get(&id) {
            running.view.ended();
        }
    }

    /// Callers must resolve every twin again (one was renamed: a name may
    /// now mean another twin).
    pub fn invalidate_routes(&self) {
        self.routes.invalidate();
    }

    /// Marks the twin as changing, so requests naming it wait; `false` when
    /// it already is.
    pub fn begin_settling(&mut self, id: TwinId) -> bool {
        if self.settling.contains_key(&id) {
            return false;
        }
        self.settling.insert(id, Vec::new());
        true
    }

    pub fn is_settling(&self, id: TwinId) -> bool {
        self.settling.contains_key(&id)
    }

    /// Keeps `msg` until the twin settles; gives it back when the twin is
    /// not changing.
    #[must_use]
    pub fn wait(&mut self, id: TwinId, msg: HostMsg) -> Option<HostMsg> {
        match self.settling.get_mut(&id) {
            Some(waiting) => {
                waiting.push(msg);
                None
            }
            None => Some(msg),
        }
    }

    /// The twin is settled: the requests that waited for it, in order.
    pub fn settle(&mut self, id: TwinId) -> Vec<HostMsg> {
        self.settling.remove(&id).unwrap_or_default()
    }

    /// Takes the twin's actor away to passivate it, if `actor` is still its
    /// actor and the twin is not changing already. Requests naming it wait
    /// until the actor has ended.
    pub fn passivate(&mut self, id: TwinId, actor: ActorId) -> Option<Running> {
        let current = self
            .running
            .get(&id)
            .is_some_and(|r| r.actor.get_id() == actor);
        if !current || self.settling.contains_key(&id) {
            return None;
        }
        let running = self.remove(id)?;
        self.settling.insert(id, Vec::new());
        self.passivating.insert(actor, id);
        Some(running)
    }

    /// What the actor that just ended was.
    pub fn ended(&mut self, actor: ActorId) -> Ended {
        let twin = self.by_actor.remove(&actor);
        if let Some(id) = self.passivating.remove(&actor) {
            return Ended::Passivated(id);
        }
        match twin {
            Some(id)
                if self
                    .running
                    .get(&id)
                    .is_some_and(|r| r.actor.get_id() == actor) =>
            {
                Ended::Current(id)
            }
            _ => Ended::Released,
        }
    }
}
