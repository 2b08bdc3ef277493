//! What a job is: its spec as submitted, checked before anything runs, and
//! the record the node keeps of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type JobId = uuid::Uuid;

/// The tasks a training job may name: the gym's built-in tasks.
pub const TASKS: [&str; 2] = ["cartpole-v0", "ant-v5"];

/// The most environments one job steps at once.
pub const MAX_NUM_ENVS: u32 = 4096;
/// The most environment steps one job trains for (10¹¹).
pub const MAX_TOTAL_STEPS: u64 = 100_000_000_000;

/// A job's spec as submitted (`POST /v1/jobs`), tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobSpec {
    /// Reinforcement learning on a twin's or a built-in task's environments.
    Train(TrainSpec),
    /// The mean return of a trained policy over a number of episodes.
    Evaluate(EvaluateSpec),
    /// One scene and one command sequence on several engines, and how far
    /// their trajectories drift apart (`POST /v1/engines/compare`, as a job).
    Compare(crate::compare::CompareRequest),
    /// A labelled image dataset drawn from a twin (`POST /v1/synthdata`).
    Synthdata(hanzo_twin_render::synth::SynthSpec),
    /// Recorded load from the timeseries database replayed through an
    /// infrastructure twin (`POST /v1/infra/twins/{id}/replay`).
    Replay(ReplaySpec),
}

/// The spec's `metrics_1m` query without its time window (a replay's
/// `from` and `to` give it).
pub const METRICS_QUERY: &str = "SELECT bucket, metric, service, avg_value FROM metrics_1m WHERE metric LIKE 'hanzo_requests_%'";

/// Recorded load replayed through an infrastructure twin: its topology,
/// faults and assertions, on the load the timeseries database recorded.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// The infrastructure twin, by id or name.
    #[schema(example = "shop-infra")]
    pub twin: String,
    /// The recorded load from this time (RFC 3339)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-02-20T00:00:00Z")]
    pub from: Option<String>,
    /// …to this one, not included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-02-21T00:00:00Z")]
    pub to: Option<String>,
    /// The SQL that reads it: rows of `(bucket, metric, service,
    /// avg_value)`, each a service's requests per second over its bucket.
    /// Absent: the spec's `metrics_1m` query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Write the run back to the database's `twin_experiments`, tagged
    /// with this experiment name (the base run's variant is the twin's
    /// name, each what-if's its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// What-ifs replayed beside the twin on the same traffic: each the
    /// twin with a topology patch (replicas, CPU limits and requests,
    /// workers, Kubernetes objects added or replaced), at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<hanzo_twin_engines::infra::Variant>,
}

/// What-ifs one replay runs at most (each a whole simulation of the span).
pub const MAX_VARIANTS: usize = 8;

impl ReplaySpec {
    /// `from` and `to` as Unix seconds.
    pub fn window(&self) -> Result<(Option<f64>, Option<f64>), SpecError> {
        let at = |field: &str, text: &Option<String>| {
            text.as_ref()
                .map(|t| {
                    DateTime::parse_from_rfc3339(t)
                        .map(|d| d.timestamp_millis() as f64 / 1000.0)
                        .map_err(|e| {
                            invalid(
                                field,
                                format!("`{t}` is not an RFC 3339 time such as 2026-02-20T00:00:00Z ({e})"),
                            )
                        })
                })
                .transpose()
        };
        let (from, to) = (at("from", &self.from)?, at("to", &self.to)?);
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(invalid("to", "must be after from"));
        }
        Ok((from, to))
    }

    fn check(&self) -> Result<(), SpecError> {
        if self.twin.trim().is_empty() {
            return Err(invalid("twin", "name the infrastructure twin"));
        }
        self.window()?;
        if let Some(q) = &self.query
            && q.trim().is_empty()
        {
            return Err(invalid(
                "query",
                "give the SQL, or leave query out for the spec's metrics_1m query",
            ));
        }
        if let Some(e) = &self.experiment {
            crate::definition::Name::new(e).map_err(|m| invalid("experiment", m))?;
        }
        if self.variants.len() > MAX_VARIANTS {
            return Err(invalid(
                "variants",
                format!(
                    "{} what-ifs; a replay runs at most {MAX_VARIANTS} (submit another for more)",
                    self.variants.len()
                ),
            ));
        }
        hanzo_twin_engines::infra::whatif::check_variants(&self.variants, "variants", "").map_err(
            |hanzo_twin_engines::infra::InfraError::Invalid { field, message }| {
                invalid(field, message)
            },
        )
    }
}

/// The schema of a spec: one closed object per kind, holding the `kind`
/// tag beside the kind's own fields. (Derived, it would be the kind's
/// closed object and the tag side by side in an `allOf`, which nothing
/// satisfies, since each half forbids the other's properties.)
impl utoipa::PartialSchema for JobSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{
            Discriminator, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
        };
        let tagged = |kind: &str, inner: RefOr<Schema>| -> Schema {
            let tag = ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .enum_values(Some([kind]))
                .build();
            match inner {
                RefOr::T(Schema::Object(mut object)) => {
                    object.properties.insert("kind".into(), tag.into());
                    object.required.insert(0, "kind".into());
                    Schema::Object(object)
                }
                other => Schema::AllOf(
                    utoipa::openapi::schema::AllOfBuilder::new()
                        .item(other)
                        .item(ObjectBuilder::new().property("kind", tag).required("kind"))
                        .build(),
                ),
            }
        };
        OneOfBuilder::new()
            .description(Some(
                "A job's spec, tagged by `kind`: `train`, `evaluate`, `compare`, `synthdata` or `replay`.",
            ))
            .item(tagged(
                "train",
                <TrainSpec as utoipa::PartialSchema>::schema(),
            ))
            .item(tagged(
                "evaluate",
                <EvaluateSpec as utoipa::PartialSchema>::schema(),
            ))
            .item(tagged(
                "compare",
                <crate::compare::CompareRequest as utoipa::PartialSchema>::schema(),
            ))
            .item(tagged(
                "synthdata",
                <hanzo_twin_render::synth::SynthSpec as utoipa::PartialSchema>::schema(),
            ))
            .item(tagged(
                "replay",
                <ReplaySpec as utoipa::PartialSchema>::schema(),
            ))
            .discriminator(Some(Discriminator::new("kind")))
            .into()
    }
}

impl utoipa::ToSchema for JobSpec {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <TrainSpec as utoipa::ToSchema>::schemas(schemas);
        <EvaluateSpec as utoipa::ToSchema>::schemas(schemas);
        <crate::compare::CompareRequest as utoipa::ToSchema>::schemas(schemas);
        <hanzo_twin_render::synth::SynthSpec as utoipa::ToSchema>::schemas(schemas);
        <ReplaySpec as utoipa::ToSchema>::schemas(schemas);
    }
}

impl JobSpec {
    /// A training job's trainer.
    pub fn backend(&self) -> Option<Backend> {
        match self {
            JobSpec::Train(t) => Some(t.backend),
            _ => None,
        }
    }

    /// Whether a training job's environments are reached through the node's
    /// API as its submitter (so it needs the submitter's token): a twin's,
    /// and RLlib's env runners', which run outside the node.
    pub fn trains_through_api(&self) -> bool {
        matches!(self, JobSpec::Train(t) if t.twin.is_some() || t.backend == Backend::Rllib)
    }

    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Train(_) => JobKind::Train,
            JobSpec::Evaluate(_) => JobKind::Evaluate,
            JobSpec::Compare(_) => JobKind::Compare,
            JobSpec::Synthdata(_) => JobKind::Synthdata,
            JobSpec::Replay(_) => JobKind::Replay,
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Train,
    Evaluate,
    Compare,
    Synthdata,
    Replay,
}

impl JobKind {
    pub const ALL: [JobKind; 5] = [
        JobKind::Train,
        JobKind::Evaluate,
        JobKind::Compare,
        JobKind::Synthdata,
        JobKind::Replay,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Evaluate => "evaluate",
            JobKind::Compare => "compare",
            JobKind::Synthdata => "synthdata",
            JobKind::Replay => "replay",
        }
    }

    pub fn parse(s: &str) -> Option<JobKind> {
        JobKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The trainer a training job runs.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// Stable-Baselines3 in a worker process on the node.
    #[default]
    Sb3,
    /// RLlib on the Ray cluster at the node's `scheduler.ray_address`: the
    /// learner in the node's worker process (Ray's driver), the env runners
    /// wherever Ray places them, each stepping a remote batch on the node.
    Rllib,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sb3 => "sb3",
            Backend::Rllib => "rllib",
        }
    }
}

/// The trainer's algorithm.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algo {
    /// Proximal Policy Optimization: discrete or continuous actions.
    #[default]
    Ppo,
    /// Soft Actor-Critic: continuous control.
    Sac,
}

impl Algo {
    /// The arguments of the algorithm a spec may set on `backend`, with the
    /// kind of value each takes: Stable-Baselines3's constructor arguments,
    /// or what RLlib's `PPOConfig.training` takes.
    fn hyperparameters(self, backend: Backend) -> &'static [(&'static str, Value)] {
        use Value::{Int, Number, Schedule};
        match (backend, self) {
            (Backend::Rllib, _) => &[
                ("lr", Schedule),
                ("gamma", Number),
                ("lambda_", Number),
                ("clip_param", Number),
                ("vf_clip_param", Number),
                ("entropy_coeff", Number),
                ("vf_loss_coeff", Number),
                ("kl_coeff", Number),
                ("kl_target", Number),
                ("grad_clip", Number),
                ("num_epochs", Int),
                ("minibatch_size", Int),
                ("train_batch_size_per_learner", Int),
            ],
            (Backend::Sb3, Algo::Ppo) => &[
                ("learning_rate", Schedule),
                ("n_steps", Int),
                ("batch_size", Int),
                ("n_epochs", Int),
                ("gamma", Number),
                ("gae_lambda", Number),
                ("clip_range", Schedule),
                ("ent_coef", Number),
                ("vf_coef", Number),
                ("max_grad_norm", Number),
                ("target_kl", Number),
            ],
            (Backend::Sb3, Algo::Sac) => &[
                ("learning_rate", Schedule),
                ("buffer_size", Int),
                ("learning_starts", Int),
                ("batch_size", Int),
                ("tau", Number),
                ("gamma", Number),
                ("train_freq", Int),
                ("gradient_steps", Int),
            ],
        }
    }
}

#[derive(Clone, Copy)]
enum Value {
    Number,
    Int,
    /// A number, or `lin_<number>`: from that value down to 0 over the
    /// run (rl-zoo's spelling of SB3's linear schedule).
    Schedule,
}

/// `kind: train`: the spec's `hanzo-twin train --twin … --engine mujoco
/// --algo ppo --num-envs 64 --total-steps 10_000_000`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// A built-in task (`cartpole-v0`, `ant-v5`); or give `twin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// A twin (id or name) whose own control task is trained, through this
    /// node's gym API as the job's submitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twin: Option<String>,
    /// The engine the environments run on (default: the task's or twin's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<hanzo_twin_engines::EngineKind>,
    /// The trainer: `sb3` (Stable-Baselines3 on this node, the default) or
    /// `rllib` (RLlib PPO on the node's Ray cluster).
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub algo: Algo,
    /// Environments stepped at once (1–4096), over all env runners.
    #[serde(default = "default_num_envs")]
    pub num_envs: u32,
    /// `rllib`: RLlib env runners (Ray actors), each stepping its share of
    /// `num_envs` as one remote batch on the node (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_runners: Option<u32>,
    /// Environment steps to train for, over all environments.
    pub total_steps: u64,
    #[serde(default)]
    pub seed: u64,
    /// The algorithm's arguments, by the trainer's names: Stable-Baselines3's
    /// (`{"learning_rate": 0.001, "n_steps": 256}`) or RLlib's
    /// (`{"lr": 0.001, "train_batch_size_per_learner": 256}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Object)]
    pub hyperparameters: BTreeMap<String, serde_json::Value>,
    /// A policy checkpoint every this many steps (default: a tenth of
    /// `total_steps`), kept as an artifact; a resumed job starts from the
    /// latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_steps: Option<u64>,
    /// Episodes of the final evaluation (deterministic actions).
    #[serde(default = "default_eval_episodes")]
    pub eval_episodes: u32,
}

fn default_num_envs() -> u32 {
    8
}

fn default_eval_episodes() -> u32 {
    10
}

/// `kind: evaluate`: a train job's final (or latest) policy on that job's
/// environments.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateSpec {
    /// The train job whose policy is evaluated.
    #[schema(value_type = String, format = Uuid)]
    pub policy_job: JobId,
    /// Episodes to average over (1–10000).
    #[serde(default = "default_episodes")]
    pub episodes: u32,
    #[serde(default = "default_true")]
    pub deterministic: bool,
    #[serde(default)]
    pub seed: u64,
}

fn default_episodes() -> u32 {
    20
}

fn default_true() -> bool {
    true
}

/// A spec that cannot run: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

impl JobSpec {
    /// Everything that can be known wrong before the job runs.
    pub fn check(&self) -> Result<(), SpecError> {
        match self {
            JobSpec::Train(t) => t.check(),
            JobSpec::Evaluate(e) => {
                if !(1..=10_000).contains(&e.episodes) {
                    return Err(invalid("episodes", "must be between 1 and 10000"));
                }
                Ok(())
            }
            JobSpec::Compare(c) => {
                if c.engines.len() < 2 {
                    return Err(invalid("engines", "name at least two engines to compare"));
                }
                let most = hanzo_twin_engines::compare::MAX_STEPS;
                if !(1..=most).contains(&c.steps) {
                    return Err(invalid("steps", format!("must be between 1 and {most}")));
                }
                if c.sample_every == 0 {
                    return Err(invalid("sample_every", "must be at least 1"));
                }
                Ok(())
            }
            JobSpec::Synthdata(spec) => spec.validate().map_err(|e| match e {
                hanzo_twin_render::RenderError::Invalid { field, message } => {
                    invalid(field, message)
                }
                other => invalid("spec", other.to_string()),
            }),
            JobSpec::Replay(r) => r.check(),
        }
    }
}

impl TrainSpec {
    fn check(&self) -> Result<(), SpecError> {
        match (&self.task, &self.twin) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "twin",
                    "give a task or a twin, not both (a twin trains its own control task)",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "task",
                    format!("give a built-in task ({}) or a twin", TASKS.join(", ")),
                ));
            }
            (Some(task), None) if !TASKS.contains(&task.as_str()) => {
                return Err(invalid(
                    "task",
                    format!(
                        "unknown task `{}`; the built-in tasks are {}",
                        crate::definition::shortened(task),
                        TASKS.join(", ")
                    ),
                ));
            }
            (Some(task), None) if task == "ant-v5" => {
                if let Some(e) = self
                    .engine
                    .filter(|e| *e != hanzo_twin_engines::EngineKind::Mujoco)
                {
                    return Err(invalid(
                        "engine",
                        format!("ant-v5 runs on mujoco (Gymnasium's model), not {e}"),
                    ));
                }
            }
            (None, Some(twin)) if twin.is_empty() || twin.len() > 64 => {
                return Err(invalid("twin", "a twin's id or name, 1 to 64 characters"));
            }
            _ => {}
        }
        if !(1..=MAX_NUM_ENVS).contains(&self.num_envs) {
            return Err(invalid(
                "num_envs",
                format!("must be between 1 and {MAX_NUM_ENVS}"),
            ));
        }
        if !(1..=MAX_TOTAL_STEPS).contains(&self.total_steps) {
            return Err(invalid(
                "total_steps",
                format!("must be between 1 and {MAX_TOTAL_STEPS}"),
            ));
        }
        if self.checkpoint_every_steps == Some(0) {
            return Err(invalid("checkpoint_every_steps", "must be at least 1"));
        }
        if !(1..=10_000).contains(&self.eval_episodes) {
            return Err(invalid("eval_episodes", "must be between 1 and 10000"));
        }
        if self.backend == Backend::Rllib && self.algo != Algo::Ppo {
            return Err(invalid(
                "algo",
                format!(
                    "backend rllib trains ppo; {} runs on backend sb3",
                    self.algo.name()
                ),
            ));
        }
        match (self.backend, self.env_runners) {
            (Backend::Sb3, Some(_)) => {
                return Err(invalid(
                    "env_runners",
                    "applies to backend rllib (sb3 steps all num_envs on the node)",
                ));
            }
            (Backend::Rllib, Some(n)) if n == 0 || n > self.num_envs => {
                return Err(invalid(
                    "env_runners",
                    format!(
                        "must be between 1 and num_envs ({}): each runner steps at least one environment",
                        self.num_envs
                    ),
                ));
            }
            _ => {}
        }
        let known = self.algo.hyperparameters(self.backend);
        for (name, value) in &self.hyperparameters {
            let field = format!("hyperparameters.{}", crate::definition::shortened(name));
            let Some((_, kind)) = known.iter().find(|(n, _)| n == name) else {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                return Err(invalid(
                    field,
                    format!(
                        "{} on {} takes none of that name; it takes {}",
                        self.algo.name(),
                        self.backend.name(),
                        names.join(", ")
                    ),
                ));
            };
            let number = |v: &serde_json::Value| v.as_f64().is_some_and(f64::is_finite);
            let ok = match kind {
                Value::Number => number(value),
                Value::Int => value.as_u64().is_some_and(|n| n >= 1),
                Value::Schedule => {
                    number(value)
                        || value
                            .as_str()
                            .and_then(|s| s.strip_prefix("lin_"))
                            .and_then(|n| n.parse::<f64>().ok())
                            .is_some_and(f64::is_finite)
                }
            };
            if !ok {
                return Err(invalid(
                    field,
                    match kind {
                        Value::Number => "must be a finite number",
                        Value::Int => "must be a whole number of at least 1",
                        Value::Schedule => {
                            "must be a finite number, or lin_<number> for a linear schedule from it to 0"
                        }
                    },
                ));
            }
        }
        Ok(())
    }
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ppo => "ppo",
            Algo::Sac => "sac",
        }
    }
}

/// Where a job stands.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for a slot (`scheduler.max_concurrent_jobs`).
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Nothing more happens to a job in this state.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// How far a job has come.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    /// Environment steps done (train) or episodes done (evaluate).
    pub steps: u64,
    pub total_steps: u64,
    pub episodes: u64,
    /// The mean return of the latest episodes.
    pub mean_return: Option<f64>,
    pub steps_per_second: Option<f64>,
    /// 0 to 1.
    pub fraction: f64,
}

/// Something a job produced and the node keeps (a policy checkpoint).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// The file's name, e.g. `policy-000000050000.zip` or `policy-final.zip`.
    pub name: String,
    /// The environment steps it was taken at.
    pub steps: u64,
    pub bytes: u64,
    pub created_at: DateTime<Utc>,
}

/// A job as the node keeps it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    #[schema(value_type = String, format = Uuid)]
    pub id: JobId,
    pub kind: JobKind,
    pub spec: JobSpec,
    /// The submitter's subject.
    pub owner: String,
    pub organization: String,
    pub state: JobState,
    pub progress: JobProgress,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What a finished job found (a train or evaluate job's `mean_return`).
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Why it failed, or who cancelled it.
    pub error: Option<String>,
    pub artifacts: Vec<Artifact>,
    /// The node running it (or that ran it).
    pub node: Option<String>,
    /// How many times it has started: more than one after a resume.
    pub attempts: u32,
    /// How many lines its log had when the record was last written: a node
    /// that takes the job over numbers its lines on from here.
    #[serde(default)]
    pub log_lines: u64,
}

impl JobRecord {
    pub fn new(spec: JobSpec, owner: String, organization: String) -> JobRecord {
        let total_steps = match &spec {
            JobSpec::Train(t) => t.total_steps,
            JobSpec::Evaluate(e) => u64::from(e.episodes),
            // Every engine runs every step.
            JobSpec::Compare(c) => c.steps.saturating_mul(c.engines.len() as u64),
            // Progress counts frames.
            JobSpec::Synthdata(s) => s.num_frames,
            // Progress counts percent of the recorded span.
            JobSpec::Replay(_) => 100,
        };
        JobRecord {
            id: uuid::Uuid::now_v7(),
            kind: spec.kind(),
            spec,
            owner,
            organization,
            state: JobState::Queued,
            progress: JobProgress {
                total_steps,
                ..JobProgress::default()
            },
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            artifacts: Vec::new(),
            node: None,
            attempts: 0,
            log_lines: 0,
        }
    }

    /// The latest policy checkpoint, the final one first.
    pub fn latest_policy(&self) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .filter(|a| a.name.starts_with("policy-"))
            .max_by_key(|a| (a.name == "policy-final.zip", a.steps))
    }
}

/// Which jobs a listing shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub organization: Option<String>,
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    pub owner: Option<String>,
}

impl JobFilter {
    pub fn admits(&self, r: &JobRecord) -> bool {
        self.organization
            .as_ref()
            .is_none_or(|o| *o == r.organization)
            && self.state.is_none_or(|s| s == r.state)
            && self.kind.is_none_or(|k| k == r.kind)
            && self.owner.as_ref().is_none_or(|o| *o == r.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train(json: serde_json::Value) -> Result<(), SpecError> {
        let spec: JobSpec =
            serde_json::from_value(json).map_err(|e| invalid("body", e.to_string()))?;
        spec.check()
    }

    #[test]
    fn a_train_spec_is_checked_field_by_field() {
        let ok = serde_json::json!({"kind": "train", "task": "cartpole-v0", "total_steps": 1000});
        assert_eq!(train(ok.clone()), Ok(()));
        let with = |k: &str, v: serde_json::Value| {
            let mut s = ok.clone();
            s[k] = v;
            train(s).expect_err(k).field
        };
        assert_eq!(with("task", "pong".into()), "task");
        assert_eq!(with("twin", "arm".into()), "twin");
        assert_eq!(with("num_envs", 0.into()), "num_envs");
        assert_eq!(with("total_steps", 0.into()), "total_steps");
        assert_eq!(
            with("checkpoint_every_steps", 0.into()),
            "checkpoint_every_steps"
        );
        assert_eq!(
            with("hyperparameters", serde_json::json!({"n_steps": 0.5})),
            "hyperparameters.n_steps"
        );
        assert_eq!(
            with("hyperparameters", serde_json::json!({"tau": 0.5})),
            "hyperparameters.tau"
        );
        let mut ant = ok.clone();
        ant["task"] = "ant-v5".into();
        ant["engine"] = "rapier3d".into();
        assert_eq!(train(ant).expect_err("ant").field, "engine");
        let mut sac = ok;
        sac["algo"] = "sac".into();
        sac["hyperparameters"] =
            serde_json::json!({"tau": 0.01, "learning_starts": 100, "learning_rate": "lin_0.0003"});
        assert_eq!(train(sac.clone()), Ok(()));
        sac["hyperparameters"] = serde_json::json!({"learning_rate": "cosine"});
        assert_eq!(
            train(sac.clone()).expect_err("schedule").field,
            "hyperparameters.learning_rate"
        );
        // RLlib: its own names, PPO only, runners within num_envs.
        sac["backend"] = "rllib".into();
        sac["hyperparameters"] = serde_json::json!({});
        assert_eq!(train(sac).expect_err("rllib sac").field, "algo");
        let mut rllib = serde_json::json!({"kind": "train", "task": "cartpole-v0",
            "total_steps": 1000, "backend": "rllib", "num_envs": 8, "env_runners": 2,
            "hyperparameters": {"lr": "lin_0.001", "lambda_": 0.8, "minibatch_size": 256}});
        assert_eq!(train(rllib.clone()), Ok(()));
        rllib["env_runners"] = 9.into();
        assert_eq!(
            train(rllib.clone()).expect_err("runners").field,
            "env_runners"
        );
        rllib["env_runners"] = 2.into();
        rllib["hyperparameters"] = serde_json::json!({"n_steps": 32});
        assert_eq!(
            train(rllib.clone()).expect_err("sb3 name").field,
            "hyperparameters.n_steps"
        );
        rllib["backend"] = "sb3".into();
        rllib["hyperparameters"] = serde_json::json!({});
        assert_eq!(train(rllib).expect_err("sb3 runners").field, "env_runners");
    }

    #[test]
    fn the_latest_policy_is_the_final_one_else_the_most_trained() {
        let spec = JobSpec::Evaluate(EvaluateSpec {
            policy_job: uuid::Uuid::nil(),
            episodes: 1,
            deterministic: true,
            seed: 0,
        });
        let mut r = JobRecord::new(spec, "a".into(), "o".into());
        let art = |name: &str, steps| Artifact {
            name: name.into(),
            steps,
            bytes: 1,
            created_at: Utc::now(),
        };
        r.artifacts = vec![
            art("policy-000000000200.zip", 200),
            art("policy-000000000100.zip", 100),
        ];
        assert_eq!(r.latest_policy().map(|a| a.steps), Some(200));
        r.artifacts.push(art("policy-final.zip", 150));
        assert_eq!(
            r.latest_policy().map(|a| a.name.as_str()),
            Some("policy-final.zip")
        );
    }
}
