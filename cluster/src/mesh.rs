//! Forming the cluster with ractor_cluster: a node server listens for peers
//! (authenticated by a shared cookie), connects to its seeds, and the mesh
//! closes transitively (a node joining one member meets them all). Each node
//! runs one small cluster-visible member actor in a process group; who is in
//! the group is the membership, and each member answers with its id and API
//! address. Joins, leaves and failures are logged and counted.
//!
//! The member actor is also each node's one door for twin requests from other
//! nodes (the shape of Akka's ShardRegion: one entry per node, not one cluster
//! registration per twin). A request is one frame of bytes; a frame larger
//! than [`MAX_INLINE`] travels in parts, because ractor_cluster drops the whole
//! session on a frame over 16 MiB.

use crate::{Membership, NodeInfo};
use hanzo_twin_actors::jobs::JobsNode;
use hanzo_twin_actors::store::BoxFuture;
use hanzo_twin_actors::{ClusterLink, TwinNode, TwinStore};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The largest frame sent as one message by default; larger ones go in parts
/// of this size. ractor_cluster drops a session on a frame over 16 MiB.
pub const MAX_INLINE: usize = 8 << 20;
/// How long parts of an unfinished transfer are kept.
const TRANSFER_TTL: Duration = Duration::from_secs(120);

/// The process group every node's member actor joins.
pub const MEMBERS_GROUP: &str = "hanzo-twin.members";

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// `host:port` the node server listens on.
    pub listen: String,
    /// The shared secret every member must present (the handshake
    /// authenticates; it does not encrypt).
    pub cookie: String,
    /// Members to join at start (`host:port` of their node servers).
    pub seeds: Vec<String>,
    /// How often membership is re-read and placement re-checked, besides on
    /// every session change.
    pub refresh: Duration,
    /// How long a node's heartbeat in the shared store counts.
    pub lease: Duration,
    /// Twins one node hands off per placement round, so a join never moves the
    /// whole cluster at once.
    pub max_moves: usize,
    /// The largest frame sent whole; larger ones travel in parts this size.
    pub max_frame: usize,
    /// Mutual TLS on every link; `None`: plain TCP (cookie only).
    pub tls: Option<crate::tls::MeshTls>,
}

/// The member actor's messages: the only ones that cross nodes.
#[derive(RactorClusterMessage)]
pub enum MemberMsg {
    /// Who are you: the node's [`NodeInfo`] as JSON.
    #[rpc]
    Whois(RpcReplyPort<String>),
    /// This node's supervision tree as one organization sees it, as JSON
    /// (`{"tree": ...}` or `{"error": ...}`).
    #[rpc]
    Tree(String, RpcReplyPort<String>),
    /// A twin request ([`hanzo_twin_actors::remote`] frame, in an envelope);
    /// the answer is an envelope too.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// One part of a large request: transfer id (16 bytes), then the bytes.
    Part(Vec<u8>),
    /// One part of a large answer: transfer id (16 bytes) and part index
    /// (u32, big-endian) in, the part out.
    #[rpc]
    Fetch(Vec<u8>, RpcReplyPort<Vec<u8>>),
    /// The members this node knows, as a JSON list of [`NodeInfo`]: how nodes
    /// that connect over TLS (where ractor_cluster does not close the mesh)
    /// meet each other.
    #[rpc]
    Peers(RpcReplyPort<String>),
    /// A twin whose state read this node caches has changed
    /// ([`hanzo_twin_actors::remote::encode_changed`]).
    Changed(Vec<u8>),
    /// A request for this node's jobs (a cancel, a page of a log): small
    /// frames, answered by [`JobsNode::serve_frame`].
    #[rpc]
    Jobs(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

struct Member;

/// Parts of transfers, by transfer id, with when they began.
type Transfers = Arc<Mutex<HashMap<[u8; 16], (Instant, Vec<Vec<u8>>)>>>;

struct MemberState {
    info: String,
    membership: Membership,
    twins: TwinNode,
    jobs: JobsNode,
    /// Parts of large requests still arriving.
    incoming: HashMap<[u8; 16], (Instant, Vec<Vec<u8>>)>,
    /// Parts of large answers waiting to be fetched.
    outgoing: Transfers,
    max_frame: usize,
}

/// A frame as it travels: `0` then the frame, or `1`, a transfer id and the
/// number of parts that were sent (or are to be fetched) separately.
fn inline(frame: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 1);
    out.push(0);
    out.extend_from_slice(&frame);
    out
}

fn in_parts(id: [u8; 16], parts: usize) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&id);
    out.extend_from_slice(&(parts as u32).to_be_bytes());
    out
}

enum Envelope {
    Inline(Vec<u8>),
    Parts([u8; 16], usize),
}

fn open_envelope(mut bytes: Vec<u8>) -> Result<Envelope, String> {
    match bytes.first() {
        Some(0) => {
            bytes.remove(0);
            Ok(Envelope::Inline(bytes))
        }
        Some(1) if bytes.len() == 21 => {
            let mut id = [0u8; 16];
            id.copy_from_slice(&bytes[1..17]);
            let n = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
            Ok(Envelope::Parts(id, n as usize))
        }
        _ => Err("an unreadable envelope".into()),
    }
}

fn expire(transfers: &mut HashMap<[u8; 16], (Instant, Vec<Vec<u8>>)>) {
    transfers.retain(|_, (began, _)| began.elapsed() < TRANSFER_TTL);
}

impl Actor for Member {
    type Msg = MemberMsg;
    type State = MemberState;
    type Arguments = MemberState;

    async fn pre_start(
        &self,
        myself: ActorRef<MemberMsg>,
        state: MemberState,
    ) -> Result<MemberState, ActorProcessingErr> {
        ractor::pg::join(MEMBERS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<MemberMsg>,
        _state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::leave(MEMBERS_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<MemberMsg>,
        msg: MemberMsg,
        state: &mut MemberState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MemberMsg::Whois(reply) => {
                let _ = reply.send(state.info.clone());
            }
            MemberMsg::Tree(organization, reply) => {
                let answer = match hanzo_twin_actors::Name::new(&organization) {
                    Ok(org) => match state.twins.scoped(org).tree().await {
                        Ok(tree) => serde_json::json!({ "tree": tree }),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    },
                    Err(e) => serde_json::json!({ "error": e }),
                };
                let _ = reply.send(answer.to_string());
            }
            MemberMsg::Peers(reply) => {
                let peers = serde_json::to_string(&state.membership.peers()).unwrap_or_default();
                let _ = reply.send(peers);
            }
            MemberMsg::Changed(frame) => state.twins.remote_changed(&frame),
            MemberMsg::Part(bytes) => {
                expire(&mut state.incoming);
                if bytes.len() >= 16 {
                    let mut id = [0u8; 16];
                    id.copy_from_slice(&bytes[..16]);
                    let entry = state
                        .incoming
                        .entry(id)
                        .or_insert_with(|| (Instant::now(), Vec::new()));
                    entry.1.push(bytes[16..].to_vec());
                }
            }
            MemberMsg::Call(envelope, reply) => {
                // Parts arrive before the call that names them (one session
                // keeps order), so the frame is whole here.
                let frame = match open_envelope(envelope) {
                    Ok(Envelope::Inline(frame)) => Ok(frame),
                    Ok(Envelope::Parts(id, n)) => match state.incoming.remove(&id) {
                        Some((_, parts)) if parts.len() == n => Ok(parts.concat()),
                        _ => Err("parts of the request went missing".to_string()),
                    },
                    Err(e) => Err(e),
                };
                let twins = state.twins.clone();
                let outgoing = state.outgoing.clone();
                let max_frame = state.max_frame;
                // Served off the member's loop: one slow twin must not hold up
                // requests for the others.
                tokio::spawn(async move {
                    let answer = match frame {
                        Ok(frame) => twins.serve_frame(&frame).await,
                        Err(e) => hanzo_twin_actors::remote::encode_reply(Err(
                            hanzo_twin_actors::TwinError::invalid("frame", e),
                        )),
                    };
                    let _ = reply.send(envelope_answer(answer, &outgoing, max_frame));
                });
            }
            MemberMsg::Jobs(frame, reply) => {
                let jobs = state.jobs.clone();
                // Off the member's loop: a log read may wait for a line.
                tokio::spawn(async move {
                    let _ = reply.send(jobs.serve_frame(&frame).await);
                });
            }
            MemberMsg::Fetch(key, reply) => {
                let part = (key.len() == 20)
                    .then(|| {
                        let mut id = [0u8; 16];
                        id.copy_from_slice(&key[..16]);
                        let index = u32::from_be_bytes([key[16], key[17], key[18], key[19]]);
                        let mut out = state.outgoing.lock().unwrap_or_else(|p| p.into_inner());
                        expire(&mut out);
                        let (part, last) = match out.get(&id) {
                            Some((_, parts)) => (
                                parts.get(index as usize).cloned(),
                                index as usize + 1 == parts.len(),
                            ),
                            None => (None, false),
                        };
                        if last {
                            out.remove(&id);
                        }
                        part
                    })
                    .flatten();
                let _ = reply.send(part.unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// Wraps an answer for the wire: inline, or kept in parts for the caller to
/// fetch.
fn envelope_answer(answer: Vec<u8>, outgoing: &Transfers, max_frame: usize) -> Vec<u8> {
    if answer.len() <= max_frame {
        return inline(answer);
    }
    let id = *uuid::Uuid::new_v4().as_bytes();
    let parts: Vec<Vec<u8>> = answer.chunks(max_frame).map(<[u8]>::to_vec).collect();
    let n = parts.len();
    outgoing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, (Instant::now(), parts));
    in_parts(id, n)
}

/// The member actors of the live nodes, by node id.
type Members = Arc<RwLock<HashMap<String, ActorRef<MemberMsg>>>>;

/// Carries twin requests between nodes through their member actors.
#[derive(Clone)]
pub struct MeshLink {
    membership: Membership,
    members: Members,
    max_frame: usize,
}

impl MeshLink {
    /// The member actor of live node `node`.
    fn member(&self, node: &str) -> Option<ActorRef<MemberMsg>> {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .cloned()
    }

    async fn call_member(
        member: ActorRef<MemberMsg>,
        frame: Vec<u8>,
        timeout: Duration,
        max_frame: usize,
    ) -> Result<Vec<u8>, String> {
        let envelope = if frame.len() <= max_frame {
            inline(frame)
        } else {
            let id = *uuid::Uuid::new_v4().as_bytes();
            let mut n = 0;
            for chunk in frame.chunks(max_frame) {
                let mut part = Vec::with_capacity(16 + chunk.len());
                part.extend_from_slice(&id);
                part.extend_from_slice(chunk);
                member
                    .cast(MemberMsg::Part(part))
                    .map_err(|e| format!("sending a part failed: {e}"))?;
                n += 1;
            }
            in_parts(id, n)
        };
        let answer = ask(&member, |r| MemberMsg::Call(envelope, r), timeout).await?;
        match open_envelope(answer)? {
            Envelope::Inline(frame) => Ok(frame),
            Envelope::Parts(id, n) => {
                let mut whole = Vec::new();
                for index in 0..n as u32 {
                    let mut key = id.to_vec();
                    key.extend_from_slice(&index.to_be_bytes());
                    let part = ask(&member, |r| MemberMsg::Fetch(key, r), timeout).await?;
                    if part.is_empty() {
                        return Err("parts of the answer went missing".into());
                    }
                    whole.extend_from_slice(&part);
                }
                Ok(whole)
            }
        }
    }
}

/// One call to a member actor, every failure said in words.
async fn ask<T: Send + 'static>(
    member: &ActorRef<MemberMsg>,
    build: impl FnOnce(RpcReplyPort<T>) -> MemberMsg,
    timeout: Duration,
) -> Result<T, String> {
    match member.call(build, Some(timeout)).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(ractor::rpc::CallResult::Timeout) => {
            Err(format!("no answer within {} ms", timeout.as_millis()))
        }
        Ok(ractor::rpc::CallResult::SenderError) => Err("it dropped the request".into()),
        Err(e) => Err(format!("it cannot be reached: {e}")),
    }
}

impl ClusterLink for MeshLink {
    fn local_node(&self) -> String {
        self.membership.local().id.clone()
    }

    fn hosts_twins(&self) -> bool {
        self.membership.local().hosts_twins
    }

    fn owner(&self, key: &str) -> Option<String> {
        self.membership.owner(key).map(|n| n.id)
    }

    fn peers(&self) -> Vec<String> {
        self.membership
            .peers()
            .into_iter()
            .filter(|p| p.hosts_twins)
            .map(|p| p.id)
            .collect()
    }

    fn call(
        &self,
        node: &str,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        let member = self.member(node);
        let max_frame = self.max_frame;
        Box::pin(async move {
            let member = member.ok_or("it is not a live member of the cluster")?;
            MeshLink::call_member(member, frame, timeout, max_frame).await
        })
    }

    fn call_jobs(
        &self,
        node: &str,
        frame: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        let member = self.member(node);
        Box::pin(async move {
            let member = member.ok_or("it is not a live member of the cluster")?;
            ask(&member, |r| MemberMsg::Jobs(frame, r), timeout).await
        })
    }

    fn twin_changed(&self, node: &str, scope: &hanzo_twin_actors::Scope, key: &str) {
        if let Some(member) = self.member(node) {
            let frame = hanzo_twin_actors::remote::encode_changed(scope, key);
            let _ = member.cast(MemberMsg::Changed(frame));
        }
    }

    fn membership_version(&self) -> u64 {
        self.membership.version()
    }
}

/// Every other member's supervision tree, as `organization` sees it: one
/// entry per member, with its tree or why there is none (a member that does
/// not answer within `timeout` says so; nothing waits longer).
pub async fn peer_trees(
    organization: &str,
    timeout: Duration,
) -> Vec<(String, Result<serde_json::Value, String>)> {
    let mut out = Vec::new();
    for cell in ractor::pg::get_members(&MEMBERS_GROUP.to_string()) {
        if cell.get_id().is_local() {
            continue;
        }
        let member: ActorRef<MemberMsg> = cell.into();
        let id = match member.call(MemberMsg::Whois, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(text)) => serde_json::from_str::<NodeInfo>(&text)
                .map(|i| i.id)
                .unwrap_or_else(|_| member.get_id().to_string()),
            _ => member.get_id().to_string(),
        };
        let org = organization.to_string();
        let tree = match member
            .call(|reply| MemberMsg::Tree(org, reply), Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(text)) => {
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) if v.get("tree").is_some() => Ok(v["tree"].clone()),
                    Ok(v) => Err(v["error"].as_str().unwrap_or("no tree").to_string()),
                    Err(e) => Err(format!("unreadable answer: {e}")),
                }
            }
            Ok(ractor::rpc::CallResult::Timeout) => Err(format!(
                "node {id} did not answer within {} ms",
                timeout.as_millis()
            )),
            _ => Err(format!("node {id} is unreachable")),
        };
        out.push((id, tree));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Wakes the membership refresher when sessions open or close.
struct SessionEvents(tokio::sync::mpsc::UnboundedSender<()>);

impl ractor_cluster::NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::info!(peer = %ses.peer_addr, "cluster session closed");
        let _ = self.0.send(());
    }

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::info!(peer = %ses.peer_addr, "cluster session authenticated");
        let _ = self.0.send(());
    }

    fn node_session_ready(&self, _: ractor_cluster::node::NodeServerSessionInformation) {
        let _ = self.0.send(());
    }
}

/// A running mesh: the node server, this node's member actor (none for a
/// client), and the tasks that keep membership and placement current.
pub struct Mesh {
    pub server: ActorRef<NodeServerMessage>,
    member: Option<ActorRef<MemberMsg>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    link: MeshLink,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cluster.listen `{0}` is not host:port")]
    Listen(String),
    #[error("cannot start the cluster node server: {0}")]
    Start(String),
    #[error("no member of the cluster answered within {0:?}; check the seeds and the cookie")]
    NoMembers(Duration),
}

impl Mesh {
    /// Starts the node server and the member actor, joins the seeds (retrying
    /// in the background until each answers), keeps `membership` current,
    /// heartbeats into the shared `store`, and moves twins as placement
    /// changes. From here on `twins` routes every request to the twin's node,
    /// and `jobs` cancels and reads the logs of jobs on other nodes.
    pub async fn start(
        config: MeshConfig,
        membership: Membership,
        twins: TwinNode,
        jobs: JobsNode,
        store: Arc<dyn TwinStore>,
    ) -> Result<Mesh, MeshError> {
        let server = start_server(&config, &membership).await?;
        let info = serde_json::to_string(membership.local())
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let (member, _) = Actor::spawn(
            None,
            Member,
            MemberState {
                info,
                membership: membership.clone(),
                twins: twins.clone(),
                jobs: jobs.clone(),
                incoming: HashMap::new(),
                outgoing: Arc::default(),
                max_frame: config.max_frame,
            },
        )
        .await
        .map_err(|e| MeshError::Start(e.to_string()))?;
        let link = MeshLink {
            membership: membership.clone(),
            members: Arc::default(),
            max_frame: config.max_frame,
        };
        let changed = Arc::new(tokio::sync::Notify::new());
        let mut tasks = keep_membership(&server, &config, link.clone(), changed.clone());
        let node = membership.local().id.clone();
        // The heartbeat says "my twins are held"; without it, the others take
        // them over once the lease runs out.
        let beat = config.lease / 3;
        let heart_store = store.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if let Err(e) = heart_store.heartbeat(&node).await {
                    tracing::error!(error = %e, "cluster heartbeat failed");
                }
                tokio::time::sleep(beat).await;
            }
        }));
        twins.attach_cluster(Arc::new(link.clone()));
        jobs.attach_cluster(Arc::new(link.clone()));
        // The jobs of a node whose lease ran out go to the node placement
        // gives each to, checked as often as twins are placed.
        let (orphan_store, orphan_jobs) = (store.clone(), jobs.clone());
        let (orphan_membership, me) = (membership.clone(), membership.local().id.clone());
        let (lease, every) = (config.lease, config.refresh);
        tasks.push(tokio::spawn(async move {
            loop {
                match orphan_store.live_nodes(lease).await {
                    Ok(Some(live)) => {
                        let (members, me) = (orphan_membership.clone(), me.clone());
                        orphan_jobs.adopt_orphans(
                            live,
                            Box::new(move |key| members.owner(key).is_some_and(|n| n.id == me)),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read which nodes are alive"),
                }
                tokio::time::sleep(every).await;
            }
        }));
        let (refresh, max_moves) = (config.refresh, config.max_moves);
        let placer = twins.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match placer.rebalance(max_moves).await {
                    Ok((0, 0)) => {}
                    Ok((out, adopted)) => {
                        tracing::info!(
                            handed_off = out,
                            taken_over = adopted,
                            "placement moved twins"
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "placement round failed"),
                }
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(refresh) => {}
                }
            }
        }));
        Ok(Mesh {
            server,
            member: Some(member),
            tasks,
            link,
        })
    }

    /// Joins a cluster as a client that hosts no twins, and returns a handle
    /// that drives the cluster's twins by id or name (the embedded-agent SDK,
    /// remote). Waits until a member answers, at most `wait`.
    pub async fn connect_client(
        config: MeshConfig,
        client_id: &str,
        timeout: Duration,
        wait: Duration,
    ) -> Result<(Mesh, TwinNode), MeshError> {
        let membership = Membership::client(client_id);
        let server = start_server(&config, &membership).await?;
        let link = MeshLink {
            membership: membership.clone(),
            members: Arc::default(),
            max_frame: config.max_frame,
        };
        let changed = Arc::new(tokio::sync::Notify::new());
        let tasks = keep_membership(&server, &config, link.clone(), changed);
        let mesh = Mesh {
            server,
            member: None,
            tasks,
            link: link.clone(),
        };
        let deadline = Instant::now() + wait;
        while link.peers().is_empty() {
            if Instant::now() > deadline {
                mesh.stop();
                return Err(MeshError::NoMembers(wait));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let twins = TwinNode::client_only(Arc::new(link), timeout);
        Ok((mesh, twins))
    }

    /// The link requests travel over.
    pub fn link(&self) -> Arc<dyn ClusterLink> {
        Arc::new(self.link.clone())
    }

    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
        if let Some(member) = self.member {
            member.stop(None);
        }
        self.server.stop(None);
    }
}

/// Starts the node server on `config.listen`.
async fn start_server(
    config: &MeshConfig,
    membership: &Membership,
) -> Result<ActorRef<NodeServerMessage>, MeshError> {
    let (host, port) = config
        .listen
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| MeshError::Listen(config.listen.clone()))?;
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| MeshError::Listen(config.listen.clone()))?;
    // ractor_cluster closes the mesh itself only over plain TCP (its
    // transitive connections do not encrypt); with TLS each node connects to
    // the members its peers list (see `close_mesh`).
    let (encryption, mode) = match &config.tls {
        Some(tls) => (
            Some(ractor_cluster::IncomingEncryptionMode::Tls(
                tls.acceptor.clone(),
            )),
            ractor_cluster::node::NodeConnectionMode::Isolated,
        ),
        None => (None, ractor_cluster::node::NodeConnectionMode::Transitive),
    };
    let server = NodeServer::new(
        port,
        config.cookie.clone(),
        membership.local().id.clone(),
        host.clone(),
        encryption,
        Some(mode),
    )
    .with_listen_addr(ip);
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| MeshError::Start(e.to_string()))?;
    Ok(server)
}

/// Joins the seeds (retrying until each answers) and keeps the link's
/// membership current: on every session change and every `refresh`. Returns
/// the tasks doing it, for [`Mesh::stop`] to end.
fn keep_membership(
    server: &ActorRef<NodeServerMessage>,
    config: &MeshConfig,
    link: MeshLink,
    changed: Arc<tokio::sync::Notify>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
    let _ = server.cast(NodeServerMessage::SubscribeToEvents {
        id: "membership".into(),
        subscription: Box::new(SessionEvents(wake)),
    });
    for seed in config.seeds.clone() {
        let server = server.clone();
        let tls = config.tls.clone();
        let listen = config.listen.clone();
        let refresh = config.refresh;
        tasks.push(tokio::spawn(async move {
            // A seed is a name to resolve again and again: a headless
            // Service's name gives every pod's address, this node's own among
            // them, and pods that start later appear in it later.
            let mut joined = HashSet::new();
            let mut wait = Duration::from_millis(100);
            loop {
                let own = resolve(&listen).await;
                let mut failed = false;
                for addr in resolve(&seed).await {
                    if is_own(addr, &own) || joined.contains(&addr) {
                        continue;
                    }
                    match connect(&server, &addr.to_string(), tls.as_ref()).await {
                        Ok(()) => {
                            tracing::info!(%seed, %addr, "joined the cluster through its seed");
                            joined.insert(addr);
                        }
                        Err(e) => {
                            tracing::warn!(%seed, %addr, error = ?e, "cannot reach the seed yet; retrying");
                            failed = true;
                        }
                    }
                }
                if failed {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                } else {
                    wait = Duration::from_millis(100);
                    tokio::time::sleep(refresh.max(Duration::from_millis(500))).await;
                }
            }
        }));
    }
    let refresh = config.refresh;
    let tls = config.tls.clone();
    let server = server.clone();
    let mut tried: HashMap<String, Instant> = HashMap::new();
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let grace = config.lease;
    tasks.push(tokio::spawn(async move {
        loop {
            if refresh_members(&link, &mut seen, grace).await {
                changed.notify_one();
            }
            if let Some(tls) = &tls {
                close_mesh(&link, &server, tls, &mut tried).await;
            }
            tokio::select! {
                _ = woken.recv() => {
                    // Let the session finish its state exchange first.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while woken.try_recv().is_ok() {}
                }
                _ = tokio::time::sleep(refresh) => {}
            }
        }
    }));
    tasks
}

/// The addresses `name` (`host:port`) resolves to now; none when it does
/// not resolve (yet).
async fn resolve(name: &str) -> Vec<std::net::SocketAddr> {
    match tokio::net::lookup_host(name).await {
        Ok(addrs) => addrs.collect(),
        Err(_) => Vec::new(),
    }
}

/// Whether `addr` is this node's own cluster server (listening on `own`),
/// so one seed list can serve every member, each skipping itself.
fn is_own(addr: std::net::SocketAddr, own: &[std::net::SocketAddr]) -> bool {
    own.iter().any(|o| {
        *o == addr
            || (o.ip().is_unspecified() && o.port() == addr.port() && addr.ip().is_loopback())
    })
}

/// Opens a session to `addr`, over TLS when configured.
async fn connect(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&crate::tls::MeshTls>,
) -> Result<(), ractor_cluster::ClientConnectErr> {
    match tls {
        Some(tls) => {
            ractor_cluster::client_connect_enc(
                server,
                addr,
                tls.connector.clone(),
                tls.server_name.clone(),
            )
            .await
        }
        None => ractor_cluster::client_connect(server, addr).await,
    }
}

/// Connects over TLS to the members this node's peers know and it does not:
/// of two members, the one with the greater id connects (a client, which no
/// member knows, connects to all), so each pair opens one session.
async fn close_mesh(
    link: &MeshLink,
    server: &ActorRef<NodeServerMessage>,
    tls: &crate::tls::MeshTls,
    tried: &mut HashMap<String, Instant>,
) {
    let me = link.membership.local().clone();
    let known: Vec<String> = link.membership.peers().into_iter().map(|p| p.id).collect();
    let members: Vec<ActorRef<MemberMsg>> = link
        .members
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    for member in members {
        let Ok(text) = ask(&member, MemberMsg::Peers, Duration::from_secs(1)).await else {
            continue;
        };
        let Ok(theirs) = serde_json::from_str::<Vec<NodeInfo>>(&text) else {
            continue;
        };
        for peer in theirs {
            let ours = peer.id == me.id || known.contains(&peer.id);
            let initiate = !me.hosts_twins || me.id > peer.id;
            let recently = tried
                .get(&peer.id)
                .is_some_and(|t| t.elapsed() < Duration::from_secs(5));
            if ours || !initiate || recently || peer.cluster_addr.is_empty() {
                continue;
            }
            tried.insert(peer.id.clone(), Instant::now());
            let (server, tls) = (server.clone(), tls.clone());
            tokio::spawn(async move {
                if let Err(e) = connect(&server, &peer.cluster_addr, Some(&tls)).await {
                    tracing::warn!(node = %peer.id, addr = %peer.cluster_addr, error = ?e, "cannot reach a member");
                }
            });
        }
    }
}

/// When a member last answered, and what it said.
struct Seen {
    at: Instant,
    info: NodeInfo,
    member: ActorRef<MemberMsg>,
}

/// Asks every member of the group who it is, and swaps the answer in.
/// Returns whether the membership changed.
///
/// A member whose session closed leaves at once. One whose session is open
/// but that did not answer in time (a busy machine, a long pause) stays for
/// `grace` after its last answer: a single slow answer must not move its
/// twins away and back.
async fn refresh_members(
    link: &MeshLink,
    seen: &mut HashMap<String, Seen>,
    grace: Duration,
) -> bool {
    let membership = &link.membership;
    let local_id = membership.local().id.clone();
    let mut peers = Vec::new();
    let mut members = HashMap::new();
    let mut connected = Vec::new();
    for cell in ractor::pg::get_members(&MEMBERS_GROUP.to_string()) {
        if cell.get_id().is_local() {
            continue;
        }
        let member: ActorRef<MemberMsg> = cell.into();
        connected.push(member.get_id());
        match member
            .call(MemberMsg::Whois, Some(Duration::from_secs(1)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(text)) => {
                if let Ok(mut info) = serde_json::from_str::<NodeInfo>(&text)
                    && info.id != local_id
                {
                    info.local = false;
                    let at = Instant::now();
                    seen.insert(info.id.clone(), Seen { at, info, member });
                }
            }
            _ => continue,
        }
    }
    seen.retain(|_, s| connected.contains(&s.member.get_id()) && s.at.elapsed() < grace);
    for (id, s) in seen.iter() {
        members.insert(id.clone(), s.member.clone());
        peers.push(s.info.clone());
    }
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    peers.dedup_by(|a, b| a.id == b.id);
    let before = membership.peers();
    let mut changed = false;
    for p in peers
        .iter()
        .filter(|p| !before.iter().any(|b| b.id == p.id))
    {
        tracing::info!(node = %p.id, api = %p.api_addr, "node joined the cluster");
        metrics::counter!("hanzo_twin_cluster_joins_total").increment(1);
        changed = true;
    }
    for b in before
        .iter()
        .filter(|b| !peers.iter().any(|p| p.id == b.id))
    {
        tracing::warn!(node = %b.id, "node left the cluster (or stopped answering)");
        metrics::counter!("hanzo_twin_cluster_leaves_total").increment(1);
        changed = true;
    }
    metrics::gauge!("hanzo_twin_cluster_nodes").set((peers.len() + 1) as f64);
    *link.members.write().unwrap_or_else(|p| p.into_inner()) = members;
    membership.set_peers(peers);
    changed
}

#[cfg(test)]
mod tests {
    use super::{is_own, resolve};

    #[tokio::test]
    async fn a_seed_naming_this_nodes_own_listener_is_skipped() {
        let own = |listen: &'static str| async move { resolve(listen).await };
        let seed = |name: &'static str| async move { resolve(name).await };
        let is_self = |addrs: Vec<std::net::SocketAddr>, own: Vec<std::net::SocketAddr>| {
            addrs.into_iter().any(|a| is_own(a, &own))
        };
        let here = own("127.0.0.1:7946").await;
        assert!(is_self(seed("127.0.0.1:7946").await, here.clone()));
        assert!(is_self(seed("localhost:7946").await, here.clone()));
        // A listener on every interface is reached through loopback too.
        assert!(is_self(
            seed("127.0.0.1:7946").await,
            own("0.0.0.0:7946").await
        ));
        assert!(!is_self(seed("127.0.0.1:7947").await, here.clone()));
        assert!(!is_self(seed("127.0.0.2:7946").await, here.clone()));
        // Not resolvable (yet): nothing to join now, asked again later.
        assert!(seed("hanzo-twin-0.invalid:7946").await.is_empty());
    }
}
