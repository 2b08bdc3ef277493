//! Forks: where a fork starts from (the parent's live simulation, its state
//! message, or a state from another node), and adopting a fork handed over
//! from another node. Forks are held like twins but never stored.

use super::{ForkOrigin, HostMsg, HostState, StartFrom};
use crate::definition::Name;
use crate::error::TwinError;
use crate::protocol::{ForkOptions, LiveCopy, Reply, TwinMsg, TwinRef};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use crate::twin::TwinArgs;
use hanzo_twin_engines::{SceneModel, SimState};
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A fork answered but not running yet: what [`HostState::launch_fork`]
/// spawns once the answer is on its way.
pub struct ForkLaunch {
    id: TwinId,
    args: TwinArgs,
    activation: super::Activation,
}

impl HostState {
    /// A fresh twin id that placement puts on this node, so requests for the
    /// new twin are routed here.
    pub(super) fn new_id(&self) -> TwinId {
        let Some(placement) = &self.placement else {
            return TwinId::new();
        };
        // With n nodes about one id in n is ours; 10k tries never run out in
        // practice, and the fallback only costs a hand-off.
        (0..10_000)
            .map(|_| TwinId::new())
            .find(|id| placement.owns(&id.to_string()))
            .unwrap_or_default()
    }

    /// What a fork of `twin` starts from: its record, its state (live when it
    /// runs, else its last checkpoint) and, when it runs, its loaded scene.
    pub(super) async fn fork_source(
        &mut self,
        twin: &TwinRef,
    ) -> Result<(TwinRecord, Arc<SimState>, Option<Arc<SceneModel>>), TwinError> {
        let parent_id = self.resolve(twin)?;
        let parent = self.record(parent_id)?.clone();
        match self.activations.get(parent_id) {
            Some(running) => {
                let scene = running.scene.clone();
                let state = self
                    .call_twin(parent_id, "state", |reply| TwinMsg::GetState { reply })
                    .await?;
                Ok((parent, Arc::new(state), Some(scene)))
            }
            None => match self.stored_checkpoint(parent_id).await? {
                Some(state) => Ok((parent, state, None)),
                None => Err(TwinError::NotRunning(parent_id.to_string())),
            },
        }
    }

    pub(super) async fn fork(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        options: ForkOptions,
    ) -> Result<(TwinRecord, ForkLaunch), TwinError> {
        if let Some(node) = &options.node
            && node != crate::protocol::LEAST_LOADED
            && node != &self.config.node_id
        {
            return Err(TwinError::invalid(
                "node",
                format!(
                    "no node `{node}` here: this node ({}) is not in a cluster",
                    self.config.node_id
                ),
            ));
        }
        // A running parent whose engine copies in memory forks from that
        // copy; the others fork from its state.
        let parent_id = self.resolve(twin)?;
        let parent = self.record(parent_id)?.clone();
        if parent.definition.engine.kind.forks_in_memory()
            && let Some(running) = self.activations.get(parent_id)
        {
            let scene = running.scene.clone();
            let live = self
                .call_twin(parent_id, "the request", |reply| TwinMsg::ForkSimulation {
                    reply,
                })
                .await?;
            return self
                .fork_from(myself, parent, options, ForkOrigin::Live(live), Some(scene))
                .await;
        }
        let (parent, state, scene) = self.fork_source(twin).await?;
        self.fork_from(myself, parent, options, ForkOrigin::State(state), scene)
            .await
    }

    /// Forks `twin` from the copy its running actor made.
    pub(super) async fn fork_copy(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        copy: LiveCopy,
        options: ForkOptions,
    ) -> Result<(TwinRecord, ForkLaunch), TwinError> {
        let parent = self.record(self.resolve(twin)?)?.clone();
        self.fork_from(
            myself,
            parent,
            options,
            ForkOrigin::Live(copy.simulation.into_inner()),
            Some(copy.scene),
        )
        .await
    }

    /// Spawns a fork of `parent` from `state` on this node (the parent may
    /// live on another).
    pub(super) async fn fork_from(
        &mut self,
        myself: &ActorRef<HostMsg>,
        parent: TwinRecord,
        options: ForkOptions,
        origin: ForkOrigin,
        scene: Option<Arc<SceneModel>>,
    ) -> Result<(TwinRecord, ForkLaunch), TwinError> {
        let started = Instant::now();
        let name = match &options.name {
            Some(n) => Name::new(n).map_err(|m| TwinError::invalid("name", m))?,
            None => {
                let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
                let base: String = parent.definition.name.as_str().chars().take(40).collect();
                Name::new(&format!("{base}-fork-{suffix}"))
                    .map_err(|m| TwinError::invalid("name", m))?
            }
        };
        if self
            .records
            .name_taken(parent.definition.organization(), name.as_str(), None)
        {
            return Err(TwinError::Conflict(format!(
                "a twin named `{name}` already exists in organization {}",
                parent.definition.organization()
            )));
        }
        // The live copy is not shared across threads: it is taken out first,
        // so no await holds a reference to it.
        let (state, live) = match origin {
            ForkOrigin::State(state) => (Some(state), None),
            ForkOrigin::Live(sim) => (None, Some(sim)),
        };
        let scene = match (scene, &state) {
            (Some(scene), _) => scene,
            (None, Some(state)) => {
                self.scenes
                    .scene_for_state(&parent.definition, state)
                    .await?
            }
            (None, None) => {
                return Err(TwinError::invalid(
                    "twin",
                    "a live fork needs its parent's scene",
                ));
            }
        };
        let mut definition = parent.definition.clone();
        definition.name = name;
        // A fork is standalone: its definition says so too.
        definition.sync = crate::definition::SyncSpec::default();
        let mut record = TwinRecord::new(definition);
        record.id = self.new_id();
        record.parent = Some(parent.id);
        record.ephemeral = true;
        record.status.state = Lifecycle::Running;
        record.status.clock = options.clock;
        record.status.node = Some(self.config.node_id.clone());
        let id = record.id;
        let (record, _) = self.save_queued(record).await;
        let from = match (state, live) {
            (_, Some(sim)) => StartFrom::Live(sim),
            (state, None) => StartFrom::state(state),
        };
        let (args, activation) =
            match self.twin_args(myself, id, scene, options.clock, from, VecDeque::new()) {
                Ok(spawn) => spawn,
                Err(e) => {
                    // Nothing half-made stays behind.
                    self.unhold(id);
                    return Err(e);
                }
            };
        metrics::histogram!("hanzo_twin_fork_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok((
            record,
            ForkLaunch {
                id,
                args,
                activation,
            },
        ))
    }

    /// Spawns an answered fork's actor and answers.
    pub(super) fn answer_fork(
        &mut self,
        myself: &ActorRef<HostMsg>,
        reply: Reply<TwinRecord>,
        result: Result<(TwinRecord, ForkLaunch), TwinError>,
    ) {
        match result {
            Ok((record, launch)) => {
                // Requests naming the fork wait from now until it runs.
                let began = self.activations.begin_settling(launch.id);
                debug_assert!(began, "a new fork's id is not settling yet");
                // A caller that stopped waiting leaves a fork, as any
                // caller that drops its answer does: forks end with the
                // process.
                let _ = reply.send(Ok(record));
                // The spawn comes after: queued to the host itself, which
                // wakes no other thread while the caller takes its answer.
                let id = launch.id;
                let launch = sync_wrapper::SyncWrapper::new(Box::new(launch));
                if myself.send_message(HostMsg::LaunchFork { launch }).is_err() {
                    self.unhold(id);
                }
            }
            Err(e) => drop(reply.send(Err(e))),
        }
    }

    /// Spawns an answered fork's actor off the host's loop. Requests for
    /// the fork wait until it runs, or is gone if its actor failed to start
    /// ([`HostState::fork_spawned`]).
    pub(super) fn launch_fork(&mut self, myself: &ActorRef<HostMsg>, launch: ForkLaunch) {
        let ForkLaunch {
            id,
            args,
            activation,
        } = launch;
        let host = myself.clone();
        tokio::spawn(async move {
            let spawned = super::spawn_twin_actor(&host, id, args).await;
            if let Err(ractor::MessagingErr::SendErr(HostMsg::ForkSpawned {
                spawned: Ok(actor),
                ..
            })) = host.send_message(HostMsg::ForkSpawned {
                id,
                activation: Box::new(activation),
                spawned,
            }) {
                // The host is gone: so is the fork.
                actor.stop(None);
            }
        });
    }

    /// A fork's actor is up (or failed to start): it runs, or the fork is
    /// gone; the requests that waited for it go on.
    pub(super) fn fork_spawned(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        activation: super::Activation,
        spawned: Result<ActorRef<TwinMsg>, ractor::SpawnErr>,
    ) {
        // An actor that ended already was reported to the host before this
        // message, unknown then: it counts as not started.
        let spawned = spawned.and_then(|actor| match actor.get_status() {
            // Starting: its post_start runs now; its messages wait for it.
            status if status <= ractor::ActorStatus::Upgrading => Ok(actor),
            status => {
                actor.stop(None);
                Err(ractor::SpawnErr::StartupFailed(
                    format!("its actor ended at once ({status:?})").into(),
                ))
            }
        });
        if let Err(e) = self.activate(id, activation, spawned) {
            tracing::error!(fork = %id, error = %e, "the fork's actor did not start; the fork is gone");
            self.unhold(id);
        }
        self.unpark(myself, id);
    }

    /// Takes over a running fork handed off by another node.
    pub(super) async fn adopt_fork(
        &mut self,
        myself: &ActorRef<HostMsg>,
        mut record: TwinRecord,
        clock: Clock,
        state: SimState,
    ) -> Result<TwinRecord, TwinError> {
        let id = record.id;
        if self.records.contains(id) {
            return Err(TwinError::Conflict(format!("fork {id} is already here")));
        }
        let scene = self
            .scenes
            .scene_for_state(&record.definition, &state)
            .await?;
        record.status.node = Some(self.config.node_id.clone());
        record.status.state = Lifecycle::Running;
        record.status.clock = clock;
        self.hold(record.clone());
        if let Err(e) = self
            .spawn_twin(
                myself,
                id,
                scene,
                clock,
                StartFrom::State(Arc::new(state)),
                VecDeque::new(),
            )
            .await
        {
            self.unhold(id);
            return Err(e);
        }
        Ok(record)
    }
}
