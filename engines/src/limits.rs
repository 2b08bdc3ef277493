//! A node's cap on live simulations of one engine (the spec's
//! `engines.<name>.max_instances`). Every simulation is made by
//! [`Engine::load_scene`] or [`Simulation::fork`]; a capped engine is wrapped
//! so both take a slot first, and a simulation gives its slot back when it
//! is dropped.

use crate::{
    Engine, EngineCapabilities, EngineConfig, EngineError, EngineKind, Image, JointCommand,
    Observation, RenderParams, SceneModel, SimState, Simulation,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many simulations of an engine may live at once, and how many do.
pub struct InstanceLimit {
    engine: EngineKind,
    max: usize,
    live: AtomicUsize,
    /// The setting that sets it, named in the refusal.
    setting: String,
}

impl InstanceLimit {
    /// A slot, or the refusal when every slot is taken.
    fn take(self: &Arc<Self>) -> Result<Slot, EngineError> {
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < self.max).then_some(live + 1)
            })
            .map(|_| Slot(self.clone()))
            .map_err(|_| EngineError::AtCapacity {
                engine: self.engine,
                max: self.max,
                setting: self.setting.clone(),
            })
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Simulations of the engine alive now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }
}

/// One simulation's place under the cap, given back on drop.
struct Slot(Arc<InstanceLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An engine whose simulations count against an [`InstanceLimit`].
pub(crate) struct Capped {
    pub inner: Arc<dyn Engine>,
    pub limit: Arc<InstanceLimit>,
}

impl Capped {
    pub fn new(inner: Arc<dyn Engine>, max: usize, setting: String) -> Capped {
        let limit = Arc::new(InstanceLimit {
            engine: inner.kind(),
            max,
            live: AtomicUsize::new(0),
            setting,
        });
        Capped { inner, limit }
    }
}

impl Engine for Capped {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn capabilities(&self) -> EngineCapabilities {
        self.inner.capabilities()
    }

    fn load_scene(
        &self,
        scene: &SceneModel,
        config: &EngineConfig,
    ) -> Result<Box<dyn Simulation>, EngineError> {
        let slot = self.limit.take()?;
        let inner = self.inner.load_scene(scene, config)?;
        Ok(Box::new(CappedSimulation { inner, slot }))
    }

    fn check_config(&self, config: &EngineConfig) -> Result<(), EngineError> {
        self.inner.check_config(config)
    }

    fn findings(&self, scene: &SceneModel) -> Vec<crate::findings::Finding> {
        self.inner.findings(scene)
    }
}

/// A simulation holding its slot.
struct CappedSimulation {
    inner: Box<dyn Simulation>,
    slot: Slot,
}

impl Simulation for CappedSimulation {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn step(&mut self) -> Result<(), EngineError> {
        self.inner.step()
    }

    fn set_joint_command(
        &mut self,
        joint_path: &str,
        cmd: JointCommand,
    ) -> Result<(), EngineError> {
        self.inner.set_joint_command(joint_path, cmd)
    }

    fn observation(&self, path: &str) -> Result<Observation, EngineError> {
        self.inner.observation(path)
    }

    fn body_poses(
        &self,
        positions: &mut Vec<[f64; 3]>,
        orientations: &mut Vec<[f64; 4]>,
    ) -> Result<(), EngineError> {
        self.inner.body_poses(positions, orientations)
    }

    fn parameter(&self, prim: &str, name: &str) -> Result<f64, EngineError> {
        self.inner.parameter(prim, name)
    }

    fn set_parameter(&mut self, prim: &str, name: &str, value: f64) -> Result<(), EngineError> {
        self.inner.set_parameter(prim, name, value)
    }

    fn set_joint_state(
        &mut self,
        joint: &str,
        position: f64,
        velocity: Option<f64>,
    ) -> Result<(), EngineError> {
        self.inner.set_joint_state(joint, position, velocity)
    }

    fn set_body_pose(
        &mut self,
        body: &str,
        position: [f64; 3],
        orientation: Option<[f64; 4]>,
    ) -> Result<(), EngineError> {
        self.inner.set_body_pose(body, position, orientation)
    }

    fn state(&self) -> Result<SimState, EngineError> {
        self.inner.state()
    }

    fn set_state(&mut self, state: &SimState) -> Result<(), EngineError> {
        self.inner.set_state(state)
    }

    fn render(&self, camera_path: &str, params: &RenderParams) -> Result<Image, EngineError> {
        self.inner.render(camera_path, params)
    }

    fn fork(&self) -> Result<Box<dyn Simulation>, EngineError> {
        let slot = self.slot.0.take()?;
        let inner = self.inner.fork()?;
        Ok(Box::new(CappedSimulation { inner, slot }))
    }

    fn time(&self) -> f64 {
        self.inner.time()
    }

    fn step_count(&self) -> u64 {
        self.inner.step_count()
    }

    fn infrastructure(&self) -> Option<&hanzo_twin_infra::InfraSim> {
        self.inner.infrastructure()
    }

    fn infrastructure_mut(&mut self) -> Option<&mut hanzo_twin_infra::InfraSim> {
        self.inner.infrastructure_mut()
    }

    fn close(self: Box<Self>) -> Result<(), EngineError> {
        // The slot is given back as the wrapper drops, after the close.
        let CappedSimulation { inner, slot } = *self;
        let closed = inner.close();
        drop(slot);
        closed
    }
}
