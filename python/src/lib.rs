//! `hanzo_twin._native`: a batch of RL environments ([`VecEnv`]) inside the
//! Python process. Stepping runs on Rust threads with the GIL released; each
//! call answers with NumPy arrays. The Gymnasium classes in `hanzo_twin` are
//! built on it, and a remote node's batches on [`remote::NodeConnection`],
//! which gives the same arrays.

use hanzo_twin_engines::{EngineError, EngineKind, EngineRegistry};
use hanzo_twin_gym::scene_task::{SceneTask, TaskSpec};
use hanzo_twin_gym::{
    AutoReset, Randomization, Task, VecEnv, VecEnvConfig, VecOutput, builtin_task,
};
use numpy::{IntoPyArray, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use std::sync::Arc;

mod remote;

/// Engine errors as Python exceptions: bad input is a ValueError naming the
/// field, anything else a RuntimeError.
fn to_py(e: impl Into<EngineError>) -> PyErr {
    let e = e.into();
    match &e {
        EngineError::Invalid { .. }
        | EngineError::UnknownPath { .. }
        | EngineError::SceneRead { .. }
        | EngineError::ScenePrim { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

fn engine_kind(name: &str) -> PyResult<EngineKind> {
    name.parse::<EngineKind>()
        .map_err(|_| PyValueError::new_err(format!("engine: unknown engine `{name}`")))
}

/// The task a constructor names: a built-in task's name, or a task spec
/// (YAML or JSON text) on a scene file.
fn load_task(
    task: &str,
    scene: Option<&str>,
    engine: Option<&str>,
    ant_xml: Option<&str>,
) -> PyResult<Arc<dyn Task>> {
    let engine = engine.map(engine_kind).transpose()?;
    let is_spec = task.contains('\n') || task.trim_start().starts_with('{');
    if !is_spec {
        if scene.is_some() {
            return Err(PyValueError::new_err(
                "scene: a built-in task runs on its own scene; pass a task spec to use another",
            ));
        }
        return builtin_task(task, engine, ant_xml.map(std::path::Path::new)).map_err(to_py);
    }
    let spec = TaskSpec::parse(task).map_err(to_py)?;
    let Some(scene) = scene else {
        return Err(PyValueError::new_err(
            "scene: a task spec needs a scene file (scene=...)",
        ));
    };
    let model =
        hanzo_twin_engines::scene::read_scene_file(std::path::Path::new(scene)).map_err(to_py)?;
    let registry = EngineRegistry::with_builtin();
    let engine = registry.get(engine.unwrap_or(spec.engine)).map_err(to_py)?;
    Ok(Arc::new(
        SceneTask::new(spec, model, engine).map_err(to_py)?,
    ))
}

/// A batch of environments and its reusable output buffers.
#[pyclass(module = "hanzo_twin._native")]
struct NativeVecEnv {
    env: VecEnv,
    out: VecOutput,
    randomized: bool,
}

#[pymethods]
impl NativeVecEnv {
    #[new]
    #[pyo3(signature = (task, num_envs=1, threads=0, autoreset_mode="next_step", randomization=None, scene=None, engine=None, ant_xml=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        task: &str,
        num_envs: usize,
        threads: usize,
        autoreset_mode: &str,
        randomization: Option<&str>,
        scene: Option<&str>,
        engine: Option<&str>,
        ant_xml: Option<&str>,
    ) -> PyResult<NativeVecEnv> {
        let autoreset = AutoReset::parse(autoreset_mode).ok_or_else(|| {
            PyValueError::new_err(format!(
                "autoreset_mode: `{autoreset_mode}` is not next_step, same_step or disabled"
            ))
        })?;
        let randomization: Option<Randomization> = randomization
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    PyValueError::new_err(format!("domain_randomization.parameters: {e}"))
                })
            })
            .transpose()?;
        let randomized = randomization.is_some();
        let config = VecEnvConfig {
            num_envs,
            threads,
            autoreset,
            randomization,
        };
        let (task, scene, engine, ant_xml) = (
            task.to_string(),
            scene.map(String::from),
            engine.map(String::from),
            ant_xml.map(String::from),
        );
        // Loading scenes and building simulations can take a while.
        let env = py.detach(move || -> PyResult<VecEnv> {
            let task = load_task(
                &task,
                scene.as_deref(),
                engine.as_deref(),
                ant_xml.as_deref(),
            )?;
            VecEnv::new(&task, &config).map_err(to_py)
        })?;
        Ok(NativeVecEnv {
            env,
            out: VecOutput::default(),
            randomized,
        })
    }

    /// The task's spec (spaces, timing, info keys) as JSON.
    fn spec_json(&self) -> PyResult<String> {
        let spec = self.env.spec();
        serde_json::to_string(&serde_json::json!({
            "task": spec.name,
            "engine": spec.engine,
            "observation_space": spec.observation_space,
            "action_space": spec.action_space,
            "dt": spec.dt,
            "max_episode_steps": spec.max_episode_steps,
            "reward_threshold": spec.reward_threshold,
            "info_keys": spec.info_keys,
            "num_envs": self.env.num_envs(),
            "threads": self.env.threads(),
            "autoreset_mode": self.env.autoreset(),
        }))
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    #[pyo3(signature = (seed=None, mask=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
        mask: Option<PyReadonlyArray1<'py, bool>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let mask: Option<Vec<bool>> = mask.map(|m| m.as_array().to_vec());
        let (env, out) = (&mut self.env, &mut self.out);
        py.detach(|| env.reset(seed, mask.as_deref(), out))
            .map_err(to_py)?;
        self.batch(py)
    }

    /// One step of every environment; `actions` is (num_envs, action size).
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let actions = actions.as_array();
        let flat: Vec<f32> = actions.iter().copied().collect();
        let (env, out) = (&mut self.env, &mut self.out);
        py.detach(|| env.step(&flat, out)).map_err(to_py)?;
        self.batch(py)
    }

    /// Asynchronous: queues a step of each of `env_ids`, returns at once.
    fn send(
        &mut self,
        py: Python<'_>,
        actions: PyReadonlyArray2<'_, f32>,
        env_ids: PyReadonlyArray1<'_, i64>,
    ) -> PyResult<()> {
        let flat: Vec<f32> = actions.as_array().iter().copied().collect();
        let ids = env_ids
            .as_array()
            .iter()
            .map(|&i| usize::try_from(i))
            .collect::<Result<Vec<usize>, _>>()
            .map_err(|_| PyValueError::new_err("env_ids: ids are never negative"))?;
        let env = &mut self.env;
        py.detach(|| env.send(&flat, &ids)).map_err(to_py)
    }

    /// Asynchronous: queues a reset of every environment.
    #[pyo3(signature = (seed=None))]
    fn send_reset(&mut self, seed: Option<u64>) -> PyResult<()> {
        self.env.send_reset(seed).map_err(to_py)
    }

    /// Asynchronous: waits for `count` environments to finish; first
    /// finished first.
    fn recv<'py>(&mut self, py: Python<'py>, count: usize) -> PyResult<Bound<'py, PyTuple>> {
        let (env, out) = (&mut self.env, &mut self.out);
        py.detach(|| env.recv(count, out)).map_err(to_py)?;
        self.batch(py)
    }

    fn in_flight(&self) -> usize {
        self.env.in_flight()
    }

    /// A picture of environment `env` as it is now (Gymnasium's
    /// `rgb_array`): a `(height, width, 3)` uint8 array, from the scene
    /// camera `camera` or the task's own view.
    #[pyo3(signature = (env=0, camera=None, width=480, height=480))]
    fn render<'py>(
        &self,
        py: Python<'py>,
        env: usize,
        camera: Option<String>,
        width: u32,
        height: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let batch = &self.env;
        let image = py
            .detach(|| batch.render(env, camera.as_deref(), width, height))
            .map_err(to_py)?;
        rgb_array(py, image.pixels, image.width, image.height)
    }
}

fn rgb_array(
    py: Python<'_>,
    pixels: Vec<u8>,
    width: u32,
    height: u32,
) -> PyResult<Bound<'_, PyAny>> {
    Ok(pixels
        .into_pyarray(py)
        .reshape([height as usize, width as usize, 3])?
        .into_any())
}

/// An 8-bit RGB PNG (what a node's `/render` routes answer) as a
/// `(height, width, 3)` uint8 array.
#[pyfunction]
fn rgb_png_array<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let not_png = |e: png::DecodingError| PyValueError::new_err(format!("not a PNG image: {e}"));
    let mut reader = png::Decoder::new(std::io::Cursor::new(data))
        .read_info()
        .map_err(not_png)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| PyValueError::new_err("the PNG image is too large"))?;
    let mut pixels = vec![0; size];
    let info = reader.next_frame(&mut pixels).map_err(not_png)?;
    if (info.color_type, info.bit_depth) != (png::ColorType::Rgb, png::BitDepth::Eight) {
        return Err(PyValueError::new_err(format!(
            "expected an 8-bit RGB PNG, got {:?} at {:?}",
            info.color_type, info.bit_depth
        )));
    }
    pixels.truncate(info.buffer_size());
    rgb_array(py, pixels, info.width, info.height)
}

impl NativeVecEnv {
    fn batch<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let out = &self.out;
        let spec = self.env.spec();
        let params = if self.randomized && out.elapsed.contains(&0) {
            Some(
                serde_json::to_string(&out.episode_params)
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?,
            )
        } else {
            None
        };
        batch_tuple(
            py,
            out,
            spec.observation_size(),
            spec.info_keys.len(),
            params,
        )
    }
}

/// A batch as Python gets it, embedded or remote: `(env_ids, obs, reward,
/// terminated, truncated, info, has_final, final_obs, final_info, episode,
/// elapsed, params_json)`, arrays with one row per environment; `params`
/// (the episodes' randomization, JSON) only when randomizing and an episode
/// started in this batch.
fn batch_tuple<'py>(
    py: Python<'py>,
    out: &VecOutput,
    nobs: usize,
    ninfo: usize,
    params: Option<String>,
) -> PyResult<Bound<'py, PyTuple>> {
    let k = out.env_ids.len();
    let ids: Vec<i64> = out.env_ids.iter().map(|&i| i as i64).collect();
    let obs = out.obs.clone().into_pyarray(py).reshape([k, nobs])?;
    let info = out.info.clone().into_pyarray(py).reshape([k, ninfo])?;
    let final_obs = out.final_obs.clone().into_pyarray(py).reshape([k, nobs])?;
    let final_info = out
        .final_info
        .clone()
        .into_pyarray(py)
        .reshape([k, ninfo])?;
    PyTuple::new(
        py,
        [
            ids.into_pyarray(py).into_any(),
            obs.into_any(),
            out.reward.clone().into_pyarray(py).into_any(),
            out.terminated.clone().into_pyarray(py).into_any(),
            out.truncated.clone().into_pyarray(py).into_any(),
            info.into_any(),
            out.has_final.clone().into_pyarray(py).into_any(),
            final_obs.into_any(),
            final_info.into_any(),
            out.episode.clone().into_pyarray(py).into_any(),
            out.elapsed.clone().into_pyarray(py).into_any(),
            params.into_pyobject(py)?.into_any(),
        ],
    )
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeVecEnv>()?;
    m.add_class::<remote::NodeConnection>()?;
    m.add_function(wrap_pyfunction!(rgb_png_array, m)?)?;
    m.add("MUJOCO", cfg!(feature = "mujoco"))?;
    Ok(())
}
