//! A batch of one task's environments, stepped across the cores by a pool of
//! threads that lives as long as the batch. One call steps them all (the
//! synchronous interface), or actions go in for some environments and
//! results come out for whichever finish first (the EnvPool-style
//! asynchronous interface). The calling thread steps environments too while
//! it waits, so `threads` threads in all do the work.

use crate::{EnvSpec, EpisodeParams, Randomization, Task, TaskEnv};
use crossbeam_channel::{Receiver, Sender};
use hanzo_twin_engines::EngineError;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Gymnasium 1.x's autoreset modes.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoReset {
    /// The step after an episode ends resets that environment, ignoring its
    /// action, and reports the first observation with reward 0.
    #[default]
    NextStep,
    /// The step that ends an episode resets at once: it reports the new
    /// episode's first observation, with the last one as `final_obs`.
    SameStep,
    /// Environments whose episode ended wait for an explicit reset.
    Disabled,
}

impl AutoReset {
    pub fn parse(s: &str) -> Option<AutoReset> {
        match s.to_ascii_lowercase().as_str() {
            "next_step" => Some(AutoReset::NextStep),
            "same_step" => Some(AutoReset::SameStep),
            "disabled" => Some(AutoReset::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VecEnvConfig {
    pub num_envs: usize,
    /// Threads stepping environments, the caller's included; 0 means one per core.
    pub threads: usize,
    pub autoreset: AutoReset,
    pub randomization: Option<Randomization>,
}

impl Default for VecEnvConfig {
    fn default() -> Self {
        VecEnvConfig {
            num_envs: 1,
            threads: 0,
            autoreset: AutoReset::NextStep,
            randomization: None,
        }
    }
}

/// Every environment's results, environment by environment (row `k` is the
/// `k`-th id asked for). Reused between calls, so stepping allocates nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VecOutput {
    pub env_ids: Vec<usize>,
    pub obs: Vec<f64>,
    pub reward: Vec<f64>,
    pub terminated: Vec<bool>,
    pub truncated: Vec<bool>,
    /// `info_keys` values per environment.
    pub info: Vec<f64>,
    /// SAME_STEP: whether the row's episode ended this step, and its last
    /// observation and info values.
    pub has_final: Vec<bool>,
    pub final_obs: Vec<f64>,
    pub final_info: Vec<f64>,
    /// The randomization of the episode each row is in.
    pub episode_params: Vec<EpisodeParams>,
    /// Which episode of its environment each row is in (1 is the first).
    pub episode: Vec<u64>,
    /// Steps taken in that episode.
    pub elapsed: Vec<u32>,
}

/// An environment id with what to do to it.
#[derive(Debug, Clone, Copy)]
enum Job {
    Step(usize),
    Reset(usize, Option<u64>),
}

struct Slot {
    env: Box<dyn TaskEnv>,
    rng: ChaCha8Rng,
    params: EpisodeParams,
    action: Vec<f32>,
    obs: Vec<f64>,
    info: Vec<f64>,
    reward: f64,
    terminated: bool,
    truncated: bool,
    has_final: bool,
    final_obs: Vec<f64>,
    final_info: Vec<f64>,
    episode: u64,
    elapsed: u32,
    /// The episode is over (and, in DISABLED mode, waits for a reset).
    ended: bool,
    /// Reset at least once.
    started: bool,
    error: Option<EngineError>,
}

struct Shared {
    spec: EnvSpec,
    autoreset: AutoReset,
    randomization: Option<Randomization>,
    slots: Vec<Mutex<Slot>>,
    done_tx: Sender<usize>,
}

/// A batch of environments and the threads that step them.
pub struct VecEnv {
    shared: Arc<Shared>,
    work_tx: Option<Sender<Job>>,
    work_rx: Receiver<Job>,
    done_rx: Receiver<usize>,
    workers: Vec<JoinHandle<()>>,
    /// Environments with a job queued or running (asynchronous interface).
    in_flight: Vec<bool>,
    pending: usize,
}

impl VecEnv {
    pub fn new(task: &Arc<dyn Task>, config: &VecEnvConfig) -> Result<VecEnv, EngineError> {
        let spec = task.spec().clone();
        if config.num_envs == 0 {
            return Err(EngineError::Invalid {
                field: "num_envs".into(),
                message: "must be at least 1".into(),
            });
        }
        if let Some(r) = &config.randomization {
            r.check_for(&spec.name, &spec.randomizable)?;
        }
        let n = config.num_envs;
        let (nobs, nact, ninfo) = (
            spec.observation_size(),
            spec.action_size(),
            spec.info_keys.len(),
        );
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(Mutex::new(Slot {
                env: task.make_env()?,
                rng: ChaCha8Rng::seed_from_u64(rand::random()),
                params: EpisodeParams::default(),
                action: vec![0.0; nact],
                obs: vec![0.0; nobs],
                info: vec![0.0; ninfo],
                reward: 0.0,
                terminated: false,
                truncated: false,
                has_final: false,
                final_obs: vec![0.0; nobs],
                final_info: vec![0.0; ninfo],
                episode: 0,
                elapsed: 0,
                ended: false,
                started: false,
                error: None,
            }));
        }
        let (work_tx, work_rx) = crossbeam_channel::unbounded::<Job>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<usize>();
        let shared = Arc::new(Shared {
            spec,
            autoreset: config.autoreset,
            randomization: config.randomization.clone(),
            slots,
            done_tx,
        });
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let threads = if config.threads == 0 {
            cores
        } else {
            config.threads
        };
        // The caller is one of the threads; more threads than environments idle.
        let workers = threads.clamp(1, n) - 1;
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let shared = shared.clone();
            let rx = work_rx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gym-{w}"))
                .spawn(move || {
                    while let Some(job) = next_job(&rx) {
                        shared.run(job);
                    }
                })
                .map_err(|e| EngineError::Invalid {
                    field: "threads".into(),
                    message: format!("cannot start a stepping thread: {e}"),
                })?;
            handles.push(handle);
        }
        Ok(VecEnv {
            shared,
            work_tx: Some(work_tx),
            work_rx,
            done_rx,
            workers: handles,
            in_flight: vec![false; n],
            pending: 0,
        })
    }

    pub fn spec(&self) -> &EnvSpec {
        &self.shared.spec
    }

    pub fn num_envs(&self) -> usize {
        self.shared.slots.len()
    }

    pub fn autoreset(&self) -> AutoReset {
        self.shared.autoreset
    }

    /// A picture of environment `env` as it is now (Gymnasium's
    /// `render()`): from the scene camera `camera`, or the task's own view.
    /// An environment with a step in flight is drawn once that step ends.
    pub fn render(
        &self,
        env: usize,
        camera: Option<&str>,
        width: u32,
        height: u32,
    ) -> Result<crate::RgbImage, EngineError> {
        let n = self.num_envs();
        if env >= n {
            return Err(EngineError::Invalid {
                field: "env".into(),
                message: format!("the batch has environments 0 to {}, not {env}", n - 1),
            });
        }
        self.shared.lock(env).env.render(camera, width, height)
    }

    /// Threads stepping environments, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Resets the environments in `mask` (all when `None`); with a seed,
    /// environment `i` is reseeded with `seed + i` first.
    pub fn reset(
        &mut self,
        seed: Option<u64>,
        mask: Option<&[bool]>,
        out: &mut VecOutput,
    ) -> Result<(), EngineError> {
        self.idle("reset")?;
        let n = self.num_envs();
        if let Some(m) = mask
            && m.len() != n
        {
            return Err(EngineError::Invalid {
                field: "reset_mask".into(),
                message: format!("has {} entries for {n} environments", m.len()),
            });
        }
        let ids: Vec<usize> = (0..n).filter(|i| mask.is_none_or(|m| m[*i])).collect();
        for &i in &ids {
            self.enqueue(Job::Reset(i, seed.map(|s| s.wrapping_add(i as u64))));
        }
        self.finish(ids.len())?;
        let all: Vec<usize> = (0..n).collect();
        self.gather(&all, out);
        Ok(())
    }

    /// Steps every environment with its row of `actions` (num_envs × action
    /// size), in parallel, and answers when all have stepped.
    pub fn step(&mut self, actions: &[f32], out: &mut VecOutput) -> Result<(), EngineError> {
        self.idle("step")?;
        let n = self.num_envs();
        let ids: Vec<usize> = (0..n).collect();
        self.load_actions(actions, &ids)?;
        for &i in &ids {
            self.enqueue(Job::Step(i));
        }
        self.finish(n)?;
        self.gather(&ids, out);
        Ok(())
    }

    /// Asynchronous interface: queues a step of each environment in `env_ids`
    /// with its row of `actions`, and returns at once.
    pub fn send(&mut self, actions: &[f32], env_ids: &[usize]) -> Result<(), EngineError> {
        self.check_ids(env_ids)?;
        self.load_actions(actions, env_ids)?;
        for &i in env_ids {
            self.in_flight[i] = true;
            self.enqueue(Job::Step(i));
        }
        self.pending += env_ids.len();
        Ok(())
    }

    /// Asynchronous interface: queues a reset of every environment (reseeded
    /// with `seed + i` when a seed is given); their first observations come
    /// out of [`VecEnv::recv`].
    pub fn send_reset(&mut self, seed: Option<u64>) -> Result<(), EngineError> {
        let ids: Vec<usize> = (0..self.num_envs()).collect();
        self.check_ids(&ids)?;
        for i in ids {
            self.in_flight[i] = true;
            self.enqueue(Job::Reset(i, seed.map(|s| s.wrapping_add(i as u64))));
        }
        self.pending += self.num_envs();
        Ok(())
    }

    /// Asynchronous interface: waits until `count` queued environments have
    /// finished and gives their results, first finished first (`env_ids` says
    /// which rows are which).
    pub fn recv(&mut self, count: usize, out: &mut VecOutput) -> Result<(), EngineError> {
        if count == 0 || count > self.pending {
            return Err(EngineError::Invalid {
                field: "batch_size".into(),
                message: format!(
                    "asked for {count} results with {} environments in flight",
                    self.pending
                ),
            });
        }
        let ids = self.wait(count);
        self.pending -= count;
        for &i in &ids {
            self.in_flight[i] = false;
        }
        self.gather(&ids, out);
        self.first_error(&ids)
    }

    /// Environments with a step or reset queued or running.
    pub fn in_flight(&self) -> usize {
        self.pending
    }

    fn idle(&self, what: &str) -> Result<(), EngineError> {
        if self.pending > 0 {
            return Err(EngineError::Invalid {
                field: "env_ids".into(),
                message: format!(
                    "{} environments still have results to receive; recv them before a synchronous {what}",
                    self.pending
                ),
            });
        }
        Ok(())
    }

    fn check_ids(&self, env_ids: &[usize]) -> Result<(), EngineError> {
        let n = self.num_envs();
        for (k, &i) in env_ids.iter().enumerate() {
            if i >= n {
                return Err(EngineError::Invalid {
                    field: format!("env_ids[{k}]"),
                    message: format!("{i} is not an environment id (0..{n})"),
                });
            }
            if self.in_flight[i] || env_ids[..k].contains(&i) {
                return Err(EngineError::Invalid {
                    field: format!("env_ids[{k}]"),
                    message: format!("environment {i} already has a step in flight; recv it first"),
                });
            }
        }
        Ok(())
    }

    /// Copies each environment's action into its slot, refusing a batch of
    /// the wrong size or with a value that is not a number.
    fn load_actions(&self, actions: &[f32], env_ids: &[usize]) -> Result<(), EngineError> {
        let nact = self.shared.spec.action_size();
        if actions.len() != env_ids.len() * nact {
            return Err(EngineError::Invalid {
                field: "actions".into(),
                message: format!(
                    "expected {} environments × {nact} values, got {} values",
                    env_ids.len(),
                    actions.len()
                ),
            });
        }
        if let Some(k) = actions.iter().position(|a| !a.is_finite()) {
            return Err(EngineError::Invalid {
                field: format!("actions[{}][{}]", k / nact.max(1), k % nact.max(1)),
                message: "is not a finite number".into(),
            });
        }
        for (&i, a) in env_ids.iter().zip(actions.chunks(nact.max(1))) {
            self.shared.lock(i).action.copy_from_slice(&a[..nact]);
        }
        Ok(())
    }

    fn enqueue(&self, job: Job) {
        if let Some(tx) = &self.work_tx {
            // The receiving end lives in `self`, so sending cannot fail.
            let _ = tx.send(job);
        }
    }

    /// Waits for `count` completions and reports the first error among all.
    fn finish(&mut self, count: usize) -> Result<(), EngineError> {
        let ids = self.wait(count);
        self.first_error(&ids)
    }

    fn first_error(&self, ids: &[usize]) -> Result<(), EngineError> {
        let mut first = None;
        for &i in ids {
            let mut slot = self.shared.lock(i);
            if let Some(e) = slot.error.take()
                && first.is_none()
            {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Collects `count` finished environment ids, stepping queued ones on
    /// this thread while others are still running.
    fn wait(&self, count: usize) -> Vec<usize> {
        let mut done = Vec::with_capacity(count);
        while done.len() < count {
            if let Ok(i) = self.done_rx.try_recv() {
                done.push(i);
            } else if let Ok(job) = self.work_rx.try_recv() {
                self.shared.run(job);
            } else {
                match spin_then_recv(&self.done_rx) {
                    Some(i) => done.push(i),
                    // `shared` holds a sender, so the channel never closes.
                    None => break,
                }
            }
        }
        done
    }

    fn gather(&self, ids: &[usize], out: &mut VecOutput) {
        let spec = &self.shared.spec;
        let (nobs, ninfo) = (spec.observation_size(), spec.info_keys.len());
        let k = ids.len();
        out.env_ids.clear();
        out.env_ids.extend_from_slice(ids);
        out.obs.resize(k * nobs, 0.0);
        out.reward.resize(k, 0.0);
        out.terminated.resize(k, false);
        out.truncated.resize(k, false);
        out.info.resize(k * ninfo, 0.0);
        out.has_final.resize(k, false);
        out.final_obs.resize(k * nobs, 0.0);
        out.final_info.resize(k * ninfo, 0.0);
        out.episode_params.resize(k, EpisodeParams::default());
        out.episode.resize(k, 0);
        out.elapsed.resize(k, 0);
        for (row, &i) in ids.iter().enumerate() {
            let slot = self.shared.lock(i);
            out.obs[row * nobs..(row + 1) * nobs].copy_from_slice(&slot.obs);
            out.info[row * ninfo..(row + 1) * ninfo].copy_from_slice(&slot.info);
            out.reward[row] = slot.reward;
            out.terminated[row] = slot.terminated;
            out.truncated[row] = slot.truncated;
            out.has_final[row] = slot.has_final;
            if slot.has_final {
                out.final_obs[row * nobs..(row + 1) * nobs].copy_from_slice(&slot.final_obs);
                out.final_info[row * ninfo..(row + 1) * ninfo].copy_from_slice(&slot.final_info);
            }
            out.episode_params[row] = slot.params;
            out.episode[row] = slot.episode;
            out.elapsed[row] = slot.elapsed;
        }
    }
}

impl Drop for VecEnv {
    fn drop(&mut self) {
        // Closing the queue ends the workers once they finish what they hold.
        self.work_tx = None;
        while self.work_rx.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn lock(&self, i: usize) -> MutexGuard<'_, Slot> {
        // A panic inside a task leaves its slot usable: the next reset
        // rebuilds the episode.
        self.slots[i]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run(&self, job: Job) {
        let i = match job {
            Job::Step(i) | Job::Reset(i, _) => i,
        };
        {
            let mut slot = self.lock(i);
            let result = match job {
                Job::Reset(_, seed) => {
                    if let Some(seed) = seed {
                        slot.rng = ChaCha8Rng::seed_from_u64(seed);
                    }
                    self.start_episode(&mut slot)
                }
                Job::Step(_) => self.step(i, &mut slot),
            };
            if let Err(e) = result {
                // The environment's state is unknown: its next step starts over.
                slot.ended = true;
                slot.error = Some(e);
            }
        }
        let _ = self.done_tx.send(i);
    }

    fn start_episode(&self, slot: &mut Slot) -> Result<(), EngineError> {
        let Slot {
            env,
            rng,
            params,
            obs,
            info,
            ..
        } = slot;
        *params = match &self.randomization {
            Some(r) => r.sample(rng, self.spec_gravity()),
            None => EpisodeParams::default(),
        };
        env.reset(rng, params, obs, info)?;
        slot.reward = 0.0;
        slot.terminated = false;
        slot.truncated = false;
        slot.has_final = false;
        slot.elapsed = 0;
        slot.episode += 1;
        slot.ended = false;
        slot.started = true;
        Ok(())
    }

    fn spec_gravity(&self) -> [f64; 3] {
        self.spec.gravity
    }

    fn step(&self, i: usize, slot: &mut Slot) -> Result<(), EngineError> {
        if !slot.started {
            return Err(EngineError::Invalid {
                field: "reset".into(),
                message: format!("environment {i} has not been reset; call reset first"),
            });
        }
        if slot.ended {
            return match self.autoreset {
                AutoReset::Disabled => Err(EngineError::Invalid {
                    field: format!("actions[{i}]"),
                    message: format!(
                        "environment {i}'s episode has ended and autoreset is disabled; reset it (reset_mask) first"
                    ),
                }),
                // NEXT_STEP (and an environment whose step failed): this step
                // resets, its action unused.
                _ => self.start_episode(slot),
            };
        }
        slot.has_final = false;
        let Slot {
            env,
            action,
            obs,
            info,
            ..
        } = slot;
        let outcome = env.step(action, obs, info)?;
        slot.elapsed += 1;
        slot.reward = outcome.reward;
        slot.terminated = outcome.terminated;
        // As Gymnasium's TimeLimit: truncated when the limit is reached, even
        // on a terminal step.
        slot.truncated = slot.elapsed >= self.spec.max_episode_steps;
        slot.ended = slot.terminated || slot.truncated;
        if slot.ended && self.autoreset == AutoReset::SameStep {
            let Slot {
                obs,
                info,
                final_obs,
                final_info,
                ..
            } = slot;
            final_obs.copy_from_slice(obs);
            final_info.copy_from_slice(info);
            let (reward, terminated, truncated) = (slot.reward, slot.terminated, slot.truncated);
            self.start_episode(slot)?;
            slot.has_final = true;
            slot.reward = reward;
            slot.terminated = terminated;
            slot.truncated = truncated;
        }
        Ok(())
    }
}

/// How long a thread waiting for work or results spins before it sleeps.
/// A batch's steps take milliseconds and the caller's turnaround between
/// batches well under one, so spinning this long keeps the threads from
/// falling asleep between batches (waking one costs tens of microseconds
/// per batch); an idle environment still sleeps after it.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// The next message on `rx`: spins for [`SPIN`], then blocks; `None` once
/// the channel closed.
fn spin_then_recv<T>(rx: &Receiver<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        if start.elapsed() >= SPIN {
            return rx.recv().ok();
        }
        std::hint::spin_loop();
    }
}

/// A worker's next job (see [`spin_then_recv`]).
fn next_job(rx: &Receiver<Job>) -> Option<Job> {
    spin_then_recv(rx)
}
