//! One job's actor: it owns the job's record while the job runs, starts the
//! worker process and turns what the worker reports into the record's
//! progress, its log and its artifacts.
//!
//! The worker (`python -m hanzo_twin.train`, see `python/hanzo_twin/train.py`)
//! speaks JSON lines on stdout: `progress`, `checkpoint`, `log`, `result`,
//! `error`. A cancel sends it SIGTERM (it saves its policy and stops at the
//! next step) and kills it after `cancel_grace`.
//!
//! A comparison runs inside the node instead, on a blocking thread that
//! reports its steps and stops at the next one when cancelled.

use super::host::{JobsArgs, JobsMsg};
use super::log::LogWriter;
use super::{Artifact, JobError, JobRecord, JobSpec, JobState};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How often a running job's progress reaches the store.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// The worker's last stderr lines, for a failure's reason.
const STDERR_TAIL: usize = 20;
/// coreutils' `nice`, which execs the worker (same pid) at a lower priority.
const NICE: &str = "/usr/bin/nice";

pub struct JobActorArgs {
    pub record: JobRecord,
    /// The submitter's token, for a job on a twin; in memory only.
    pub token: Option<String>,
    pub log: LogWriter,
    pub jobs: JobsArgs,
    pub host: ActorRef<JobsMsg>,
}

pub enum JobMsg {
    Stdout(String),
    Stderr(String),
    /// The worker exited: how, and whether successfully.
    Exited {
        status: String,
        success: bool,
    },
    Cancel {
        by: String,
        reply: RpcReplyPort<Result<JobRecord, JobError>>,
    },
    /// A cancelled worker's grace is over.
    Kill,
    /// How far work inside the node has come.
    Progress {
        steps: u64,
        per_second: Option<f64>,
    },
    /// Work inside the node stored an artifact.
    Stored(Artifact),
    /// Work inside the node ended: its result, `None` when stopped.
    Done(Result<Option<serde_json::Value>, String>),
}

/// Local only: never sent between nodes.
impl ractor::Message for JobMsg {}

pub struct JobActor;

struct Worker {
    pid: Option<rustix::process::Pid>,
    output: tokio::task::JoinHandle<()>,
}

pub struct JobActorState {
    record: JobRecord,
    token: Option<String>,
    log: LogWriter,
    jobs: JobsArgs,
    host: ActorRef<JobsMsg>,
    dir: PathBuf,
    worker: Option<Worker>,
    cancelled_by: Option<String>,
    waiting: Vec<RpcReplyPort<Result<JobRecord, JobError>>>,
    last_error: Option<String>,
    stderr_tail: VecDeque<String>,
    saved_at: Instant,
    /// Tells work inside the node to stop at its next step.
    stop: Arc<AtomicBool>,
    /// Why the shared store refused the record: another node holds the job
    /// now (this node was cut off long enough to be taken for dead).
    taken_over: Option<String>,
}

/// What the worker is given: its spec, and the policy it starts from.
struct Launch {
    spec: serde_json::Value,
    resume: Option<PathBuf>,
    policy: Option<PathBuf>,
    /// The worker reaches its environments through the node's API, with the
    /// submitter's token.
    through_api: bool,
}

impl JobActorState {
    async fn save(&mut self, now: bool) {
        if !now && self.saved_at.elapsed() < SAVE_EVERY {
            return;
        }
        self.saved_at = Instant::now();
        self.record.log_lines = self.log.lines();
        match self.jobs.store.put(&self.record).await {
            Ok(()) => {}
            Err(e) if e.is_conflict() => self.taken_over = Some(e.to_string()),
            Err(e) => tracing::warn!(job = %self.record.id, "cannot save the job's record: {e}"),
        }
    }

    /// Once another node holds the job, this node's copy stops: its worker
    /// is killed (the new holder runs the job from its checkpoint), and
    /// nothing more is recorded here.
    fn stop_if_taken_over(&mut self, myself: &ActorRef<JobMsg>) {
        let Some(why) = self.taken_over.take() else {
            return;
        };
        tracing::warn!(job = %self.record.id, "{why}; its worker here stops");
        self.log.append(
            "node",
            format!(
                "another node took this job over while {} was cut off; stopped here",
                self.jobs.config.node_id
            ),
            None,
        );
        for reply in self.waiting.drain(..) {
            let _ = reply.send(Err(JobError::Conflict(why.clone())));
        }
        // post_stop kills the worker.
        myself.stop(Some(why));
    }

    /// Fetches an artifact of job `from` into the job's folder.
    async fn fetch(
        &self,
        from: &JobRecord,
        artifact: &Artifact,
        as_name: &str,
    ) -> Result<PathBuf, String> {
        let bytes = self
            .jobs
            .artifacts
            .get(from.id, &artifact.name)
            .await
            .map_err(|e| format!("cannot read {} of job {}: {e}", artifact.name, from.id))?
            .ok_or_else(|| {
                format!(
                    "{} of job {} is missing from object storage",
                    artifact.name, from.id
                )
            })?;
        let path = self.dir.join(as_name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    async fn launch(&self) -> Result<Launch, String> {
        match &self.record.spec {
            JobSpec::Train(_) => {
                let resume = match self.record.latest_policy() {
                    Some(p) => Some(self.fetch(&self.record, p, "resume.zip").await?),
                    None => None,
                };
                Ok(Launch {
                    spec: serde_json::to_value(&self.record.spec).map_err(|e| e.to_string())?,
                    resume,
                    policy: None,
                    through_api: self.record.spec.trains_through_api(),
                })
            }
            JobSpec::Compare(_) | JobSpec::Synthdata(_) | JobSpec::Replay(_) => {
                Err("this job runs inside the node".into())
            }
            JobSpec::Evaluate(eval) => {
                let trained = match self.jobs.store.get(eval.policy_job).await {
                    Ok(Some(r)) if r.organization == self.record.organization => r,
                    Ok(_) => return Err(format!("policy_job {} not found", eval.policy_job)),
                    Err(e) => {
                        return Err(format!("cannot read policy_job {}: {e}", eval.policy_job));
                    }
                };
                let (JobSpec::Train(train), Some(policy)) =
                    (&trained.spec, trained.latest_policy())
                else {
                    return Err(format!(
                        "policy_job {} has no policy to evaluate",
                        eval.policy_job
                    ));
                };
                let path = self.fetch(&trained, policy, "policy.zip").await?;
                Ok(Launch {
                    spec: serde_json::json!({
                        "kind": "evaluate",
                        "task": train.task,
                        "twin": train.twin,
                        "engine": train.engine,
                        "algo": train.algo,
                        "backend": train.backend,
                        "episodes": eval.episodes,
                        "deterministic": eval.deterministic,
                        "seed": eval.seed,
                    }),
                    resume: None,
                    policy: Some(path),
                    through_api: train.twin.is_some(),
                })
            }
        }
    }

    /// Starts a comparison on its own task; it reports its steps at most
    /// once a second and stops at the next step once `stop` is set.
    fn start_compare(
        &mut self,
        myself: &ActorRef<JobMsg>,
        request: crate::compare::CompareRequest,
    ) {
        let stop = self.stop.clone();
        let me = myself.clone();
        let steps = request.steps;
        let mut reported = Instant::now();
        let watch: crate::compare::Watch = Box::new(move |engine, step| {
            if reported.elapsed() >= SAVE_EVERY {
                reported = Instant::now();
                let done = (engine as u64).saturating_mul(steps) + step + 1;
                let _ = me.cast(JobMsg::Progress {
                    steps: done,
                    per_second: None,
                });
            }
            !stop.load(Ordering::Relaxed)
        });
        let (scenes, engines) = (self.jobs.scenes.clone(), self.jobs.engines.clone());
        let scope = match crate::definition::Name::new(&self.record.organization) {
            Ok(org) => crate::protocol::Scope::Organization(org),
            Err(_) => crate::protocol::Scope::Node,
        };
        self.log.append(
            "node",
            format!(
                "comparing {} engines for {} steps on {}",
                request.engines.len(),
                request.steps,
                self.jobs.config.node_id
            ),
            None,
        );
        let me = myself.clone();
        let output = tokio::spawn(async move {
            let result = crate::compare::run_watched(&scenes, &engines, &request, &scope, watch)
                .await
                .map_err(|e| e.to_string())
                .and_then(|report| {
                    report
                        .map(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
                        .transpose()
                });
            let _ = me.cast(JobMsg::Done(result));
        });
        self.worker = Some(Worker { pid: None, output });
    }

    /// Starts drawing a synthetic dataset on the node's render workers; it
    /// reports each batch stored and stops before the next once `stop` is set.
    fn start_synthdata(
        &mut self,
        myself: &ActorRef<JobMsg>,
        spec: hanzo_twin_render::synth::SynthSpec,
    ) -> Result<(), String> {
        self.log.append(
            "node",
            format!(
                "drawing {} frames of {} from twin {} on {}, from frame {}",
                spec.num_frames,
                spec.output_dataset,
                spec.twin_id,
                self.jobs.config.node_id,
                self.record.progress.steps
            ),
            None,
        );
        let run = super::synthdata::SynthRun {
            spec,
            organization: self.record.organization.clone(),
            job: self.record.id,
            done: self.record.progress.steps,
            twins: self.jobs.twins.clone(),
            render: self.jobs.render.clone(),
            datasets: self.jobs.datasets.clone(),
            node: self.jobs.config.node_id.clone(),
        };
        let stop = self.stop.clone();
        let me = myself.clone();
        let output = tokio::spawn(async move {
            let progress = {
                let me = me.clone();
                move |steps, rate| {
                    let _ = me.cast(JobMsg::Progress {
                        steps,
                        per_second: Some(rate),
                    });
                }
            };
            let result = run
                .run(progress, move || stop.load(Ordering::Relaxed))
                .await;
            let _ = me.cast(JobMsg::Done(result));
        });
        self.worker = Some(Worker { pid: None, output });
        Ok(())
    }

    /// Replays recorded load through an infrastructure twin inside the node,
    /// reporting percent of the span done; stops between chunks once `stop`
    /// is set.
    fn start_replay(&mut self, myself: &ActorRef<JobMsg>, spec: super::ReplaySpec) {
        self.log.append(
            "node",
            format!(
                "replaying recorded load through {} on {}",
                spec.twin, self.jobs.config.node_id
            ),
            None,
        );
        let run = super::replay::ReplayRun {
            spec,
            organization: self.record.organization.clone(),
            twins: self.jobs.twins.clone(),
            scenes: self.jobs.scenes.clone(),
            timeseries: self.jobs.timeseries.clone(),
            artifacts: self.jobs.artifacts.clone(),
            job: self.record.id,
        };
        let stop = self.stop.clone();
        let me = myself.clone();
        let output = tokio::spawn(async move {
            let progress = {
                let me = me.clone();
                move |percent| {
                    let _ = me.cast(JobMsg::Progress {
                        steps: percent,
                        per_second: None,
                    });
                }
            };
            let stored = {
                let me = me.clone();
                move |artifact| {
                    let _ = me.cast(JobMsg::Stored(artifact));
                }
            };
            let result = run.run(progress, stored, stop).await;
            let _ = me.cast(JobMsg::Done(result));
        });
        self.worker = Some(Worker { pid: None, output });
    }

    /// Starts the worker; `Err` is why the job fails.
    async fn start(&mut self, myself: &ActorRef<JobMsg>) -> Result<(), String> {
        if let JobSpec::Compare(request) = &self.record.spec {
            let request = request.clone();
            self.start_compare(myself, request);
            return Ok(());
        }
        if let JobSpec::Synthdata(spec) = &self.record.spec {
            let spec = spec.clone();
            return self.start_synthdata(myself, spec);
        }
        if let JobSpec::Replay(spec) = &self.record.spec {
            let spec = spec.clone();
            self.start_replay(myself, spec);
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let launch = self.launch().await?;
        if launch.through_api && self.token.is_none() {
            return Err("this job reaches its environments through the node's API with its submitter's token, which is held in memory only and was lost when its node restarted; submit it again".into());
        }
        let config = &self.jobs.config;
        // Below the node's own priority: training takes the cores it can
        // get, and the node's API and twins stay responsive beside it.
        let mut command = if Path::new(NICE).exists() {
            let mut c = tokio::process::Command::new(NICE);
            c.args(["-n", "10"]).arg(&config.python);
            c
        } else {
            tokio::process::Command::new(&config.python)
        };
        command
            .args(["-m", "hanzo_twin.train", "--spec"])
            .arg(launch.spec.to_string())
            .arg("--workdir")
            .arg(&self.dir)
            .current_dir(&self.dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("HANZO_TWIN_API", &config.api_url)
            .env_remove("HANZO_TWIN_TOKEN")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(token) = &self.token {
            command.env("HANZO_TWIN_TOKEN", token);
        }
        // A training job on RLlib: the worker is Ray's driver.
        if self.record.spec.backend() == Some(super::Backend::Rllib) {
            command.env("RAY_ADDRESS", config.ray()?);
        }
        if let Some(resume) = &launch.resume {
            command.arg("--resume").arg(resume);
        }
        if let Some(policy) = &launch.policy {
            command.arg("--policy").arg(policy);
        }
        let mut child = command.spawn().map_err(|e| {
            format!(
                "cannot start the trainer with {}: {e} (set scheduler.python to a Python with hanzo-twin[train])",
                config.python.display()
            )
        })?;
        let pid = child
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let me = myself.clone();
        let output = tokio::spawn(async move {
            let out = forward(stdout, me.clone(), JobMsg::Stdout);
            let err = forward(stderr, me.clone(), JobMsg::Stderr);
            tokio::join!(out, err);
            let (status, success) = match child.wait().await {
                Ok(s) => (s.to_string(), s.success()),
                Err(e) => (format!("cannot wait for it: {e}"), false),
            };
            let _ = me.cast(JobMsg::Exited { status, success });
        });
        self.worker = Some(Worker { pid, output });
        let how = match (&launch.resume, self.record.latest_policy()) {
            (Some(_), Some(p)) => format!(", resuming from {} at {} steps", p.name, p.steps),
            _ => String::new(),
        };
        self.log.append(
            "node",
            format!(
                "started on {} (attempt {}){how}",
                config.node_id, self.record.attempts
            ),
            None,
        );
        Ok(())
    }

    async fn on_line(&mut self, line: String) {
        let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(&line) else {
            self.log.append("worker", line, None);
            return;
        };
        let kind = event
            .remove("event")
            .and_then(|e| e.as_str().map(str::to_string))
            .unwrap_or_default();
        let text = |key: &str| event.get(key).and_then(|v| v.as_str()).map(str::to_string);
        match kind.as_str() {
            "progress" => {
                let p = &mut self.record.progress;
                let number = |key: &str| event.get(key).and_then(serde_json::Value::as_f64);
                p.steps = event
                    .get("steps")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(p.steps);
                p.episodes = event
                    .get("episodes")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(p.episodes);
                p.mean_return = number("mean_return").or(p.mean_return);
                p.steps_per_second = number("steps_per_second");
                if p.total_steps > 0 {
                    p.fraction = (p.steps as f64 / p.total_steps as f64).min(1.0);
                }
                let message = format!(
                    "{} of {} steps, {} episodes, mean return {}, {} steps/s",
                    p.steps,
                    p.total_steps,
                    p.episodes,
                    p.mean_return.map_or("-".into(), |r| format!("{r:.1}")),
                    p.steps_per_second.map_or("-".into(), |r| format!("{r:.0}")),
                );
                let rate = p.steps_per_second.unwrap_or(0.0);
                self.log
                    .append("progress", message, Some(serde_json::Value::Object(event)));
                let _ = self.host.cast(JobsMsg::Rate {
                    id: self.record.id,
                    steps_per_second: rate,
                });
                self.save(false).await;
            }
            "checkpoint" => {
                let steps = event.get("steps").and_then(|v| v.as_u64()).unwrap_or(0);
                match self.keep(text("path"), steps).await {
                    Ok(artifact) => {
                        self.log.append(
                            "node",
                            format!(
                                "kept {} ({} bytes) at {} steps",
                                artifact.name, artifact.bytes, artifact.steps
                            ),
                            None,
                        );
                        self.record.artifacts.retain(|a| a.name != artifact.name);
                        self.record.artifacts.push(artifact);
                        self.save(true).await;
                    }
                    Err(e) => {
                        self.log
                            .append("node", format!("a checkpoint was lost: {e}"), None);
                    }
                }
            }
            "result" => {
                self.record.result = Some(serde_json::Value::Object(event.clone()));
                self.log
                    .append("worker", "result", Some(serde_json::Value::Object(event)));
            }
            "error" => {
                let message = text("message").unwrap_or_else(|| "the worker failed".into());
                self.last_error = Some(message.clone());
                self.log.append("worker", message, None);
            }
            _ => {
                let message = text("message").unwrap_or(line);
                self.log.append("worker", message, None);
            }
        }
    }

    /// Stores a checkpoint the worker saved in the job's folder as an
    /// artifact, and removes the local copy.
    async fn keep(&self, path: Option<String>, steps: u64) -> Result<Artifact, String> {
        let path = PathBuf::from(path.ok_or("the worker named no file")?);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("policy-") && n.ends_with(".zip"))
            .map(str::to_string)
            .ok_or_else(|| format!("{} is not a policy file", path.display()))?;
        // Only files of the job's own folder.
        if path.parent() != Some(self.dir.as_path()) {
            return Err(format!("{} is outside the job's folder", path.display()));
        }
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let size = bytes.len() as u64;
        self.jobs
            .artifacts
            .put(self.record.id, &name, bytes)
            .await
            .map_err(|e| format!("cannot store {name}: {e}"))?;
        let _ = tokio::fs::remove_file(&path).await;
        Ok(Artifact {
            name,
            steps,
            bytes: size,
            created_at: chrono::Utc::now(),
        })
    }

    /// Records how the job ended, answers whoever waits for it, and stops.
    async fn finish(&mut self, myself: &ActorRef<JobMsg>, state: JobState, error: Option<String>) {
        let r = &mut self.record;
        r.state = state;
        r.error = error;
        r.finished_at = Some(chrono::Utc::now());
        if state == JobState::Succeeded {
            r.progress.fraction = 1.0;
        }
        let message = match (&r.error, &r.result) {
            (Some(e), _) => format!("{}: {e}", state.as_str()),
            // A short result inline; a long one (a comparison's report) is
            // the record's.
            (None, Some(result)) if result.to_string().len() <= 300 => {
                format!("{}: {result}", state.as_str())
            }
            _ => state.as_str().to_string(),
        };
        metrics::counter!("hanzo_twin_jobs_total", "kind" => r.kind.as_str(), "state" => state.as_str())
            .increment(1);
        self.save(true).await;
        self.log.append("node", message, None);
        for reply in self.waiting.drain(..) {
            let _ = reply.send(Ok(self.record.clone()));
        }
        myself.stop(None);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = self.worker.as_ref().and_then(|w| w.pid)
            && let Err(e) = rustix::process::kill_process(pid, signal)
        {
            tracing::debug!(job = %self.record.id, "cannot signal the worker: {e}");
        }
    }
}

/// Sends each line of `stream` to the job as `wrap(line)`.
async fn forward<R: tokio::io::AsyncRead + Unpin>(
    stream: Option<R>,
    job: ActorRef<JobMsg>,
    wrap: fn(String) -> JobMsg,
) {
    let Some(stream) = stream else { return };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if job.cast(wrap(line)).is_err() {
            return;
        }
    }
}

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobActorState;
    type Arguments = JobActorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<JobMsg>,
        args: JobActorArgs,
    ) -> Result<JobActorState, ActorProcessingErr> {
        let dir = args.jobs.logs.job_dir(args.record.id);
        Ok(JobActorState {
            record: args.record,
            token: args.token,
            log: args.log,
            jobs: args.jobs,
            host: args.host,
            dir,
            worker: None,
            cancelled_by: None,
            waiting: Vec::new(),
            last_error: None,
            stderr_tail: VecDeque::new(),
            saved_at: Instant::now(),
            stop: Arc::new(AtomicBool::new(false)),
            taken_over: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<JobMsg>,
        state: &mut JobActorState,
    ) -> Result<(), ActorProcessingErr> {
        let r = &mut state.record;
        r.state = JobState::Running;
        r.started_at.get_or_insert_with(chrono::Utc::now);
        r.attempts += 1;
        r.node = Some(state.jobs.config.node_id.clone());
        metrics::counter!("hanzo_twin_jobs_total", "kind" => r.kind.as_str(), "state" => "running")
            .increment(1);
        state.save(true).await;
        if state.taken_over.is_some() {
            state.stop_if_taken_over(&myself);
            return Ok(());
        }
        if let Err(reason) = state.start(&myself).await {
            state.finish(&myself, JobState::Failed, Some(reason)).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        state: &mut JobActorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Stdout(line) => state.on_line(line).await,
            JobMsg::Stderr(line) => {
                if state.stderr_tail.len() == STDERR_TAIL {
                    state.stderr_tail.pop_front();
                }
                state.stderr_tail.push_back(line.clone());
                state.log.append("stderr", line, None);
            }
            JobMsg::Exited { status, success } => {
                state.worker = None;
                let steps = state.record.progress.steps;
                let (end, error) = if let Some(by) = &state.cancelled_by {
                    (
                        JobState::Cancelled,
                        Some(format!("cancelled by {by} at {steps} steps")),
                    )
                } else if success && state.record.result.is_some() {
                    (JobState::Succeeded, None)
                } else {
                    let why = state.last_error.clone().unwrap_or_else(|| {
                        let tail: Vec<&str> = state
                            .stderr_tail
                            .iter()
                            .rev()
                            .take(5)
                            .rev()
                            .map(String::as_str)
                            .collect();
                        if tail.is_empty() {
                            "no output".into()
                        } else {
                            tail.join(" | ")
                        }
                    });
                    let how = if success {
                        "without a result"
                    } else {
                        status.as_str()
                    };
                    let hint = if why.contains("No module named") || status.contains("127") {
                        format!(
                            " (scheduler.python, {}, needs the hanzo-twin package with its train extra)",
                            state.jobs.config.python.display()
                        )
                    } else {
                        String::new()
                    };
                    (
                        JobState::Failed,
                        Some(format!("the worker ended {how}: {why}{hint}")),
                    )
                };
                state.finish(&myself, end, error).await;
            }
            JobMsg::Cancel { by, reply } => {
                state.waiting.push(reply);
                if state.cancelled_by.is_none() {
                    state.log.append(
                        "node",
                        format!("cancelled by {by}; the worker saves its policy and stops"),
                        None,
                    );
                    state.cancelled_by = Some(by);
                    state.stop.store(true, Ordering::Relaxed);
                    state.signal(rustix::process::Signal::TERM);
                    myself.send_after(state.jobs.config.cancel_grace, || JobMsg::Kill);
                }
            }
            JobMsg::Progress { steps, per_second } => {
                let p = &mut state.record.progress;
                p.steps = steps;
                if per_second.is_some() {
                    p.steps_per_second = per_second;
                }
                if p.total_steps > 0 {
                    p.fraction = (steps as f64 / p.total_steps as f64).min(1.0);
                }
                let unit = if state.record.kind == super::JobKind::Synthdata {
                    "frames"
                } else {
                    "steps"
                };
                let message = format!("{} of {} {unit}", p.steps, p.total_steps);
                state.log.append(
                    "progress",
                    message,
                    Some(serde_json::json!({"steps": steps, "total_steps": p.total_steps})),
                );
                state.save(false).await;
            }
            JobMsg::Stored(artifact) => {
                state.record.artifacts.retain(|a| a.name != artifact.name);
                state.record.artifacts.push(artifact);
                state.save(true).await;
            }
            JobMsg::Done(result) => {
                state.worker = None;
                let steps = state.record.progress.steps;
                match (result, &state.cancelled_by) {
                    (Ok(Some(report)), None) => {
                        state.record.progress.steps = state.record.progress.total_steps;
                        state.record.result = Some(report);
                        state.finish(&myself, JobState::Succeeded, None).await;
                    }
                    (Err(e), None) => state.finish(&myself, JobState::Failed, Some(e)).await,
                    (_, by) => {
                        let by = by.clone().unwrap_or_else(|| "the node".into());
                        let error = format!("cancelled by {by} at {steps} steps");
                        state
                            .finish(&myself, JobState::Cancelled, Some(error))
                            .await;
                    }
                }
            }
            JobMsg::Kill if state.worker.as_ref().is_some_and(|w| w.pid.is_none()) => {
                // Work inside the node that did not reach its next step in
                // time: it is left to finish on its own, unrecorded.
                if let Some(worker) = state.worker.take() {
                    worker.output.abort();
                }
                let by = state.cancelled_by.clone().unwrap_or_default();
                let steps = state.record.progress.steps;
                let error = format!("cancelled by {by} at {steps} steps");
                state
                    .finish(&myself, JobState::Cancelled, Some(error))
                    .await;
            }
            JobMsg::Kill => {
                if state.worker.is_some() {
                    state.log.append(
                        "node",
                        format!(
                            "the worker did not stop within {} ms; killed",
                            state.jobs.config.cancel_grace.as_millis()
                        ),
                        None,
                    );
                    state.signal(rustix::process::Signal::KILL);
                }
            }
        }
        state.stop_if_taken_over(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<JobMsg>,
        state: &mut JobActorState,
    ) -> Result<(), ActorProcessingErr> {
        // Stopped with its worker still running (the node is shutting
        // down): the worker goes with it, and the job resumes at restart.
        if let Some(worker) = state.worker.take() {
            if let Some(pid) = worker.pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
            worker.output.abort();
        }
        Ok(())
    }
}
