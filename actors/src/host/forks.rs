//! Forks: where a fork starts from (the parent's live simulation, its state
//! message, or a state from another node), and adopting a fork handed over
//! from another node. Forks are held like twins but never stored.

use super::{ForkOrigin, HostMsg, HostState, StartFrom};
use crate::definition::Name;
use crate::error::TwinError;
use crate::protocol::{ForkOptions, TwinMsg, TwinRef};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use hanzo_twin_engines::{SceneModel, SimState};
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

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
    ) -> Result<TwinRecord, TwinError> {
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
        // A running rapier3d or MuJoCo parent copies its live simulation in
        // memory (microseconds), and the fork starts from that copy; other
        // engines (a PyBullet worker process, PhysX rebuilding its scene)
        // would hold the parent for that long, so they fork from its state.
        let parent_id = self.resolve(twin)?;
        let parent = self.record(parent_id)?.clone();
        let cheap = matches!(
            parent.definition.engine.kind,
            hanzo_twin_engines::EngineKind::Rapier3d | hanzo_twin_engines::EngineKind::Mujoco
        );
        if cheap && let Some(running) = self.activations.get(parent_id) {
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

    /// Spawns a fork of `parent` from `state` on this node (the parent may
    /// live on another).
    pub(super) async fn fork_from(
        &mut self,
        myself: &ActorRef<HostMsg>,
        parent: TwinRecord,
        options: ForkOptions,
        origin: ForkOrigin,
        scene: Option<Arc<SceneModel>>,
    ) -> Result<TwinRecord, TwinError> {
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
        let record = self.save(record).await?;
        let id = record.id;
        if let Err(e) = self
            .spawn_twin(
                myself,
                id,
                scene,
                options.clock,
                match (state, live) {
                    (_, Some(sim)) => StartFrom::Live(sim),
                    (state, None) => StartFrom::state(state),
                },
                VecDeque::new(),
            )
            .await
        {
            // Nothing half-made stays behind.
            self.unhold(id);
            return Err(e);
        }
        let mut record = record;
        record.status.state = Lifecycle::Running;
        record.status.clock = options.clock;
        record.status.node = Some(self.config.node_id.clone());
        let record = self.save(record).await?;
        metrics::histogram!("hanzo_twin_fork_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(record)
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
