//! Node configuration: embedded defaults, then a YAML file, then `HANZO_TWIN_*`
//! environment variables, each overriding the one before. String values in
//! the file may name environment variables as `${NAME}` (the spec's
//! `access_key: "${HANZO_STORAGE_ACCESS_KEY}"`); one that is not set is an
//! error naming it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where a node looks for its configuration when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hanzo-twin/config.yaml";
/// The prefix of environment overrides: `HANZO_TWIN_SERVER_PORT=9000` sets
/// `server.port`.
pub const ENV_PREFIX: &str = "HANZO_TWIN_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub server: ServerSection,
    pub metrics: MetricsSection,
    /// Everything the node keeps: the sled store and local object storage.
    pub data_dir: PathBuf,
    pub scenes: ScenesSection,
    pub storage: StorageSection,
    pub twins: TwinsSection,
    pub metadata: MetadataSection,
    pub cluster: ClusterSection,
    pub gym: GymSection,
    /// The render workers that draw twins and synthetic data.
    pub render: RenderSection,
    pub auth: AuthSection,
    pub logging: LoggingSection,
    pub stream: StreamSection,
    /// Per engine: turned off, or a cap on its live simulations.
    pub engines: std::collections::BTreeMap<hanzo_twin_engines::EngineKind, EngineSettings>,
    /// Where training and synthetic-data jobs run.
    pub scheduler: SchedulerSection,
    /// The spec's `database.url`: a PostgreSQL URL here is the same as
    /// `metadata.backend: postgres` with `metadata.postgres.url`.
    pub database: DatabaseSection,
    /// The timeseries database (HIP-0059, PostgreSQL or TimescaleDB) that
    /// infrastructure twins' replays read recorded load from and write
    /// their experiments to.
    pub timeseries: TimeseriesSection,
    /// What loading noticed but did not refuse (an unknown `HANZO_TWIN_`
    /// variable), for the node to log once logging is up.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// The spec's `engines.<name>` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// `false`: twins asking for the engine answer `not_available`, naming
    /// this key.
    pub enabled: bool,
    /// The most simulations of the engine alive at once on this node
    /// (twins, forks, RL environments); past it a start or fork answers 503
    /// `at_capacity`. Unset: no cap.
    pub max_instances: Option<usize>,
    /// For engines run as a process beside the node (Gazebo, Omniverse),
    /// which this build does not have: kept, and warned about at start.
    pub binary: Option<PathBuf>,
    pub nucleus_url: Option<String>,
    pub gpu_ids: Vec<u32>,
    pub ros_distro: Option<String>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            enabled: true,
            max_instances: None,
            binary: None,
            nucleus_url: None,
            gpu_ids: Vec::new(),
            ros_distro: None,
        }
    }
}

/// The spec's `scheduler` block: where jobs run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// The Kubernetes namespace of job pods.
    pub namespace: String,
    /// GPU kinds jobs may ask for, as `<vendor>-<model>[-<memory>]`
    /// (`nvidia-h100-80gb`).
    pub gpu_types: Vec<String>,
    /// Jobs running at once on a node; the excess waits in its queue.
    pub max_concurrent_jobs: u32,
    /// The Python that runs training workers: it needs the `hanzo-twin`
    /// package with its `train` extra (Stable-Baselines3, PyTorch), and its
    /// `rllib` extra for `backend: rllib`.
    pub python: PathBuf,
    /// The Ray cluster `backend: rllib` training runs on: its head's
    /// `host:port` (the GCS, `ray start --head`'s port; this machine joins
    /// the cluster as any Ray driver's does) or `ray://host:port` (Ray
    /// Client). None: such jobs are refused.
    pub ray_address: Option<String>,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection {
            namespace: "hanzo-twin".into(),
            gpu_types: Vec::new(),
            max_concurrent_jobs: 16,
            python: PathBuf::from("python3"),
            ray_address: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeseriesSection {
    /// `postgres://…`; unset: replays are refused with this key named.
    pub url: Option<String>,
}

/// The Kafka stream twins publish to (the spec's `stream`): the brokers of
/// Kafka publishers that name none, and the prefix of their default topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// `host:port`, comma-separated; empty for none.
    pub brokers: String,
    pub topic_prefix: String,
    /// Mutual TLS to the brokers; with it they may be anywhere.
    pub tls: StreamTlsSection,
    /// The brokers sit on a closed private network (a compose network, a
    /// pod network a NetworkPolicy closes): they may be beyond loopback,
    /// reached in the clear. With neither this nor `tls`, only brokers on
    /// this machine are accepted.
    pub private_network: bool,
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            brokers: String::new(),
            tls: StreamTlsSection::default(),
            topic_prefix: "hanzo.twin".into(),
            private_network: false,
        }
    }
}

/// `stream.tls`: PEM files. Set together, or not at all (the clear).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamTlsSection {
    /// The CA the brokers' certificates are checked against.
    pub ca_file: Option<PathBuf>,
    /// The node's client certificate, and its key.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl StreamTlsSection {
    /// The TLS settings, all three files named and readable; `None` with
    /// none named. The error names the key.
    pub fn settings(&self) -> Result<Option<hanzo_twin_actors::sync::KafkaTls>, String> {
        let files = [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ];
        if files.iter().all(|(_, f)| f.is_none()) {
            return Ok(None);
        }
        for (key, file) in files {
            let Some(file) = file else {
                return Err(format!(
                    "tls.{key} is not set: TLS to the brokers needs ca_file (their CA), cert_file and key_file (the node's client certificate)"
                ));
            };
            if let Err(e) = std::fs::File::open(file) {
                return Err(format!("tls.{key}: cannot read {}: {e}", file.display()));
            }
        }
        Ok(Some(hanzo_twin_actors::sync::KafkaTls {
            ca_file: self.ca_file.clone().unwrap_or_default(),
            cert_file: self.cert_file.clone().unwrap_or_default(),
            key_file: self.key_file.clone().unwrap_or_default(),
        }))
    }
}

impl StreamSection {
    /// The stream's settings, with the node's folder of sync recordings.
    pub fn settings(
        &self,
        recordings: &std::path::Path,
    ) -> hanzo_twin_actors::sync::StreamSettings {
        hanzo_twin_actors::sync::StreamSettings {
            brokers: (!self.brokers.trim().is_empty()).then(|| self.brokers.trim().to_string()),
            // Loading checked the files (`NodeConfig::validate`).
            tls: self.tls.settings().ok().flatten().map(std::sync::Arc::new),
            topic_prefix: self.topic_prefix.clone(),
            recordings: Some(recordings.to_path_buf()),
        }
    }
}

/// Taking part in a cluster of nodes (ractor_cluster). Unset `listen` and no
/// seeds: the node runs alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// `host:port` this node's cluster server listens on.
    pub listen: Option<String>,
    /// The secret every member shares (authentication, not encryption).
    pub cookie: Option<String>,
    /// Members to join at start (`host:port` of their cluster servers);
    /// `hanzo-twin serve --join` adds to them.
    pub seeds: Vec<String>,
    /// Milliseconds between membership and placement checks, besides every
    /// session change.
    pub refresh_ms: u64,
    /// Milliseconds a node's heartbeat in the shared store counts: the twins
    /// of a node silent for longer are taken over by the others.
    pub lease_ms: u64,
    /// Twins one node hands off per placement round, so a node joining never
    /// sets the whole cluster moving at once.
    pub max_moves: usize,
    /// Bytes of the largest message sent whole between nodes; larger ones (a
    /// fork's or checkpoint's state) travel in parts this size. ractor_cluster
    /// drops a connection on a frame over 16 MiB.
    pub max_frame_bytes: usize,
    /// Mutual TLS between nodes (PEM files); unset: plain TCP, authenticated
    /// by the cookie only.
    pub tls: ClusterTlsSection,
}

/// TLS on the links between nodes: this node's certificate and key, and the
/// cluster's CA, which must have signed every member's certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterTlsSection {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// The name every member's certificate carries (a DNS SAN).
    pub server_name: String,
}

impl Default for ClusterTlsSection {
    fn default() -> Self {
        ClusterTlsSection {
            cert: None,
            key: None,
            ca: None,
            server_name: "hanzo-twin".into(),
        }
    }
}

impl ClusterTlsSection {
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some() || self.ca.is_some()
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            listen: None,
            cookie: None,
            seeds: Vec::new(),
            refresh_ms: 1000,
            lease_ms: 3000,
            max_moves: 8,
            max_frame_bytes: 8 << 20,
            tls: ClusterTlsSection::default(),
        }
    }
}

impl ClusterSection {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || !self.seeds.is_empty()
    }
}

/// Where twin definitions and status live: sled in the data folder (one
/// node), or PostgreSQL (shared by several nodes).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataSection {
    pub backend: MetadataBackend,
    pub postgres: PostgresSection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetadataBackend {
    #[default]
    Sled,
    Postgres,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSection {
    /// `postgres://user:password@host:port/database` (or key=value form).
    pub url: Option<String>,
    /// The schema holding the tables; created when missing.
    pub schema: String,
    /// Connections kept open.
    pub pool_size: usize,
    /// Seconds to wait for a connection before a request fails.
    pub connect_timeout_s: u64,
}

impl Default for PostgresSection {
    fn default() -> Self {
        PostgresSection {
            url: None,
            schema: "hanzo_twin".into(),
            pool_size: 8,
            connect_timeout_s: 5,
        }
    }
}

/// RL environments (`/v1/gym/envs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GymSection {
    /// Gymnasium's `ant.xml`, for the `ant-v5` task (MuJoCo builds). Unset,
    /// the environment variable HANZO_TWIN_ANT_XML names it.
    pub ant_xml: Option<PathBuf>,
    /// A batch no request reached for this many seconds is deleted, so the
    /// environments of a trainer that died (a killed process, an env runner
    /// Ray stopped) do not hold the node's memory and threads; 0: never.
    pub idle_timeout_s: u64,
}

impl Default for GymSection {
    fn default() -> Self {
        GymSection {
            ant_xml: None,
            idle_timeout_s: 600,
        }
    }
}

/// The node's render worker pool (`GET /v1/twins/{id}/render`, synthetic data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderSection {
    /// Frames drawn at once; each also spreads its rows over the cores.
    pub workers: usize,
    /// Frames waiting beyond those; past it a request answers 503.
    pub max_queue: usize,
}

impl Default for RenderSection {
    fn default() -> Self {
        RenderSection {
            workers: 2,
            max_queue: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// This node's id; `None` takes the one stored in the data folder, or makes one.
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub host: String,
    pub port: u16,
    /// Tokio worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// On SIGTERM, the node stops within this many seconds whatever its
    /// twins and clients do: open requests and streams get half of it, the
    /// twins' final checkpoints the rest.
    pub shutdown_timeout_s: u64,
    /// Requests the node works on at once (API and cluster together); more
    /// are refused at once with 503 `overloaded`, so no mailbox grows
    /// without bound.
    pub max_in_flight: usize,
    /// Serve the API over TLS when both are set.
    pub tls: TlsSection,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// PEM certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// How callers prove who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The node signs its own admin token at start (single node, loopback).
    Dev,
    /// Tokens from an identity provider, checked against its public keys.
    Jwt,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Dev unless the file sets a key source (`iam_url`, `jwks_url`,
    /// `jwks_file`, `public_keys`) and no mode: then jwt.
    pub mode: AuthMode,
    /// Required `iss` of every token.
    pub issuer: String,
    /// Required `aud` of every token.
    pub audience: String,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_s: u64,
    /// Claim naming the caller's organization (dots walk into objects).
    pub organization_claim: String,
    /// Claim listing the caller's roles.
    pub roles_claim: String,
    /// PEM public keys (RSA or EC P-256) that sign tokens.
    pub public_keys: Vec<PathBuf>,
    /// A JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS document fetched over https (http on loopback).
    pub jwks_url: Option<String>,
    /// An OpenID Connect provider (Hanzo IAM, say): its issuer and signing
    /// keys are read from `<iam_url>/.well-known/openid-configuration`.
    pub iam_url: Option<String>,
    /// The spec's switch. Only `true` exists: every endpoint but the probes
    /// needs a token (`auth.mode: dev` is the way to work locally).
    pub verify_tokens: bool,
    /// Seconds between refetches of `jwks_url`.
    pub jwks_refresh_s: u64,
    pub dev: DevAuthSection,
    pub rate_limit: RateLimitSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevAuthSection {
    /// The organization of the minted admin token.
    pub organization: String,
    /// How long the minted token is valid.
    pub token_ttl_s: u64,
    /// Development mode refuses to run when the API listens beyond loopback,
    /// since anyone reaching it could use a leaked dev token; this forces it.
    pub allow_non_loopback: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSection {
    /// Sustained CRUD and lifecycle requests per second per token; 0 turns
    /// their limit off.
    pub per_second: u32,
    /// Requests a token may send at once above the sustained rate.
    pub burst: u32,
    /// The control loop of running twins (step, commands, observation,
    /// state, clock): sustained requests per second per token, 0 for none.
    pub control_per_second: u32,
    pub control_burst: u32,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::Dev,
            issuer: "hanzo-twin".into(),
            audience: "hanzo-twin".into(),
            leeway_s: 30,
            organization_claim: "org".into(),
            roles_claim: "roles".into(),
            public_keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            iam_url: None,
            verify_tokens: true,
            jwks_refresh_s: 300,
            dev: DevAuthSection::default(),
            rate_limit: RateLimitSection::default(),
        }
    }
}

impl Default for DevAuthSection {
    fn default() -> Self {
        DevAuthSection {
            organization: hanzo_twin_actors::DEFAULT_ORGANIZATION.into(),
            token_ttl_s: 7 * 24 * 3600,
            allow_non_loopback: false,
        }
    }
}

impl Default for RateLimitSection {
    fn default() -> Self {
        RateLimitSection {
            per_second: 200,
            burst: 400,
            // An agent stepping a twin at 1 kHz with an observation each step
            // is 2,000 a second; leave room for several such loops per token.
            control_per_second: 10_000,
            control_burst: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenesSection {
    /// Relative scene URIs of twin definitions resolve here.
    pub root: PathBuf,
    /// Largest scene upload (a tar of the scene's files), in bytes.
    pub max_upload_bytes: usize,
    /// The address space a scene-reading child process may grow by, in
    /// bytes (RLIMIT_AS past what it has at start): a hostile file costs
    /// one child, never the node's memory.
    pub reader_memory_bytes: u64,
}

/// Where objects live: scenes, datasets and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// Folders on this machine: `root/<bucket>/…`.
    Local,
    /// An S3-protocol service at `endpoint` (AWS, MinIO, Ceph, …).
    S3,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub backend: StorageBackend,
    /// Local backend: the folder holding one folder per bucket; default
    /// `<data_dir>/objects`.
    pub root: Option<PathBuf>,
    /// S3 backend: the service URL; unset means AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    /// Allow a plain-http endpoint (a server on loopback, say).
    pub allow_http: bool,
    pub buckets: BucketsSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketsSection {
    pub scenes: String,
    pub datasets: String,
    pub checkpoints: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            backend: StorageBackend::Local,
            root: None,
            endpoint: None,
            region: "us-east-1".into(),
            access_key: None,
            secret_key: None,
            allow_http: false,
            buckets: BucketsSection::default(),
        }
    }
}

impl Default for BucketsSection {
    fn default() -> Self {
        BucketsSection {
            scenes: "hanzo-twin-scenes".into(),
            datasets: "hanzo-twin-datasets".into(),
            checkpoints: "hanzo-twin-checkpoints".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwinsSection {
    /// Simulated seconds between checkpoints of a running twin...
    pub checkpoint_interval_s: f64,
    /// ...and the least wall time between two, so a fast clock does not
    /// checkpoint thousands of times a second (a due checkpoint waits).
    pub checkpoint_min_interval_ms: u64,
    /// Crashes allowed within `restart_window_s` before a twin is marked failed.
    pub max_restarts: u32,
    pub restart_window_s: u64,
    /// How long the node waits for a twin to answer.
    pub call_timeout_ms: u64,
    /// A running twin whose clock is paused, with no sync sources, that no
    /// request reached for this long is deactivated; the next request
    /// brings it back from its checkpoint (0: never).
    pub passivate_after_s: u64,
    /// Body poses recorded per simulated second, for exporting runs as USD
    /// (0 turns recording off).
    pub record_hz: f64,
    /// Simulated seconds of recording kept per twin (the newest).
    pub record_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// A tracing filter: `info`, `debug`, `hanzo_twin=debug,info`, …
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node: NodeSection::default(),
            server: ServerSection::default(),
            metrics: MetricsSection::default(),
            data_dir: PathBuf::from("hanzo-twin-data"),
            scenes: ScenesSection::default(),
            storage: StorageSection::default(),
            twins: TwinsSection::default(),
            metadata: MetadataSection::default(),
            cluster: ClusterSection::default(),
            gym: GymSection::default(),
            render: RenderSection::default(),
            auth: AuthSection::default(),
            logging: LoggingSection::default(),
            stream: StreamSection::default(),
            engines: hanzo_twin_engines::EngineKind::ALL
                .into_iter()
                .map(|kind| (kind, EngineSettings::default()))
                .collect(),
            scheduler: SchedulerSection::default(),
            database: DatabaseSection::default(),
            timeseries: TimeseriesSection::default(),
            warnings: Vec::new(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "127.0.0.1".into(),
            port: 8082,
            workers: 0,
            max_body_bytes: 64 * 1024 * 1024,
            shutdown_timeout_s: 30,
            max_in_flight: hanzo_twin_actors::protocol::DEFAULT_MAX_IN_FLIGHT,
            tls: TlsSection::default(),
        }
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            enabled: true,
            host: "127.0.0.1".into(),
            port: 9090,
            path: "/metrics".into(),
        }
    }
}

impl Default for ScenesSection {
    fn default() -> Self {
        ScenesSection {
            root: PathBuf::from("configs/scenes"),
            max_upload_bytes: 256 * 1024 * 1024,
            reader_memory_bytes: 4 << 30,
        }
    }
}

impl Default for TwinsSection {
    fn default() -> Self {
        TwinsSection {
            checkpoint_interval_s: 5.0,
            checkpoint_min_interval_ms: 1000,
            max_restarts: 3,
            restart_window_s: 60,
            call_timeout_ms: 10_000,
            passivate_after_s: 300,
            record_hz: 30.0,
            record_seconds: 120.0,
        }
    }
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// A configuration problem, said so a person can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

impl NodeConfig {
    /// Loads the configuration: `explicit` if given (it must exist), else the
    /// default path if it exists, else the embedded defaults; then environment
    /// overrides from `env`.
    pub fn load(
        explicit: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let default_path = Path::new(DEFAULT_CONFIG_PATH);
        let file = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None if default_path.exists() => Some(default_path.to_path_buf()),
            None => None,
        };
        let mut value = serde_yaml_ng::to_value(NodeConfig::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // The spec's file names `auth.iam_url` and no mode: a key source
        // given without a mode means tokens are verified against it.
        let mut mode_given = env.iter().any(|(k, _)| k == "HANZO_TWIN_AUTH_MODE");
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let mut raw: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            mode_given |= !raw["auth"]["mode"].is_null();
            let parse_error = |e: serde_path_to_error::Error<serde_yaml_ng::Error>| {
                let field = e.path().to_string();
                let message = with_suggestion(e.into_inner().to_string());
                ConfigError::Parse {
                    path: path.clone(),
                    message: format!("field `{field}`: {message}"),
                }
            };
            let parsed: NodeConfig = if text.contains("${") {
                // Expanded in the parsed values, never in comments; the
                // errors then name the field, not the line.
                expand_vars(&mut raw, &mut Vec::new(), &env).map_err(|message| {
                    ConfigError::Parse {
                        path: path.clone(),
                        message,
                    }
                })?;
                serde_path_to_error::deserialize(raw).map_err(parse_error)?
            } else {
                // Parsed from the text, so errors carry its line numbers.
                let de = serde_yaml_ng::Deserializer::from_str(&text);
                serde_path_to_error::deserialize(de).map_err(parse_error)?
            };
            value =
                serde_yaml_ng::to_value(parsed).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        let warnings = apply_env(&mut value, env)?;
        let mut config: NodeConfig =
            serde_yaml_ng::from_value(value).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.warnings = warnings;
        let a = &config.auth;
        let keys_given = a.iam_url.is_some()
            || a.jwks_url.is_some()
            || a.jwks_file.is_some()
            || !a.public_keys.is_empty();
        if !mode_given && keys_given {
            config.auth.mode = AuthMode::Jwt;
        }
        if let Some(url) = config.database.url.clone().filter(|u| !u.is_empty()) {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Invalid(format!(
                    "database.url must be a PostgreSQL URL (postgres://…), got `{}`",
                    hanzo_twin_actors::definition::shortened(&url)
                )));
            }
            config.metadata.backend = MetadataBackend::Postgres;
            config.metadata.postgres.url = Some(url);
        }
        if let Some(url) = config.timeseries.url.as_deref().filter(|u| !u.is_empty())
            && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid(format!(
                "timeseries.url must be a PostgreSQL or TimescaleDB URL (postgres://…), got `{}`",
                hanzo_twin_actors::definition::shortened(url)
            )));
        }
        config.validate()?;
        Ok(config)
    }

    /// Applies `engines.*` to the engines built into this node; what does
    /// not apply here (an engine this build lacks) is a warning.
    pub fn apply_engines(&self, registry: &mut hanzo_twin_engines::EngineRegistry) -> Vec<String> {
        let mut warnings = Vec::new();
        for (kind, settings) in &self.engines {
            let key = format!("engines.{kind}");
            let built_in = registry.is_available(*kind);
            if !settings.enabled {
                registry.turn_off(*kind, &format!("{key}.enabled"));
                continue;
            }
            if let Some(max) = settings.max_instances {
                registry.cap(*kind, max, &format!("{key}.max_instances"));
            }
            let external = settings.binary.is_some()
                || settings.nucleus_url.is_some()
                || !settings.gpu_ids.is_empty()
                || settings.ros_distro.is_some();
            if external && !built_in {
                warnings.push(format!(
                    "{key} configures an engine this node does not have, so it is not used; GET /v1/engines says what running {kind} takes"
                ));
            } else if external {
                warnings.push(format!(
                    "{key}: binary, nucleus_url, gpu_ids and ros_distro are for engines run beside the node; {kind} is built into it, so they are not used"
                ));
            }
        }
        warnings
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, settings) in &self.engines {
            if settings.max_instances == Some(0) {
                return Err(ConfigError::Invalid(format!(
                    "engines.{kind}.max_instances must be at least 1 (set engines.{kind}.enabled: false to turn {kind} off)"
                )));
            }
        }
        let s = &self.scheduler;
        if !valid_dns_label(&s.namespace) {
            return Err(ConfigError::Invalid(format!(
                "scheduler.namespace `{}` must be a Kubernetes namespace name: 1 to 63 lowercase letters, digits or -, starting and ending with a letter or digit",
                hanzo_twin_actors::definition::shortened(&s.namespace)
            )));
        }
        if let Some(bad) = s.gpu_types.iter().find(|g| !valid_gpu_type(g)) {
            return Err(ConfigError::Invalid(format!(
                "scheduler.gpu_types: `{}` is not a GPU type; write <vendor>-<model>[-<memory>], vendor nvidia, amd or intel, e.g. nvidia-h100-80gb",
                hanzo_twin_actors::definition::shortened(bad)
            )));
        }
        if s.max_concurrent_jobs == 0 {
            return Err(ConfigError::Invalid(
                "scheduler.max_concurrent_jobs must be at least 1".into(),
            ));
        }
        if !(1..=64).contains(&self.render.workers) || self.render.max_queue == 0 {
            return Err(ConfigError::Invalid(
                "render.workers must be between 1 and 64, and render.max_queue at least 1".into(),
            ));
        }
        if let Some(address) = &s.ray_address
            && !valid_ray_address(address)
        {
            return Err(ConfigError::Invalid(format!(
                "scheduler.ray_address `{}` is not a Ray address; write the head's host:port (e.g. 10.0.0.5:6379) or ray://host:port for Ray Client",
                hanzo_twin_actors::definition::shortened(address)
            )));
        }
        let stream_tls = self
            .stream
            .tls
            .settings()
            .map_err(|e| ConfigError::Invalid(format!("stream.{e}")))?;
        if !self.stream.brokers.trim().is_empty() {
            hanzo_twin_actors::definition::check_kafka_broker_list(
                self.stream.brokers.trim(),
                !self.stream.private_network && stream_tls.is_none(),
            )
            .map_err(|e| ConfigError::Invalid(format!("stream.{e}")))?;
        }
        hanzo_twin_actors::definition::check_kafka_topic(&self.stream.topic_prefix)
            .map_err(|e| ConfigError::Invalid(format!("stream.topic_prefix: {e}")))?;
        let c = &self.cluster;
        if c.enabled() {
            if c.listen
                .as_deref()
                .is_none_or(|l| l.rsplit_once(':').is_none())
            {
                return Err(ConfigError::Invalid(
                    "cluster.listen (host:port) is required to join a cluster".into(),
                ));
            }
            if c.cookie.as_deref().is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid(
                    "cluster.cookie is required to form a cluster: every member shares it".into(),
                ));
            }
            if self.metadata.backend != MetadataBackend::Postgres {
                return Err(ConfigError::Invalid(
                    "a cluster needs shared definitions: set metadata.backend: postgres (with sled each node would keep its own, and twins could not move between nodes)".into(),
                ));
            }
            if self.storage.backend == StorageBackend::Local && self.storage.root.is_none() {
                return Err(ConfigError::Invalid(
                    "a cluster needs checkpoints every node can read: set storage.backend: s3, or storage.root to a folder every node shares (the default, <data_dir>/objects, is this node's alone, and a twin that moves would restart from its scene instead of its checkpoint)".into(),
                ));
            }
            if c.lease_ms < 300 {
                return Err(ConfigError::Invalid(
                    "cluster.lease_ms must be at least 300".into(),
                ));
            }
            if !(4096..=(15 << 20)).contains(&c.max_frame_bytes) {
                return Err(ConfigError::Invalid(
                    "cluster.max_frame_bytes must be between 4096 and 15728640 (ractor_cluster drops frames over 16 MiB)".into(),
                ));
            }
            if c.tls.enabled()
                && (c.tls.cert.is_none() || c.tls.key.is_none() || c.tls.ca.is_none())
            {
                return Err(ConfigError::Invalid(
                    "cluster.tls needs cert, key and ca together".into(),
                ));
            }
            if c.max_moves == 0 {
                return Err(ConfigError::Invalid(
                    "cluster.max_moves must be at least 1".into(),
                ));
            }
            if c.refresh_ms == 0 {
                return Err(ConfigError::Invalid(
                    "cluster.refresh_ms must be at least 1".into(),
                ));
            }
        }
        let m = &self.metadata;
        if m.backend == MetadataBackend::Postgres
            && m.postgres.url.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::Invalid(
                "metadata.postgres.url is required when metadata.backend is postgres".into(),
            ));
        }
        if !crate::store_pg::valid_schema(&m.postgres.schema) {
            return Err(ConfigError::Invalid(format!(
                "metadata.postgres.schema `{}` must be 1 to 63 lowercase letters, digits or _, not starting with a digit",
                m.postgres.schema
            )));
        }
        if m.postgres.pool_size == 0 || m.postgres.connect_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "metadata.postgres.pool_size and connect_timeout_s must be at least 1".into(),
            ));
        }
        let t = &self.twins;
        if !(t.checkpoint_interval_s.is_finite() && t.checkpoint_interval_s > 0.0) {
            return Err(ConfigError::Invalid(
                "twins.checkpoint_interval_s must be a number above 0".into(),
            ));
        }
        let recording_ok = t.record_hz.is_finite()
            && t.record_hz >= 0.0
            && t.record_seconds.is_finite()
            && t.record_seconds >= 0.0
            && t.record_hz * t.record_seconds <= 10_000_000.0;
        if !recording_ok {
            return Err(ConfigError::Invalid(
                "twins.record_hz and twins.record_seconds must be 0 or more, and keep at most 10 million frames"
                    .into(),
            ));
        }
        if t.call_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "twins.call_timeout_ms must be above 0".into(),
            ));
        }
        if !self.metrics.path.starts_with('/') {
            return Err(ConfigError::Invalid(
                "metrics.path must start with /".into(),
            ));
        }
        if self.scenes.reader_memory_bytes < (16 << 20) {
            return Err(ConfigError::Invalid(
                "scenes.reader_memory_bytes must be at least 16777216 (16 MiB)".into(),
            ));
        }
        if self.scenes.max_upload_bytes == 0 {
            return Err(ConfigError::Invalid(
                "scenes.max_upload_bytes must be above 0".into(),
            ));
        }
        let st = &self.storage;
        if st.backend == StorageBackend::S3 && st.access_key.is_some() != st.secret_key.is_some() {
            return Err(ConfigError::Invalid(
                "storage.access_key and storage.secret_key go together".into(),
            ));
        }
        for (key, bucket) in [
            ("scenes", &st.buckets.scenes),
            ("datasets", &st.buckets.datasets),
            ("checkpoints", &st.buckets.checkpoints),
        ] {
            let ok = (3..=63).contains(&bucket.len())
                && bucket
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "storage.buckets.{key} `{bucket}` is not a valid bucket name (3-63 lowercase letters, digits, `-` or `.`)"
                )));
            }
        }
        if self.server.tls.cert.is_some() != self.server.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "server.tls.cert and server.tls.key go together: set both to serve TLS, or neither"
                    .into(),
            ));
        }
        let auth = &self.auth;
        if !auth.verify_tokens {
            return Err(ConfigError::Invalid(
                "auth.verify_tokens: false is not supported: every endpoint needs a token. For local work keep auth.mode: dev, which signs one for you".into(),
            ));
        }
        if auth.mode == AuthMode::Jwt
            && auth.public_keys.is_empty()
            && auth.jwks_file.is_none()
            && auth.jwks_url.is_none()
            && auth.iam_url.is_none()
        {
            return Err(ConfigError::Invalid(
                "auth.mode is jwt but no key is configured: set auth.iam_url, auth.public_keys, auth.jwks_file or auth.jwks_url".into(),
            ));
        }
        if auth.iam_url.is_some() && auth.issuer != AuthSection::default().issuer {
            return Err(ConfigError::Invalid(
                "auth.iam_url publishes the issuer; leave auth.issuer unset when it is given"
                    .into(),
            ));
        }
        if auth.issuer.is_empty() || auth.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "auth.issuer and auth.audience must not be empty".into(),
            ));
        }
        if auth.mode == AuthMode::Jwt && auth.jwks_url.is_some() && auth.jwks_refresh_s == 0 {
            return Err(ConfigError::Invalid(
                "auth.jwks_refresh_s must be above 0".into(),
            ));
        }
        if auth.rate_limit.control_per_second > 0 && auth.rate_limit.control_burst == 0 {
            return Err(ConfigError::Invalid(
                "auth.rate_limit.control_burst must be at least 1 when auth.rate_limit.control_per_second is set".into(),
            ));
        }
        if self.server.max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "server.max_in_flight must be at least 1".into(),
            ));
        }
        if self.server.shutdown_timeout_s == 0 {
            return Err(ConfigError::Invalid(
                "server.shutdown_timeout_s must be at least 1".into(),
            ));
        }
        if auth.rate_limit.per_second > 0 && auth.rate_limit.burst == 0 {
            return Err(ConfigError::Invalid(
                "auth.rate_limit.burst must be at least 1 when auth.rate_limit.per_second is set"
                    .into(),
            ));
        }
        if hanzo_twin_actors::Name::new(&auth.dev.organization).is_err() {
            return Err(ConfigError::Invalid(format!(
                "auth.dev.organization `{}` is not a valid organization name",
                auth.dev.organization
            )));
        }
        if auth.mode == AuthMode::Dev
            && !hanzo_twin_api::auth::is_loopback(&self.server.host)
            && !auth.dev.allow_non_loopback
        {
            return Err(ConfigError::Invalid(format!(
                "auth.mode is dev, which mints an admin token, but the API would listen on {} beyond loopback. \
                 Use auth.mode: jwt with your identity provider's keys, listen on 127.0.0.1, \
                 or set auth.dev.allow_non_loopback: true to force it",
                self.server.host
            )));
        }
        if auth.mode == AuthMode::Dev && auth.dev.token_ttl_s == 0 {
            return Err(ConfigError::Invalid(
                "auth.dev.token_ttl_s must be above 0".into(),
            ));
        }
        if self.metrics.enabled
            && self.metrics.port == self.server.port
            && self.metrics.host == self.server.host
        {
            return Err(ConfigError::Invalid(
                "metrics.port and server.port must differ".into(),
            ));
        }
        Ok(())
    }
}

/// Every leaf of the configuration as (`SERVER_PORT`, path) pairs. Overrides are
/// matched against the known keys, so `STORAGE_ACCESS_KEY`-style names with
/// underscores inside keys stay unambiguous.
fn leaf_paths(value: &serde_yaml_ng::Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        serde_yaml_ng::Value::Mapping(m) => {
            for (k, v) in m {
                if let Some(k) = k.as_str() {
                    prefix.push(k.to_string());
                    leaf_paths(v, prefix, out);
                    prefix.pop();
                }
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn valid_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `host:port` or `ray://host:port`, the port a number.
fn valid_ray_address(s: &str) -> bool {
    let rest = s.strip_prefix("ray://").unwrap_or(s);
    match rest.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', ' ', '@'])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// `nvidia-a100-80gb`: a known vendor, then lowercase words.
fn valid_gpu_type(s: &str) -> bool {
    let mut parts = s.split('-');
    matches!(parts.next(), Some("nvidia" | "amd" | "intel"))
        && parts.clone().next().is_some()
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// serde's "unknown field `prot`, expected one of `host`, `port`…" with
/// "did you mean `port`?" when one of the keys is close.
fn with_suggestion(message: String) -> String {
    let Some((_, rest)) = message.split_once("unknown field `") else {
        return message;
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message;
    };
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|key| (strsim::jaro_winkler(unknown, key), key))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, key)) => format!("{message} (did you mean `{key}`?)"),
        None => message,
    }
}

/// `HANZO_TWIN_` variables that are not configuration keys: the CLI's, the
/// engines' and gym's own, and where the test suite finds its tools.
const NOT_CONFIG_VARS: [&str; 9] = [
    "API",
    "TOKEN",
    "TOKEN_FILE",
    "CA_CERT",
    "CONFIG",
    "ANT_XML",
    "PYBULLET_PYTHON",
    "S3S_FS",
    "PLAYWRIGHT",
];

/// Applies `HANZO_TWIN_*` overrides; returns a warning for each such
/// variable that names no key (a typo would otherwise pass unseen).
fn apply_env(
    value: &mut serde_yaml_ng::Value,
    env: Vec<(String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut leaves = Vec::new();
    leaf_paths(value, &mut Vec::new(), &mut leaves);
    let mut warnings = Vec::new();
    for (var, raw) in env {
        let Some(name) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some(path) = leaves
            .iter()
            .find(|p| p.join("_").to_ascii_uppercase() == name)
        else {
            // Test and bench settings are the test suite's.
            if !(NOT_CONFIG_VARS.contains(&name) || name.starts_with("TEST_")) {
                warnings.push(format!(
                    "environment variable {var} is not a configuration key and is ignored \
                     (keys are written as HANZO_TWIN_<SECTION>_<KEY>, e.g. HANZO_TWIN_SERVER_PORT)"
                ));
            }
            continue;
        };
        let parsed: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&raw).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.to_string(),
            })?;
        // `~`, `null` and empty strings clear optional settings like node.id.
        let mut slot = &mut *value;
        for key in path {
            slot = &mut slot[key.as_str()];
        }
        *slot = parsed;
        // Check the value's type now, so the error names the variable.
        serde_yaml_ng::from_value::<NodeConfig>(value.clone()).map_err(|e| ConfigError::Env {
            var: var.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(warnings)
}

/// Replaces `${NAME}` in the file's string values with the variable's value
/// from `env`; `$${` stays a literal `${`. A value that is only a reference
/// takes the variable's YAML type, so `port: "${PORT}"` is a number.
fn expand_vars(
    value: &mut serde_yaml_ng::Value,
    path: &mut Vec<String>,
    env: &[(String, String)],
) -> Result<(), String> {
    match value {
        serde_yaml_ng::Value::Mapping(m) => {
            for (k, v) in m.iter_mut() {
                path.push(k.as_str().unwrap_or("?").to_string());
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        serde_yaml_ng::Value::Sequence(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_vars(v, path, env)?;
                path.pop();
            }
        }
        serde_yaml_ng::Value::String(text) if text.contains("${") => {
            let whole =
                text.starts_with("${") && text.ends_with('}') && text.matches("${").count() == 1;
            let expanded = expand_text(text, env).map_err(|var| {
                format!(
                    "field `{}`: environment variable {var} is not set (the file refers to it as ${{{var}}})",
                    path.join(".")
                )
            })?;
            *value = if whole {
                serde_yaml_ng::from_str(&expanded).unwrap_or(serde_yaml_ng::Value::String(expanded))
            } else {
                serde_yaml_ng::Value::String(expanded)
            };
        }
        _ => {}
    }
    Ok(())
}

/// `text` with each `${NAME}` replaced; the name of the first unset one.
fn expand_text(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if rest[..at].ends_with('$') {
            // `$${` is a literal `${`.
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let Some(end) = rest[at..].find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &rest[at + 2..at + end];
        match env.iter().find(|(k, _)| k == name) {
            Some((_, v)) => out.push_str(v),
            None => return Err(name.to_string()),
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests;
