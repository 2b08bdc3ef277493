//! `TwinNode`: typed, async access to a node's twins through actor messages. The
//! HTTP API is built on it, and an embedded agent uses it directly — no HTTP in
//! between.

use crate::definition::Name;
use crate::definition::TwinDefinition;
use crate::direct::{DirectRoute, RemoteViews, RouteCache, Watcher};
use crate::error::TwinError;
use crate::gym::BatchMsg;
use crate::host::{HostMsg, LifecycleMsg, Rebalanced};
use crate::protocol::{
    Admission, Fault, ForkOptions, JointCommandEntry, LEAST_LOADED, Reply, Scope, StartOptions,
    StepReport, SyncStatus, TwinFilter, TwinMsg, TwinOp, TwinOpReply, TwinRef, TwinRuntimeInfo,
    TwinSnapshot,
};
use crate::record::{Clock, TwinId, TwinRecord};
use crate::remote::{self, ClusterLink, TwinReply, TwinRequest};
use hanzo_twin_engines::{JointCommand, Observation, SimState};
use ractor::ActorRef;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How long a cross-engine comparison may run before the caller gives up.
pub const COMPARE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// How long building a batch of RL environments may take.
pub const GYM_CREATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A handle on a node's twin host. Cheap to clone; every call has a timeout.
/// When the node's supervisor restarts the host, it swaps the new one in here,
/// so handles stay valid.
///
/// A handle sees every twin on the node; [`TwinNode::scoped`] narrows it to one
/// organization, which the host then enforces on every request.
///
/// In a cluster ([`TwinNode::attach_cluster`]) a request for a twin goes to the
/// node that owns it, wherever the handle is: the same calls drive twins on
/// this node and on every other. A client-only handle
/// ([`TwinNode::client_only`]) hosts no twins and sends every request away.
#[derive(Clone)]
pub struct TwinNode {
    host: Arc<RwLock<Option<ActorRef<HostMsg>>>>,
    link: Arc<RwLock<Option<Arc<dyn ClusterLink>>>>,
    /// Running twins' actors, resolved once ([`crate::direct`]).
    routes: Arc<RouteCache>,
    /// State reads of twins on other nodes ([`crate::direct::RemoteViews`]).
    remote_views: Arc<RemoteViews>,
    timeout: Duration,
    scope: Scope,
    /// Bounds the requests in flight through this handle and its clones.
    admission: Admission,
    /// Reads live clusters for infrastructure twins built from one.
    live_topology: Option<Arc<dyn crate::live_topology::LiveTopology>>,
}

/// Unpacks the one reply shape a request can get.
macro_rules! expect_reply {
    ($result:expr, $pattern:pat => $value:expr) => {
        match $result? {
            ($pattern, _) => Ok($value),
            (other, _) => Err(unexpected(other)),
        }
    };
}

fn unexpected_op(reply: TwinOpReply) -> TwinError {
    TwinError::Storage(format!(
        "a twin answered with an unexpected reply: {reply:?}"
    ))
}

fn unexpected(reply: TwinReply) -> TwinError {
    TwinError::Storage(format!(
        "a node answered with an unexpected reply: {reply:?}"
    ))
}

impl TwinNode {
    /// A handle on `host`, sharing `routes` with it (see [`crate::HostArgs`]).
    pub fn new(host: ActorRef<HostMsg>, routes: Arc<RouteCache>, timeout: Duration) -> TwinNode {
        TwinNode {
            host: Arc::new(RwLock::new(Some(host))),
            link: Arc::new(RwLock::new(None)),
            routes,
            remote_views: Arc::default(),
            timeout,
            scope: Scope::Node,
            admission: Admission::default(),
            live_topology: None,
        }
    }

    /// A handle that hosts no twins: every request goes to the cluster
    /// through `link`.
    pub fn client_only(link: Arc<dyn ClusterLink>, timeout: Duration) -> TwinNode {
        TwinNode {
            host: Arc::new(RwLock::new(None)),
            link: Arc::new(RwLock::new(Some(link))),
            routes: Arc::default(),
            remote_views: Arc::default(),
            timeout,
            scope: Scope::Node,
            admission: Admission::default(),
            live_topology: None,
        }
    }

    /// The same node admitting at most `limit` requests in flight (this
    /// handle and its clones together); past it requests are refused with
    /// [`TwinError::Overloaded`].
    pub fn with_max_in_flight(&self, limit: usize) -> TwinNode {
        TwinNode {
            admission: Admission::new(limit),
            ..self.clone()
        }
    }

    /// The same node reading live clusters with `reader` for
    /// infrastructure twins whose topology is one (`topology.source:
    /// kubernetes`), when they are created or their topology is written.
    pub fn with_live_topology(
        &self,
        reader: Arc<dyn crate::live_topology::LiveTopology>,
    ) -> TwinNode {
        TwinNode {
            live_topology: Some(reader),
            ..self.clone()
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.admission.in_flight()
    }

    /// Routes requests (of this handle and its clones) through `link` from now
    /// on.
    pub fn attach_cluster(&self, link: Arc<dyn ClusterLink>) {
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = Some(link);
    }

    /// Back to this node alone.
    pub fn detach_cluster(&self) {
        *self.link.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn link(&self) -> Option<Arc<dyn ClusterLink>> {
        self.link.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The same node with another per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> TwinNode {
        TwinNode {
            timeout,
            ..self.clone()
        }
    }

    /// The same node as `organization` sees it: its twins only; any other reads
    /// as not found, and creating twins elsewhere is refused.
    pub fn scoped(&self, organization: Name) -> TwinNode {
        TwinNode {
            scope: Scope::Organization(organization),
            ..self.clone()
        }
    }

    /// The same handle with another scope.
    pub fn with_scope(&self, scope: Scope) -> TwinNode {
        TwinNode {
            scope,
            ..self.clone()
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    fn twin_ref(&self, twin: &str) -> TwinRef {
        TwinRef {
            key: twin.to_string(),
            scope: self.scope.clone(),
        }
    }

    /// The local host; `Err` for a client-only handle.
    fn local_host(&self) -> Result<ActorRef<HostMsg>, TwinError> {
        // The lock only guards a swap of one reference; a poisoned one still
        // holds a valid reference.
        self.host
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                TwinError::Unavailable("this client hosts no twins or environments".into())
            })
    }

    /// The local host actor (`None` for a client-only handle).
    pub fn host(&self) -> Option<ActorRef<HostMsg>> {
        self.local_host().ok()
    }

    /// Points this handle (and its clones) at a new host actor.
    pub fn replace_host(&self, host: ActorRef<HostMsg>) {
        *self.host.write().unwrap_or_else(|p| p.into_inner()) = Some(host);
    }

    async fn ask<T: Send + 'static, M: Into<HostMsg>>(
        &self,
        what: &str,
        build: impl FnOnce(Reply<T>) -> M,
    ) -> Result<T, TwinError> {
        self.ask_within(what, self.timeout, build).await
    }

    async fn ask_within<T: Send + 'static, M: Into<HostMsg>>(
        &self,
        what: &str,
        timeout: std::time::Duration,
        build: impl FnOnce(Reply<T>) -> M,
    ) -> Result<T, TwinError> {
        let _permit = self.admission.enter()?;
        self.call_host(what, timeout, build).await
    }

    /// Asks the host without taking a permit: for a request that holds one
    /// already, and for liveness and shutdown, which must get through
    /// however busy the node is.
    async fn call_host<T: Send + 'static, M: Into<HostMsg>>(
        &self,
        what: &str,
        timeout: std::time::Duration,
        build: impl FnOnce(Reply<T>) -> M,
    ) -> Result<T, TwinError> {
        let build = |reply| build(reply).into();
        crate::protocol::call_actor(&self.local_host()?, what, "the request", timeout, build).await
    }

    /// Sends `msg` to the twin's actor: directly when it was resolved
    /// before and still runs, else resolved through the host first; a message
    /// the actor can no longer take goes through the host, which answers for
    /// a twin that is not running.
    ///
    /// Also says whether the request reactivated a passivated twin.
    async fn route<T: Send + 'static>(
        &self,
        twin: &str,
        build: impl FnOnce(Reply<T>) -> TwinMsg,
    ) -> Result<(T, bool), TwinError> {
        let _permit = self.admission.enter()?;
        let host = self.local_host()?;
        let (tx, rx) = ractor::concurrency::oneshot();
        let mut msg = build(tx.into());
        let (route, reactivated) = self.resolve_direct(twin).await?;
        // Counted as waiting at the twin until its answer comes.
        let _pending = route.view.mailbox.sent();
        if let Err(e) = route.actor.send_message(msg) {
            self.routes.forget(&self.scope, twin);
            let ractor::MessagingErr::SendErr(back) = e else {
                return Err(TwinError::Unavailable(twin.to_string()));
            };
            msg = back;
            let target = self.twin_ref(twin);
            if host
                .send_message(HostMsg::Route { twin: target, msg })
                .is_err()
            {
                return Err(TwinError::Unavailable(twin.to_string()));
            }
        }
        self.answer(twin, rx)
            .await
            .map(|answer| (answer, reactivated))
    }

    /// The answer to a request about `twin` sent with `rx`'s reply port,
    /// within the call timeout.
    async fn answer<T>(
        &self,
        twin: &str,
        rx: ractor::concurrency::OneshotReceiver<Result<T, TwinError>>,
    ) -> Result<T, TwinError> {
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            // Whoever held the reply port ended with the request unanswered.
            Ok(Err(_)) => Err(TwinError::Unavailable(twin.to_string())),
            Err(_) => Err(TwinError::Timeout {
                id: twin.to_string(),
                what: "the request".into(),
                timeout_ms: self.timeout.as_millis() as u64,
            }),
        }
    }

    /// The twin's actor on this node, resolved through the host unless a
    /// caller resolved it before; says whether resolving reactivated it.
    async fn resolve_direct(&self, twin: &str) -> Result<(DirectRoute, bool), TwinError> {
        if let Some(route) = self.routes.get(&self.scope, twin) {
            return Ok((route, false));
        }
        let epoch = self.routes.epoch();
        let target = self.twin_ref(twin);
        let (route, reactivated) = self
            .call_host(twin, self.timeout, |reply| HostMsg::Resolve {
                twin: target,
                reply,
            })
            .await?;
        self.routes.put(&self.scope, twin, epoch, route.clone());
        Ok((route, reactivated))
    }

    /// Runs `request` where it belongs: here when not clustered or when this
    /// node holds the twin, else on the node that does.
    async fn run(
        &self,
        request: TwinRequest,
        blob: Vec<u8>,
    ) -> Result<(TwinReply, Vec<u8>), TwinError> {
        let Some(link) = self.link() else {
            return self.execute(request, blob).await;
        };
        let local = link.local_node();
        match &request {
            TwinRequest::Create { definition } => {
                let org = self.creating_organization(definition)?;
                // Creation goes to the owner of the name, so two creations of
                // one name meet on one node, which lets only one through.
                self.refuse_name_elsewhere(&*link, &org, definition.name.as_str())
                    .await?;
                let node = link
                    .owner(&format!("{org}/{}", definition.name))
                    .ok_or_else(no_nodes)?;
                self.run_on(&*link, &node, "create", request, blob).await
            }
            TwinRequest::List { filter } => {
                let mut all = Vec::new();
                let mut nodes = link.peers();
                if link.hosts_twins() {
                    nodes.insert(0, local.clone());
                }
                for node in &nodes {
                    if let (TwinReply::Records(part), _) = self
                        .run_on(&*link, node, "list", request.clone(), Vec::new())
                        .await?
                    {
                        all.extend(part);
                    }
                }
                // Twins in transit (released, or their node just died) are
                // held by no member: the shared store still lists them.
                if let Some(node) = nodes.first() {
                    let unheld = TwinRequest::ListUnheld {
                        filter: filter.clone(),
                        members: nodes.clone(),
                    };
                    if let (TwinReply::Records(part), _) = self
                        .run_on(&*link, node, "list", unheld, Vec::new())
                        .await?
                    {
                        all.extend(part);
                    }
                }
                // A stable sort keeps a holder's record ahead of the store's
                // copy of the same twin, and dedup keeps the first. Each node
                // sent its first page after the cursor, so the cluster's
                // first page is among them.
                all.sort_by_key(|r| r.id);
                all.dedup_by_key(|r| r.id);
                filter.page(&mut all);
                Ok((TwinReply::Records(all), Vec::new()))
            }
            _ => match request.twin().map(str::to_string) {
                Some(key) => {
                    // This node's cached reads must not outlive a write it
                    // sent (under a key that may alias theirs): forgotten
                    // before it goes, and again once it is answered, so a
                    // read that raced it is not kept either.
                    let writes = request.may_change_twin();
                    if writes {
                        self.remote_views.all_changed();
                    }
                    let result = self.run_keyed(&*link, &key, request, blob).await;
                    if writes {
                        self.remote_views.all_changed();
                    }
                    result
                }
                None => self.execute(request, blob).await,
            },
        }
    }

    /// Runs a request naming twin `key` on the node holding it.
    async fn run_keyed(
        &self,
        link: &dyn ClusterLink,
        key: &str,
        request: TwinRequest,
        blob: Vec<u8>,
    ) -> Result<(TwinReply, Vec<u8>), TwinError> {
        let local = link.local_node();
        let node = self.locate(link, key).await?;
        let retry = (request.clone(), blob.clone());
        match self.run_on(link, &node, key, request, blob).await {
            // Mid hand-off the old holder still serves it.
            Err(TwinError::Moving { from, .. })
                if from != node && link.peers().contains(&from)
                    || from == local && link.hosts_twins() =>
            {
                self.run_on(link, &from, key, retry.0, retry.1).await
            }
            other => other,
        }
    }

    /// The organization a definition will be created in, as the host decides.
    fn creating_organization(&self, definition: &TwinDefinition) -> Result<String, TwinError> {
        Ok(match (&definition.organization, &self.scope) {
            (Some(declared), _) => declared.to_string(),
            (None, Scope::Organization(own)) => own.to_string(),
            (None, Scope::Node) => crate::definition::DEFAULT_ORGANIZATION.to_string(),
        })
    }

    /// A conflict when another node already holds a twin of this name in the
    /// organization.
    async fn refuse_name_elsewhere(
        &self,
        link: &dyn ClusterLink,
        org: &str,
        name: &str,
    ) -> Result<(), TwinError> {
        let Ok(org_name) = Name::new(org) else {
            // The host names the bad field.
            return Ok(());
        };
        let scoped = self.with_scope(Scope::Organization(org_name));
        for node in link.peers() {
            let get = TwinRequest::Get {
                twin: name.to_string(),
            };
            match scoped.run_on(link, &node, name, get, Vec::new()).await {
                Ok(_) => {
                    return Err(TwinError::Conflict(format!(
                        "a twin named `{name}` already exists in organization {org}"
                    )));
                }
                Err(TwinError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The node that serves twin `key`: its id's owner, or for a name the node
    /// holding a twin of that name.
    async fn locate(&self, link: &dyn ClusterLink, key: &str) -> Result<String, TwinError> {
        if TwinId::parse(key).is_some() {
            return link.owner(key).ok_or_else(no_nodes);
        }
        let get = |twin: &str| TwinRequest::Get {
            twin: twin.to_string(),
        };
        if link.hosts_twins() {
            match self.execute(get(key), Vec::new()).await {
                Ok(_) => return Ok(link.local_node()),
                Err(TwinError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut unreachable = None;
        for node in link.peers() {
            match self.run_on(link, &node, key, get(key), Vec::new()).await {
                Ok(_) => return Ok(node),
                Err(TwinError::NotFound(_)) => {}
                Err(e @ TwinError::NodeUnavailable { .. }) => unreachable = Some(e),
                Err(e) => return Err(e),
            }
        }
        // Not found anywhere that answered; a silent node may hold it.
        Err(unreachable.unwrap_or_else(|| TwinError::NotFound(key.to_string())))
    }

    /// Runs `request` on `node`: here when it is this node. Boxed, because a
    /// fork executed here may run a request on another node.
    fn run_on<'a>(
        &'a self,
        link: &'a dyn ClusterLink,
        node: &'a str,
        twin: &'a str,
        request: TwinRequest,
        blob: Vec<u8>,
    ) -> crate::store::BoxFuture<'a, Result<(TwinReply, Vec<u8>), TwinError>> {
        Box::pin(async move {
            if node == link.local_node() {
                return self.execute(request, blob).await;
            }
            let frame = remote::encode_request(&self.scope, &request, &blob);
            let unavailable = |reason: String| TwinError::NodeUnavailable {
                twin: twin.to_string(),
                node: node.to_string(),
                reason,
            };
            let answer = link
                .call(node, frame, self.timeout)
                .await
                .map_err(unavailable)?;
            remote::decode_reply(&answer).map_err(unavailable)?
        })
    }

    /// Serves a request that arrived from another node, here, without routing
    /// it further (so two nodes that briefly disagree on placement cannot pass
    /// a request back and forth).
    pub async fn serve_frame(&self, frame: &[u8]) -> Vec<u8> {
        let result = match remote::decode_request(frame) {
            Ok((scope, request, blob)) => self.with_scope(scope).execute(request, blob).await,
            Err(e) => Err(TwinError::invalid("frame", e)),
        };
        remote::encode_reply(result)
    }

    /// Runs `request` on this node's host.
    async fn execute(
        &self,
        request: TwinRequest,
        blob: Vec<u8>,
    ) -> Result<(TwinReply, Vec<u8>), TwinError> {
        let record = |r: TwinRecord| (TwinReply::Record(Box::new(r)), Vec::new());
        let done = (TwinReply::Done, Vec::new());
        Ok(match request {
            TwinRequest::Create { definition } => {
                let scope = self.scope.clone();
                record(
                    self.ask("create", |reply| LifecycleMsg::Create {
                        definition,
                        scope,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::Get { twin } => {
                let t = self.twin_ref(&twin);
                record(
                    self.ask(&twin, |reply| HostMsg::Get { twin: t, reply })
                        .await?,
                )
            }
            TwinRequest::List { filter } => {
                let scope = self.scope.clone();
                let list = self
                    .ask("list", |reply| HostMsg::List {
                        filter,
                        scope,
                        reply,
                    })
                    .await?;
                (TwinReply::Records(list), Vec::new())
            }
            TwinRequest::Update { twin, patch } => {
                let t = self.twin_ref(&twin);
                record(
                    self.ask(&twin, |reply| LifecycleMsg::Update {
                        twin: t,
                        patch,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::Delete { twin } => {
                let t = self.twin_ref(&twin);
                self.ask(&twin, |reply| LifecycleMsg::Delete { twin: t, reply })
                    .await?;
                done
            }
            TwinRequest::Start { twin, options } => {
                let t = self.twin_ref(&twin);
                record(
                    self.ask(&twin, |reply| LifecycleMsg::Start {
                        twin: t,
                        options,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::Stop { twin } => {
                let t = self.twin_ref(&twin);
                record(
                    self.ask(&twin, |reply| LifecycleMsg::Stop { twin: t, reply })
                        .await?,
                )
            }
            TwinRequest::Fork { twin, options } => record(self.fork_here(&twin, options).await?),
            TwinRequest::Checkpoint { twin } => {
                let t = self.twin_ref(&twin);
                let state = self
                    .ask(&twin, |reply| LifecycleMsg::Checkpoint { twin: t, reply })
                    .await?;
                (TwinReply::State, state.to_bytes())
            }
            TwinRequest::Restore { twin } => {
                let state = SimState::from_bytes(&blob)?;
                let t = self.twin_ref(&twin);
                record(
                    self.ask(&twin, |reply| LifecycleMsg::Restore {
                        twin: t,
                        state,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::Twin { twin, op } => (
                {
                    let (reply, reactivated) =
                        self.route(&twin, |reply| TwinMsg::Op { op, reply }).await?;
                    TwinReply::Twin { reply, reactivated }
                },
                Vec::new(),
            ),
            TwinRequest::StateJson { twin, watcher } => {
                let (json, reactivated, watched) = self.state_here(&twin, watcher).await?;
                (
                    TwinReply::StateJson {
                        reactivated,
                        watched,
                    },
                    json.to_vec(),
                )
            }
            TwinRequest::Recording { twin } => {
                let (scene, recording) = self
                    .route(&twin, |reply| TwinMsg::Recording { reply })
                    .await
                    .map(|(recording, _)| recording)?;
                let bytes = serde_json::to_vec(&(&*scene, &recording))
                    .map_err(|e| TwinError::Storage(format!("encoding the recording: {e}")))?;
                (TwinReply::Recording, bytes)
            }
            TwinRequest::ForkFrom { parent, options } => {
                let state = SimState::from_bytes(&blob)?;
                record(
                    self.ask("fork", |reply| HostMsg::ForkFrom {
                        parent: Box::new(parent),
                        options,
                        state,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::AdoptFork { record: r, clock } => {
                let state = SimState::from_bytes(&blob)?;
                record(
                    self.ask("fork", |reply| HostMsg::AdoptFork {
                        record: Box::new(r),
                        clock,
                        state,
                        reply,
                    })
                    .await?,
                )
            }
            TwinRequest::ListUnheld { filter, members } => {
                let scope = self.scope.clone();
                let list = self
                    .ask("list", |reply| HostMsg::ListUnheld {
                        filter,
                        members,
                        scope,
                        reply,
                    })
                    .await?;
                (TwinReply::Records(list), Vec::new())
            }
            TwinRequest::Load => (
                TwinReply::Load(self.ask("load", |reply| HostMsg::Load { reply }).await?),
                Vec::new(),
            ),
        })
    }

    /// Forks a twin this node holds: here, or on the node `options.node` names
    /// (the parent's state travels there as a message).
    async fn fork_here(
        &self,
        twin: &str,
        mut options: ForkOptions,
    ) -> Result<TwinRecord, TwinError> {
        let target = match (self.link(), options.node.as_deref()) {
            (Some(link), Some(node)) => {
                let node = if node == LEAST_LOADED {
                    self.least_loaded(&*link).await?
                } else {
                    node.to_string()
                };
                if node != link.local_node() && !link.peers().contains(&node) {
                    let mut members = link.peers();
                    if link.hosts_twins() {
                        members.insert(0, link.local_node());
                    }
                    return Err(TwinError::invalid(
                        "node",
                        format!(
                            "no node `{node}` in the cluster; its members are: {}",
                            members.join(", ")
                        ),
                    ));
                }
                Some((link, node))
            }
            _ => None,
        };
        match target {
            Some((link, node)) if node != link.local_node() => {
                let t = self.twin_ref(twin);
                let (parent, state) = self
                    .ask(twin, |reply| HostMsg::ForkSource { twin: t, reply })
                    .await?;
                options.node = None;
                let request = TwinRequest::ForkFrom { parent, options };
                expect_reply!(
                    self.run_on(&*link, &node, twin, request, state.to_bytes()).await,
                    TwinReply::Record(r) => *r
                )
            }
            _ => {
                if target.is_some() {
                    options.node = None;
                }
                if options.node.is_none()
                    && let Some(route) = self.routes.get(&self.scope, twin)
                {
                    return self.fork_through(twin, route, options).await;
                }
                let t = self.twin_ref(twin);
                self.ask(twin, |reply| HostMsg::Fork {
                    twin: t,
                    options,
                    reply,
                })
                .await
            }
        }
    }

    /// Forks a twin resolved before through its own actor: it copies its
    /// simulation and hands the copy to the host, which answers here. The
    /// host asking the twin for it would cost a hand-off more.
    async fn fork_through(
        &self,
        twin: &str,
        route: DirectRoute,
        options: ForkOptions,
    ) -> Result<TwinRecord, TwinError> {
        let _permit = self.admission.enter()?;
        let host = self.local_host()?;
        let (tx, rx) = ractor::concurrency::oneshot();
        let parent = self.twin_ref(twin);
        let deliver: crate::protocol::ForkDelivery = Box::new(move |copied| {
            // A host that is gone drops the reply: the caller hears so.
            let _ = host.send_message(HostMsg::ForkCopied {
                parent,
                copied,
                options,
                reply: tx.into(),
            });
        });
        if let Err(e) = route.actor.send_message(TwinMsg::ForkInto { deliver }) {
            self.routes.forget(&self.scope, twin);
            match e {
                // The actor is gone: the host forks it its own way.
                ractor::MessagingErr::SendErr(msg) => {
                    msg.reject(TwinError::NotRunning(twin.to_string()))
                }
                _ => return Err(TwinError::Unavailable(twin.to_string())),
            }
        }
        self.answer(twin, rx).await
    }

    /// The node running the fewest twins (this one on a tie).
    async fn least_loaded(&self, link: &dyn ClusterLink) -> Result<String, TwinError> {
        let mut nodes = link.peers();
        if link.hosts_twins() {
            nodes.insert(0, link.local_node());
        }
        let mut best: Option<(usize, String)> = None;
        for node in nodes {
            // A node that cannot say is not a candidate.
            if let Ok((TwinReply::Load(load), _)) = self
                .run_on(link, &node, "least_loaded", TwinRequest::Load, Vec::new())
                .await
                && best.as_ref().is_none_or(|(b, _)| load < *b)
            {
                best = Some((load, node));
            }
        }
        best.map(|(_, node)| node).ok_or_else(no_nodes)
    }

    /// Hands off what placement moved away from this node and takes over what
    /// it moved here (at most `max_moves` hand-offs per call); forks go to
    /// their new owner with their state. Returns how many twins moved out and
    /// in.
    pub async fn rebalance(&self, max_moves: usize) -> Result<(usize, usize), TwinError> {
        let done: Rebalanced = self
            .ask("rebalance", |reply| HostMsg::Rebalance { max_moves, reply })
            .await?;
        let moved_out = done.released.len() + done.forks.len();
        if let Some(link) = self.link() {
            for (record, clock, state) in done.forks {
                let id = record.id.to_string();
                let Some(node) = link.owner(&id) else {
                    tracing::error!(fork = %id, "no node to hand the fork to; it is gone");
                    continue;
                };
                let request = TwinRequest::AdoptFork { record, clock };
                if let Err(e) = self
                    .with_scope(Scope::Node)
                    .run_on(&*link, &node, &id, request, state.to_bytes())
                    .await
                {
                    tracing::error!(fork = %id, %node, error = %e, "handing the fork off failed; it is gone");
                }
            }
        }
        Ok((moved_out, done.adopted.len()))
    }

    /// Runs one scene and one command sequence on several engines and reports
    /// how far each trajectory drifts from the first engine's. Waits up to
    /// [`COMPARE_TIMEOUT`].
    pub async fn compare_engines(
        &self,
        request: crate::compare::CompareRequest,
    ) -> Result<hanzo_twin_engines::compare::CompareReport, TwinError> {
        let scope = self.scope.clone();
        self.ask_within("engine comparison", COMPARE_TIMEOUT, |reply| {
            HostMsg::CompareEngines {
                request,
                scope,
                reply,
            }
        })
        .await
    }

    /// Builds a batch of RL environments (`owner` is the creator's subject).
    /// Loading scenes and engines may take a while: waits up to
    /// [`GYM_CREATE_TIMEOUT`].
    pub async fn gym_create(
        &self,
        request: crate::gym::GymEnvRequest,
        owner: &str,
    ) -> Result<crate::gym::GymEnvInfo, TwinError> {
        let scope = self.scope.clone();
        let owner = owner.to_string();
        self.ask_within("gym environment creation", GYM_CREATE_TIMEOUT, |reply| {
            HostMsg::Gym(BatchMsg::Create {
                request,
                owner,
                scope,
                reply,
            })
        })
        .await
    }

    pub async fn gym_list(&self) -> Result<Vec<crate::gym::GymEnvInfo>, TwinError> {
        let scope = self.scope.clone();
        self.ask("gym environments", |reply| {
            HostMsg::Gym(BatchMsg::List { scope, reply })
        })
        .await
    }

    pub async fn gym_get(&self, id: &str) -> Result<crate::gym::GymEnvInfo, TwinError> {
        Ok(self.gym_open(id).await?.info)
    }

    /// The batch `id`, to drive (reset, step, send, recv) with this handle's
    /// timeout.
    pub async fn gym_open(&self, id: &str) -> Result<crate::gym::GymEnv, TwinError> {
        let (id, scope) = (id.to_string(), self.scope.clone());
        let (actor, info, mailbox) = self
            .ask("gym environment", |reply| {
                HostMsg::Gym(BatchMsg::Get { id, scope, reply })
            })
            .await?;
        Ok(crate::gym::GymEnv::new(
            actor,
            info,
            self.timeout,
            self.admission.clone(),
            mailbox,
        ))
    }

    pub async fn gym_delete(&self, id: &str) -> Result<(), TwinError> {
        let (id, scope) = (id.to_string(), self.scope.clone());
        self.ask("gym environment", |reply| {
            HostMsg::Gym(BatchMsg::Delete { id, scope, reply })
        })
        .await
    }

    /// The node's supervision tree, as this handle's scope sees it.
    pub async fn tree(&self) -> Result<crate::inspector::ActorNode, TwinError> {
        let scope = self.scope.clone();
        self.ask("supervision tree", |reply| HostMsg::Tree { scope, reply })
            .await
    }

    /// Events that change the supervision tree, from now on (every
    /// organization's: filter by `organization`).
    pub async fn watch_tree(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<crate::inspector::TreeEvent>, TwinError> {
        self.ask("supervision tree", |reply| HostMsg::WatchTree { reply })
            .await
    }

    pub async fn create(&self, definition: TwinDefinition) -> Result<TwinRecord, TwinError> {
        let definition =
            crate::live_topology::on_create(definition, self.live_topology.as_deref()).await?;
        expect_reply!(
            self.run(TwinRequest::Create { definition }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )
    }

    pub async fn get(&self, twin: &str) -> Result<TwinRecord, TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Get { twin }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )
    }

    /// The twins the scope sees, on every node of the cluster, in id order:
    /// all of them, or the page `filter.after` and `filter.limit` ask for.
    pub async fn list(&self, filter: TwinFilter) -> Result<Vec<TwinRecord>, TwinError> {
        expect_reply!(
            self.run(TwinRequest::List { filter }, Vec::new()).await,
            TwinReply::Records(list) => list
        )
    }

    pub async fn update(
        &self,
        twin: &str,
        patch: serde_json::Value,
    ) -> Result<TwinRecord, TwinError> {
        let patch = match patch.get("topology") {
            Some(_) => {
                let current = self.get(twin).await?;
                crate::live_topology::on_update(
                    &current.definition,
                    patch,
                    self.live_topology.as_deref(),
                )
                .await?
            }
            None => patch,
        };
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Update { twin, patch }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )
    }

    pub async fn delete(&self, twin: &str) -> Result<(), TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Delete { twin }, Vec::new()).await,
            TwinReply::Done => ()
        )
    }

    pub async fn start(&self, twin: &str, options: StartOptions) -> Result<TwinRecord, TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Start { twin, options }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )
    }

    pub async fn stop(&self, twin: &str) -> Result<TwinRecord, TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Stop { twin }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )
    }

    /// Forks the twin's current state into a new ephemeral twin: on the
    /// parent's node, or on the node `options.node` names.
    pub async fn fork(&self, twin: &str, options: ForkOptions) -> Result<TwinRecord, TwinError> {
        let patch = options.topology.clone();
        if let Some(p) = &patch {
            p.check("topology")
                .map_err(|e| TwinError::from(hanzo_twin_engines::infrastructure::infra_error(e)))?;
        }
        let twin = twin.to_string();
        let fork: TwinRecord = expect_reply!(
            self.run(TwinRequest::Fork { twin, options }, Vec::new()).await,
            TwinReply::Record(r) => *r
        )?;
        let Some(patch) = patch else {
            return Ok(fork);
        };
        // A what-if: the fork's topology patched before anything runs on
        // it. A patch it refuses leaves no fork behind.
        let id = fork.id.to_string();
        if let Err(e) = self.op(&id, TwinOp::InfraPatch(Box::new(patch))).await {
            if let Err(gone) = self.delete(&id).await {
                tracing::warn!("the refused what-if fork {id} could not be deleted: {gone}");
            }
            return Err(e);
        }
        Ok(fork)
    }

    /// The twin's complete state: live when running, else its last checkpoint.
    pub async fn checkpoint(&self, twin: &str) -> Result<SimState, TwinError> {
        let twin = twin.to_string();
        let (reply, blob) = self
            .run(TwinRequest::Checkpoint { twin }, Vec::new())
            .await?;
        match reply {
            TwinReply::State => Ok(SimState::from_bytes(&blob)?),
            other => Err(unexpected(other)),
        }
    }

    pub async fn restore(&self, twin: &str, state: SimState) -> Result<TwinRecord, TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Restore { twin }, state.to_bytes()).await,
            TwinReply::Record(r) => *r
        )
    }

    /// Runs `op` on the running twin, wherever it is.
    pub async fn op(&self, twin: &str, op: TwinOp) -> Result<TwinOpReply, TwinError> {
        self.op_outcome(twin, op).await.map(|(reply, _)| reply)
    }

    /// Runs `op`, and says whether it reactivated the twin (a passivated
    /// twin comes back on its next request; the answer is the same).
    pub async fn op_outcome(
        &self,
        twin: &str,
        op: TwinOp,
    ) -> Result<(TwinOpReply, bool), TwinError> {
        let twin = twin.to_string();
        expect_reply!(
            self.run(TwinRequest::Twin { twin, op }, Vec::new()).await,
            TwinReply::Twin { reply, reactivated } => (reply, reactivated)
        )
    }

    pub async fn step(&self, twin: &str, steps: u64) -> Result<StepReport, TwinError> {
        match self.op(twin, TwinOp::Step { steps }).await? {
            TwinOpReply::Step(report) => Ok(report),
            other => Err(unexpected_op(other)),
        }
    }

    pub async fn command(
        &self,
        twin: &str,
        commands: Vec<JointCommandEntry>,
    ) -> Result<(), TwinError> {
        self.op_done(twin, TwinOp::Command { commands }).await
    }

    /// Commands one joint.
    pub async fn command_joint(
        &self,
        twin: &str,
        joint: &str,
        command: JointCommand,
    ) -> Result<(), TwinError> {
        let entry = JointCommandEntry {
            joint: joint.to_string(),
            command,
        };
        self.command(twin, vec![entry]).await
    }

    pub async fn observe(&self, twin: &str, path: &str) -> Result<Observation, TwinError> {
        let path = path.to_string();
        match self.op(twin, TwinOp::Observe { path }).await? {
            TwinOpReply::Observation(o) => Ok(*o),
            other => Err(unexpected_op(other)),
        }
    }

    /// The shapes of the twin's scene, to draw it.
    pub async fn geometry(
        &self,
        twin: &str,
    ) -> Result<hanzo_twin_engines::scene::SceneGeometry, TwinError> {
        match self.op(twin, TwinOp::Geometry).await? {
            TwinOpReply::Geometry(g) => Ok(*g),
            other => Err(unexpected_op(other)),
        }
    }

    /// A picture of the twin now, drawn by the node that holds it.
    pub async fn render(
        &self,
        twin: &str,
        request: crate::protocol::RenderRequest,
    ) -> Result<crate::protocol::RenderedFrame, TwinError> {
        match self.op(twin, TwinOp::Render(Box::new(request))).await? {
            TwinOpReply::Render(frame) => Ok(*frame),
            other => Err(unexpected_op(other)),
        }
    }

    /// The twin's scene and its bodies' poses now.
    pub async fn scene_now(&self, twin: &str) -> Result<crate::protocol::SceneNow, TwinError> {
        match self.op(twin, TwinOp::SceneNow).await? {
            TwinOpReply::SceneNow(now) => Ok(*now),
            other => Err(unexpected_op(other)),
        }
    }

    pub async fn set_clock(&self, twin: &str, clock: Clock) -> Result<(), TwinError> {
        self.op_done(twin, TwinOp::SetClock { clock }).await
    }

    pub async fn info(&self, twin: &str) -> Result<TwinRuntimeInfo, TwinError> {
        match self.op(twin, TwinOp::Info).await? {
            TwinOpReply::Info(info) => Ok(info),
            other => Err(unexpected_op(other)),
        }
    }

    /// A running twin's id, name, engine, clock and full observation, from its
    /// actor alone (one request, also across nodes).
    pub async fn snapshot(&self, twin: &str) -> Result<TwinSnapshot, TwinError> {
        match self.op(twin, TwinOp::Snapshot).await? {
            TwinOpReply::Snapshot(s) => Ok(*s),
            other => Err(unexpected_op(other)),
        }
    }

    /// [`TwinSnapshot::to_state_json`] of a running twin, and whether the
    /// request reactivated it. Polling costs a twin's actor one message per
    /// change, not one per read:
    /// - a twin running on this node answers from its view while nothing
    ///   has changed it since its last read;
    /// - a twin on another node answers from this node's cache while its
    ///   owner has not reported a change, for at most
    ///   [`crate::direct::REMOTE_READ_LEASE`].
    pub async fn state_json(&self, twin: &str) -> Result<(bytes::Bytes, bool), TwinError> {
        let Some(link) = self.link() else {
            let (json, reactivated, _) = self.state_here(twin, None).await?;
            return Ok((json, reactivated));
        };
        if let Some(json) = self.local_view(twin).and_then(|r| r.view.cached_state()) {
            return Ok((json, false));
        }
        let membership = link.membership_version();
        if let Some(json) = self.remote_views.cached(&self.scope, twin, membership) {
            return Ok((json, false));
        }
        let stamp = self.remote_views.stamp(&self.scope, twin, membership);
        let request = TwinRequest::StateJson {
            twin: twin.to_string(),
            // A client-only member has no door for the owner's word.
            watcher: link.hosts_twins().then(|| link.local_node()),
        };
        match self.run(request, Vec::new()).await? {
            (
                TwinReply::StateJson {
                    reactivated,
                    watched,
                },
                json,
            ) => {
                let json = bytes::Bytes::from(json);
                if watched {
                    self.remote_views
                        .keep(&self.scope, twin, stamp, json.clone());
                }
                Ok((json, reactivated))
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The twin's running actor here, if resolved before and still running.
    fn local_view(&self, twin: &str) -> Option<DirectRoute> {
        self.routes
            .get(&self.scope, twin)
            .filter(|route| route.actor.get_status() == ractor::ActorStatus::Running)
    }

    /// The state read of a twin this node holds, and whether it reactivated
    /// the twin. With `watcher` (another node, which will cache the answer),
    /// also whether that node will be told of the twin's next change.
    async fn state_here(
        &self,
        twin: &str,
        watcher: Option<String>,
    ) -> Result<(bytes::Bytes, bool, bool), TwinError> {
        let mut reactivated = false;
        let mut watched = false;
        if let (Some(node), Some(link)) = (watcher, self.link())
            && node != link.local_node()
        {
            // Registered before reading, so any change after the read is
            // reported; an actor that ended meanwhile reports nothing, so
            // its answer is not promised.
            let (route, woke) = self.resolve_direct(twin).await?;
            reactivated = woke;
            route.view.watch(Watcher {
                node,
                scope: self.scope.clone(),
                key: twin.to_string(),
                link,
            });
            watched = route.actor.get_status() == ractor::ActorStatus::Running;
        }
        let local = self.local_view(twin);
        if let Some(json) = local.as_ref().and_then(|r| r.view.cached_state()) {
            return Ok((json, reactivated, watched));
        }
        let version = local.as_ref().map(|route| route.view.version());
        let (reply, woke) = self
            .route(twin, |reply| TwinMsg::Op {
                op: TwinOp::Snapshot,
                reply,
            })
            .await?;
        let TwinOpReply::Snapshot(snapshot) = reply else {
            return Err(unexpected_op(reply));
        };
        let json = snapshot.to_state_json();
        if let (Some(route), Some(version)) = (&local, version) {
            route.view.keep_state(version, json.clone());
        }
        Ok((json, reactivated || woke, watched))
    }

    /// A node this one reads from reports that the twin it reads as `key`
    /// changed (a frame from [`remote::encode_changed`]).
    pub fn remote_changed(&self, frame: &[u8]) {
        match remote::decode_changed(frame) {
            Ok((scope, key)) => self.remote_views.changed(&scope, &key),
            // Unreadable: forget every cached read rather than keep a stale one.
            Err(_) => self.remote_views.all_changed(),
        }
    }

    /// How the running twin follows its physical counterpart.
    pub async fn sync_status(&self, twin: &str) -> Result<SyncStatus, TwinError> {
        match self.op(twin, TwinOp::SyncStatus).await? {
            TwinOpReply::SyncStatus(s) => Ok(*s),
            other => Err(unexpected_op(other)),
        }
    }

    async fn op_done(&self, twin: &str, op: TwinOp) -> Result<(), TwinError> {
        match self.op(twin, op).await? {
            TwinOpReply::Done => Ok(()),
            other => Err(unexpected_op(other)),
        }
    }

    /// The run recorded so far, with the scene it ran in.
    pub async fn recording(
        &self,
        twin: &str,
    ) -> Result<
        (
            Arc<hanzo_twin_engines::SceneModel>,
            hanzo_twin_engines::recording::Recording,
        ),
        TwinError,
    > {
        let twin = twin.to_string();
        let (reply, blob) = self
            .run(TwinRequest::Recording { twin }, Vec::new())
            .await?;
        match reply {
            TwinReply::Recording => {
                let (scene, recording): (
                    hanzo_twin_engines::SceneModel,
                    hanzo_twin_engines::recording::Recording,
                ) = serde_json::from_slice(&blob).map_err(|e| {
                    TwinError::Storage(format!("a node sent an unreadable recording: {e}"))
                })?;
                Ok((Arc::new(scene), recording))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Injects `fault` into the twin's actor, or into its child named `child`.
    pub async fn inject_fault(
        &self,
        twin: &str,
        fault: Fault,
        child: Option<String>,
    ) -> Result<(), TwinError> {
        self.op_done(twin, TwinOp::InjectFault { fault, child })
            .await
    }

    /// Whether the local host answers within `timeout` (a client-only handle
    /// has none, and is alive while it exists).
    pub async fn alive(&self, timeout: Duration) -> Result<(), TwinError> {
        if self.host().is_none() {
            return Ok(());
        }
        self.call_host("liveness", timeout, |reply| HostMsg::Load { reply })
            .await
            .map(drop)
    }

    /// Stops every twin with a final checkpoint; they resume when the node starts
    /// again.
    pub async fn shutdown(&self) -> Result<(), TwinError> {
        if self.host().is_none() {
            return Ok(());
        }
        self.call_host("shutdown", self.timeout, |reply| HostMsg::Shutdown {
            reply,
        })
        .await
    }
}

fn no_nodes() -> TwinError {
    TwinError::Unavailable("no node of the cluster hosts twins right now".into())
}
