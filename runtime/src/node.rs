//! A node: the root supervisor, the twin host under it, storage, and the HTTP
//! servers. `Node::start` is also how an agent embeds a node in its own process.

use crate::auth::DevToken;
use crate::config::NodeConfig;
use crate::objects::Buckets;
use crate::scenes::SceneLibrary;
use crate::store::{ObjectCheckpointStore, SledTwinStore};
use crate::telemetry;
use anyhow::Context;
use hanzo_twin_actors::jobs::{JobsArgs, JobsConfig, JobsHost, JobsMsg, JobsNode, LogFollowers};
use hanzo_twin_actors::{
    HostArgs, HostConfig, HostMsg, Lifecycle, SceneReader, StartOptions, TwinDefinition,
    TwinFilter, TwinHost, TwinNode, in_process_scene_reader,
};
use hanzo_twin_api::{ApiConfig, ApiState};
use hanzo_twin_cluster::Membership;
use hanzo_twin_engines::EngineRegistry;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The root supervisor of a node. It restarts the twin host, the jobs host
/// or the render pool if one fails (the new host reloads records from the
/// store and resumes running twins, or jobs), and gives up — stopping the node — past a
/// restart limit.
struct NodeSupervisor;

struct SupervisorArgs {
    host_args: HostArgs,
    handle_tx: tokio::sync::oneshot::Sender<ActorRef<HostMsg>>,
    jobs_args: JobsArgs,
    jobs_tx: tokio::sync::oneshot::Sender<ActorRef<JobsMsg>>,
}

struct SupervisorState {
    render: ActorRef<hanzo_twin_actors::render::RenderPoolMsg>,
    host_args: HostArgs,
    host: ActorRef<HostMsg>,
    /// The node's handle, kept pointing at the live host across restarts.
    twins: Option<TwinNode>,
    jobs_args: JobsArgs,
    jobs_host: ActorRef<JobsMsg>,
    jobs: Option<JobsNode>,
    restarts: VecDeque<Instant>,
}

enum SupervisorMsg {
    /// The handles clients use; the supervisor swaps in restarted hosts.
    Attach(TwinNode, JobsNode),
}

/// Local only: never sent between nodes.
impl ractor::Message for SupervisorMsg {}

const HOST_NAME: &str = "twins";
const JOBS_NAME: &str = "jobs";
const HOST_MAX_RESTARTS: usize = 5;
const HOST_RESTART_WINDOW: Duration = Duration::from_secs(60);

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        // Twins hand frames to the pool, so it starts first.
        let render = args.host_args.render.start(Some(myself.get_cell())).await?;
        let (host, _) = Actor::spawn_linked(
            Some(HOST_NAME.into()),
            TwinHost,
            args.host_args.clone(),
            myself.get_cell(),
        )
        .await?;
        let _ = args.handle_tx.send(host.clone());
        let (jobs_host, _) = Actor::spawn_linked(
            Some(JOBS_NAME.into()),
            JobsHost,
            args.jobs_args.clone(),
            myself.get_cell(),
        )
        .await?;
        let _ = args.jobs_tx.send(jobs_host.clone());
        Ok(SupervisorState {
            render,
            host_args: args.host_args,
            host,
            twins: None,
            jobs_args: args.jobs_args,
            jobs_host,
            jobs: None,
            restarts: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Attach(twins, jobs) => {
                // A host may have been restarted since the handles were made.
                twins.replace_host(state.host.clone());
                // Synthetic-data jobs reach twins through the same handle.
                let _ = state.jobs_args.twins.set(twins.clone());
                state.twins = Some(twins);
                jobs.replace_host(state.jobs_host.clone());
                state.jobs = Some(jobs);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // A host only stops when the node shuts down, which stops this
        // supervisor first; anything else is a failure.
        let Some((actor, reason)) = hanzo_twin_actors::children::ended(&event) else {
            return Ok(());
        };
        let jobs_failed = actor == state.jobs_host.get_id();
        let render_failed = actor == state.render.get_id();
        if !jobs_failed && !render_failed && actor != state.host.get_id() {
            return Ok(());
        }
        let which = if jobs_failed {
            "jobs host"
        } else if render_failed {
            "render pool"
        } else {
            "twin host"
        };
        tracing::error!(%reason, "{which} failed");
        let now = Instant::now();
        state
            .restarts
            .retain(|t| now.duration_since(*t) < HOST_RESTART_WINDOW);
        state.restarts.push_back(now);
        if state.restarts.len() > HOST_MAX_RESTARTS {
            myself.stop(Some(format!("{which} failed too often: {reason}")));
            return Ok(());
        }
        if render_failed {
            // The handle twins hold now points at the new pool.
            state.render = state
                .host_args
                .render
                .start(Some(myself.get_cell()))
                .await?;
            return Ok(());
        }
        if jobs_failed {
            let (jobs_host, _) = Actor::spawn_linked(
                Some(JOBS_NAME.into()),
                JobsHost,
                state.jobs_args.clone(),
                myself.get_cell(),
            )
            .await?;
            if let Some(jobs) = &state.jobs {
                jobs.replace_host(jobs_host.clone());
            }
            state.jobs_host = jobs_host;
            return Ok(());
        }
        let (host, _) = Actor::spawn_linked(
            Some(HOST_NAME.into()),
            TwinHost,
            state.host_args.clone(),
            myself.get_cell(),
        )
        .await?;
        if let Some(twins) = &state.twins {
            twins.replace_host(host.clone());
        }
        state.host = host;
        Ok(())
    }
}

/// The node's HTTP API, ready to serve.
pub struct Api {
    pub router: axum::Router,
    /// The admin token minted in development mode.
    pub dev_token: Option<DevToken>,
}

/// Where twin and job records live: the node's sled store, or PostgreSQL
/// shared with other nodes (`metadata.backend`).
async fn metadata_stores(
    config: &NodeConfig,
    sled: &SledTwinStore,
    node_id: &str,
) -> anyhow::Result<(
    Arc<dyn hanzo_twin_actors::TwinStore>,
    Arc<dyn hanzo_twin_actors::jobs::JobStore>,
)> {
    use crate::config::MetadataBackend;
    let pg = &config.metadata.postgres;
    Ok(match config.metadata.backend {
        MetadataBackend::Sled => (Arc::new(sled.clone()), Arc::new(sled.job_store()?)),
        MetadataBackend::Postgres => {
            let url = pg.url.as_deref().unwrap_or_default();
            let store = crate::store_pg::PgTwinStore::connect(
                url,
                &pg.schema,
                pg.pool_size,
                Duration::from_secs(pg.connect_timeout_s),
                node_id,
            )
            .await
            .with_context(|| "cannot use the PostgreSQL metadata store (metadata.postgres.url)")?;
            tracing::info!(schema = %pg.schema, "twin definitions and jobs in PostgreSQL");
            let jobs = store.job_store();
            (Arc::new(store), Arc::new(jobs))
        }
    })
}

/// A running node.
pub struct Node {
    config: NodeConfig,
    store: SledTwinStore,
    scenes: Arc<SceneLibrary>,
    node_id: String,
    twins: TwinNode,
    jobs: JobsNode,
    /// Synthetic datasets (the datasets bucket).
    datasets: Arc<dyn hanzo_twin_actors::jobs::DatasetStore>,
    engines: EngineRegistry,
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: tokio::task::JoinHandle<()>,
    ready: Arc<AtomicBool>,
    /// The live members of this node's cluster (itself alone unless clustered).
    membership: Membership,
    mesh: Option<hanzo_twin_cluster::mesh::Mesh>,
}

impl Node {
    /// Opens the node's storage, starts its supervision tree and resumes twins
    /// that were running when it last stopped. No server is started: embedded
    /// agents use [`Node::twins`]; [`Node::serve`] adds the HTTP API.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        Node::start_with(config, in_process_scene_reader()).await
    }

    /// Starts a node that reads scenes with `scene_reader` (the daemon reads them
    /// in a child process; see [`crate::scene_reader`]).
    pub async fn start_with(config: NodeConfig, scene_reader: SceneReader) -> anyhow::Result<Node> {
        // Install the recorder before any twin runs, so no step goes uncounted.
        telemetry::metrics_handle();
        // rustls (API TLS, JWKS fetches) runs on ring; an Err means a provider
        // is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data folder {}",
                config.data_dir.display()
            )
        })?;
        let store = SledTwinStore::open(&config.data_dir.join("store"))?;
        let buckets = Buckets::open(&config)?;
        let checkpoints = ObjectCheckpointStore::new(buckets.checkpoints.clone());
        let mut engines = EngineRegistry::with_builtin();
        for warning in config.apply_engines(&mut engines) {
            tracing::warn!("{warning}");
        }
        let scenes = Arc::new(SceneLibrary::new(
            buckets.scenes.clone(),
            buckets.scenes_signer.clone(),
            scene_reader.clone(),
            engines.clone(),
            config.data_dir.join("scenes"),
        ));
        let node_id = match &config.node.id {
            Some(id) => id.clone(),
            None => match store.meta("node_id")? {
                Some(id) => id,
                None => {
                    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    store.set_meta("node_id", &id)?;
                    id
                }
            },
        };
        let call_timeout = Duration::from_millis(config.twins.call_timeout_ms);
        let api_addr = format!("{}:{}", config.server.host, config.server.port);
        // Placement starts as this node alone; the mesh adds the others.
        let membership = Membership::single(node_id.clone(), api_addr)
            .with_cluster_addr(config.cluster.listen.clone().unwrap_or_default());
        let (twin_store, job_store) = metadata_stores(&config, &store, &node_id).await?;
        let job_logs = LogFollowers::new(config.data_dir.join("jobs"));
        let artifacts: Arc<dyn hanzo_twin_actors::jobs::ArtifactStore> = Arc::new(
            crate::store::ObjectArtifactStore::new(buckets.checkpoints.clone()),
        );
        let datasets: Arc<dyn hanzo_twin_actors::jobs::DatasetStore> = Arc::new(
            crate::store::ObjectDatasetStore::new(buckets.datasets.clone()),
        );
        let render = hanzo_twin_actors::render::RenderWorkers::new(
            hanzo_twin_actors::render::RenderPoolArgs {
                workers: config.render.workers,
                max_queue: config.render.max_queue,
            },
        );
        // The running jobs, kept by the jobs host and drawn by the twin host.
        let jobs_board = hanzo_twin_actors::inspector::JobsBoard::default();
        let jobs_args = JobsArgs {
            config: Arc::new(JobsConfig {
                node_id: node_id.clone(),
                python: config.scheduler.python.clone(),
                max_concurrent: config.scheduler.max_concurrent_jobs as usize,
                api_url: format!(
                    "{}://{}",
                    if config.server.tls.cert.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                    client_addr(&config.server.host, config.server.port)
                ),
                cancel_grace: Duration::from_secs(1),
                ray_address: config.scheduler.ray_address.clone(),
            }),
            store: job_store.clone(),
            artifacts: artifacts.clone(),
            logs: job_logs.clone(),
            scenes: hanzo_twin_actors::SceneLoader::new(
                config.scenes.root.clone(),
                engines.clone(),
                scene_reader.clone(),
                Some(scenes.fetcher()),
            ),
            engines: engines.clone(),
            twins: Arc::default(),
            render: render.clone(),
            datasets: datasets.clone(),
            timeseries: config
                .timeseries
                .url
                .clone()
                .filter(|u| !u.is_empty())
                .map(|url| {
                    Arc::new(crate::timeseries::NodeTimeseries { url })
                        as Arc<dyn hanzo_twin_actors::jobs::Timeseries>
                }),
            board: jobs_board.clone(),
        };
        let routes = Arc::new(hanzo_twin_actors::RouteCache::default());
        let host_args = HostArgs {
            config: HostConfig {
                node_id: node_id.clone(),
                scenes_root: config.scenes.root.clone(),
                checkpoint_interval_s: config.twins.checkpoint_interval_s,
                checkpoint_min_interval: Duration::from_millis(
                    config.twins.checkpoint_min_interval_ms,
                ),
                max_restarts: config.twins.max_restarts,
                restart_window: Duration::from_secs(config.twins.restart_window_s),
                call_timeout,
                passivate_after: (config.twins.passivate_after_s > 0)
                    .then(|| Duration::from_secs(config.twins.passivate_after_s)),
                record_hz: config.twins.record_hz,
                record_seconds: config.twins.record_seconds,
                ant_xml: config.gym.ant_xml.clone().or_else(|| {
                    std::env::var_os("HANZO_TWIN_ANT_XML").map(std::path::PathBuf::from)
                }),
                gym_idle_timeout: (config.gym.idle_timeout_s > 0)
                    .then(|| Duration::from_secs(config.gym.idle_timeout_s)),
                lease: Duration::from_millis(config.cluster.lease_ms),
                stream: Arc::new(config.stream.settings(&config.data_dir.join("recordings"))),
            },
            engines: engines.clone(),
            store: twin_store.clone(),
            checkpoints: Arc::new(checkpoints),
            scene_reader,
            scene_fetcher: Some(scenes.fetcher()),
            placement: config
                .cluster
                .enabled()
                .then(|| Arc::new(membership.clone()) as Arc<dyn hanzo_twin_actors::Placement>),
            routes: routes.clone(),
            render: render.clone(),
            jobs: jobs_board.clone(),
        };
        let (handle_tx, handle_rx) = tokio::sync::oneshot::channel();
        let (jobs_tx, jobs_rx) = tokio::sync::oneshot::channel();
        let (supervisor, supervisor_done) = Actor::spawn(
            Some(format!("node:{node_id}")),
            NodeSupervisor,
            SupervisorArgs {
                host_args,
                handle_tx,
                jobs_args,
                jobs_tx,
            },
        )
        .await
        .context("the node's supervision tree failed to start")?;
        let host = handle_rx.await.context("the twin host did not report in")?;
        // Clients wait a little longer than the host waits for a twin, so the
        // host's own timeout error reaches them rather than a generic one.
        let twins = TwinNode::new(host, routes, call_timeout + Duration::from_secs(2))
            .with_max_in_flight(config.server.max_in_flight);
        // Infrastructure twins of a live cluster: read when created.
        #[cfg(feature = "kubernetes")]
        let twins = twins.with_live_topology(Arc::new(crate::kube_topology::KubeTopology));
        let jobs_host = jobs_rx.await.context("the jobs host did not report in")?;
        let jobs = JobsNode::new(jobs_host, job_store, artifacts, job_logs);
        supervisor
            .cast(SupervisorMsg::Attach(twins.clone(), jobs.clone()))
            .context("the node's supervisor stopped while starting")?;
        let mesh = if config.cluster.enabled() {
            let c = &config.cluster;
            let tls = match (&c.tls.cert, &c.tls.key, &c.tls.ca) {
                (Some(cert), Some(key), Some(ca)) => {
                    Some(hanzo_twin_cluster::tls::MeshTls::from_pem_files(
                        cert,
                        key,
                        ca,
                        &c.tls.server_name,
                    )?)
                }
                _ => None,
            };
            let mesh = hanzo_twin_cluster::mesh::Mesh::start(
                hanzo_twin_cluster::mesh::MeshConfig {
                    listen: c.listen.clone().unwrap_or_default(),
                    cookie: c.cookie.clone().unwrap_or_default(),
                    seeds: c.seeds.clone(),
                    refresh: Duration::from_millis(c.refresh_ms),
                    lease: Duration::from_millis(c.lease_ms),
                    max_moves: c.max_moves,
                    max_frame: c.max_frame_bytes,
                    tls,
                },
                membership.clone(),
                twins.clone(),
                jobs.clone(),
                twin_store,
            )
            .await
            .context("cannot join the cluster")?;
            tracing::info!(listen = ?c.listen, seeds = ?c.seeds, "cluster server started");
            Some(mesh)
        } else {
            None
        };
        Ok(Node {
            config,
            store,
            scenes,
            node_id,
            twins,
            jobs,
            datasets,
            engines,
            supervisor,
            supervisor_done,
            ready: Arc::new(AtomicBool::new(true)),
            membership,
            mesh,
        })
    }

    pub fn id(&self) -> &str {
        &self.node_id
    }

    /// Typed access to this node's twins: the embedded-agent SDK.
    pub fn twins(&self) -> TwinNode {
        self.twins.clone()
    }

    /// This node's jobs.
    pub fn jobs(&self) -> JobsNode {
        self.jobs.clone()
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The live members of this node's cluster, as it sees them.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Creates the twin in `definition` unless one of that name exists in its
    /// organization, and starts it unless running. Used to boot a node with
    /// sample twins.
    pub async fn ensure_running(&self, definition: TwinDefinition) -> anyhow::Result<String> {
        let filter = TwinFilter {
            organization: Some(definition.organization().to_string()),
            ..Default::default()
        };
        let existing = self
            .twins
            .list(filter)
            .await?
            .into_iter()
            .find(|r| r.definition.name == definition.name);
        let record = match existing {
            Some(r) => r,
            None => self.twins.create(definition).await?,
        };
        let id = record.id.to_string();
        if record.status.state != Lifecycle::Running {
            self.twins.start(&id, StartOptions::default()).await?;
        }
        Ok(id)
    }

    fn scheme(&self) -> &'static str {
        if self.config.server.tls.cert.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The API's base URL, as a client on this machine reaches it.
    pub fn api_url(&self) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            self.config.server.host,
            self.config.server.port
        )
    }

    /// Builds the API: loads the token keys (or, in development mode, signs the
    /// local admin token) and the audit log.
    pub async fn api(&self) -> anyhow::Result<Api> {
        let (auth, dev_token) = crate::auth::build(&self.config, &self.store).await?;
        let state = ApiState::from(hanzo_twin_api::ApiShared {
            node: self.twins.clone(),
            engines: self.engines.clone(),
            membership: self.membership.clone(),
            ready: self.ready.clone(),
            auth,
            scenes: Some(self.scenes.clone()),
            jobs: self.jobs.clone(),
            datasets: Some(self.datasets.clone()),
        });
        let config = ApiConfig {
            max_body_bytes: self.config.server.max_body_bytes,
            max_scene_upload_bytes: self.config.scenes.max_upload_bytes,
        };
        Ok(Api {
            router: hanzo_twin_api::router(state, &config),
            dev_token,
        })
    }

    /// Builds the API and serves it; see [`Node::serve_api`].
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let api = self.api().await?;
        self.serve_api(api, shutdown).await
    }

    /// Serves `api` (over TLS when a certificate is configured) and metrics,
    /// when enabled, until `shutdown` resolves; then stops the node cleanly:
    /// twins checkpoint and resume at the next start.
    pub async fn serve_api(
        self,
        api: Api,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let api_addr = format!("{}:{}", self.config.server.host, self.config.server.port);
        let api_listener = tokio::net::TcpListener::bind(&api_addr)
            .await
            .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
        let metrics_listener = if self.config.metrics.enabled {
            let addr = format!("{}:{}", self.config.metrics.host, self.config.metrics.port);
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            Some((addr, listener))
        } else {
            None
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        if let Some((addr, listener)) = metrics_listener {
            let router = telemetry::metrics_router(&self.config.metrics.path);
            let rx = stop_rx.clone();
            tracing::info!("metrics on http://{addr}{}", self.config.metrics.path);
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(wait_stop(rx))
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, %addr, "metrics server failed");
                }
            });
        }
        tracing::info!(node = %self.node_id, "API on {}", self.api_url());
        if let Some(token) = &api.dev_token {
            eprintln!(
                "{}",
                crate::auth::dev_token_instructions(token, &self.api_url())
            );
        }
        let deadline = Duration::from_secs(self.config.server.shutdown_timeout_s);
        let serving = async {
            match (&self.config.server.tls.cert, &self.config.server.tls.key) {
                (Some(cert), Some(key)) => {
                    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                        .await
                        .with_context(|| {
                            format!(
                                "cannot load the TLS certificate {} and key {}",
                                cert.display(),
                                key.display()
                            )
                        })?;
                    let handle = axum_server::Handle::new();
                    let h = handle.clone();
                    let rx = stop_rx.clone();
                    tokio::spawn(async move {
                        wait_stop(rx).await;
                        h.graceful_shutdown(Some(deadline / 2));
                    });
                    let listener = api_listener
                        .into_std()
                        .context("cannot hand the API socket to the TLS server")?;
                    axum_server::from_tcp_rustls(listener, tls)
                        .context("cannot start the TLS server")?
                        .handle(handle)
                        .serve(api.router.into_make_service())
                        .await
                        .map_err(anyhow::Error::from)
                }
                _ => axum::serve(api_listener, api.router)
                    .with_graceful_shutdown(wait_stop(stop_rx.clone()))
                    .await
                    .map_err(anyhow::Error::from),
            }
        };
        // Open requests and streams (the inspector's never end by themselves)
        // get half the shutdown time once the signal came; then they are cut.
        let drained = async {
            wait_stop(stop_rx.clone()).await;
            tokio::time::sleep(deadline / 2).await;
        };
        let served = tokio::select! {
            served = serving => served,
            () = drained => {
                tracing::warn!(
                    "open requests and streams did not end within {} s of the shutdown signal; closing them",
                    (deadline / 2).as_secs_f64()
                );
                Ok(())
            }
        };
        self.ready.store(false, Ordering::Release);
        self.shutdown_within(deadline / 2).await;
        served.context("the API server failed")
    }

    /// Stops every twin with a final checkpoint, then the supervision tree.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(60)).await
    }

    /// [`Node::shutdown`], giving up on twins that have not stopped within
    /// `limit` (their last checkpoints stand; a node that must go, goes).
    pub async fn shutdown_within(mut self, limit: Duration) {
        self.ready.store(false, Ordering::Release);
        // Leave the cluster first: peers see this node go at once. Twins
        // stop here with a final checkpoint and are taken over by the others
        // when this node's lease runs out.
        if let Some(mesh) = self.mesh.take() {
            self.twins.detach_cluster();
            mesh.stop();
        }
        let started = Instant::now();
        if let Err(e) = self.twins.with_timeout(limit).shutdown().await {
            tracing::error!(error = %e, "twins did not all stop cleanly");
        }
        self.supervisor.stop(Some("node shutdown".into()));
        let left = limit
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        if tokio::time::timeout(left, self.supervisor_done)
            .await
            .is_err()
        {
            tracing::error!("the supervision tree did not stop in time; leaving it");
        }
    }
}

/// `host:port` as a client on this machine reaches a server listening on
/// `host`: a wildcard address is reached on loopback.
fn client_addr(host: &str, port: u16) -> String {
    match host {
        "0.0.0.0" | "" => format!("127.0.0.1:{port}"),
        "::" | "[::]" => format!("[::1]:{port}"),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}
