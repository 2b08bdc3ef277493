//! Forming the cluster with ractor_cluster: a node server listens for peers
//! (authenticated by a shared cookie), connects to its seeds, and the mesh
//! closes transitively (a node joining one member meets them all). Each node
//! runs one small cluster-visible member actor in a process group; who is in
//! the group is the membership, and each member answers with its id and API
//! address. Joins, leaves and failures are logged and counted.

use crate::{Membership, NodeInfo};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};
use std::time::Duration;

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
    /// How often membership is re-read, besides on every session change.
    pub refresh: Duration,
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
}

struct Member;

struct MemberState {
    info: String,
    twins: hanzo_twin_actors::TwinNode,
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
        }
        Ok(())
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

/// A running mesh: the node server and the membership it keeps current.
pub struct Mesh {
    pub server: ActorRef<NodeServerMessage>,
    member: ActorRef<MemberMsg>,
    refresher: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cluster.listen `{0}` is not host:port")]
    Listen(String),
    #[error("cannot start the cluster node server: {0}")]
    Start(String),
}

impl Mesh {
    /// Starts the node server and the member actor, joins the seeds (retrying
    /// in the background until each answers), and keeps `membership` current.
    pub async fn start(
        config: MeshConfig,
        membership: Membership,
        twins: hanzo_twin_actors::TwinNode,
    ) -> Result<Mesh, MeshError> {
        let (host, port) = config
            .listen
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| MeshError::Listen(config.listen.clone()))?;
        let ip: std::net::IpAddr = host
            .parse()
            .map_err(|_| MeshError::Listen(config.listen.clone()))?;
        let local = membership.local().clone();
        let server = NodeServer::new(
            port,
            config.cookie.clone(),
            local.id.clone(),
            host.clone(),
            None,
            Some(ractor_cluster::node::NodeConnectionMode::Transitive),
        )
        .with_listen_addr(ip);
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let info = serde_json::to_string(&local).map_err(|e| MeshError::Start(e.to_string()))?;
        let (member, _) = Actor::spawn(None, Member, MemberState { info, twins })
            .await
            .map_err(|e| MeshError::Start(e.to_string()))?;
        let (wake, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: "membership".into(),
            subscription: Box::new(SessionEvents(wake)),
        });
        for seed in config.seeds.clone() {
            let server = server.clone();
            tokio::spawn(async move {
                let mut wait = Duration::from_millis(100);
                loop {
                    match ractor_cluster::client_connect(&server, seed.as_str()).await {
                        Ok(()) => {
                            tracing::info!(%seed, "joined the cluster through its seed");
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(%seed, error = ?e, "cannot reach the seed yet; retrying");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
        let refresh = config.refresh;
        let refresher = tokio::spawn(async move {
            loop {
                refresh_members(&membership).await;
                tokio::select! {
                    _ = woken.recv() => {
                        // Let the session finish its state exchange first.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        while woken.try_recv().is_ok() {}
                    }
                    _ = tokio::time::sleep(refresh) => {}
                }
            }
        });
        Ok(Mesh {
            server,
            member,
            refresher,
        })
    }

    pub fn stop(self) {
        self.refresher.abort();
        self.member.stop(None);
        self.server.stop(None);
    }
}

/// Asks every member of the group who it is, and swaps the answer in.
async fn refresh_members(membership: &Membership) {
    let local_id = membership.local().id.clone();
    let mut peers = Vec::new();
    for cell in ractor::pg::get_members(&MEMBERS_GROUP.to_string()) {
        if cell.get_id().is_local() {
            continue;
        }
        let member: ActorRef<MemberMsg> = cell.into();
        // A peer that does not answer in time is not counted live.
        match member
            .call(MemberMsg::Whois, Some(Duration::from_secs(1)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(text)) => {
                if let Ok(mut info) = serde_json::from_str::<NodeInfo>(&text)
                    && info.id != local_id
                {
                    info.local = false;
                    peers.push(info);
                }
            }
            _ => continue,
        }
    }
    peers.sort_by(|a, b| a.id.cmp(&b.id));
    peers.dedup_by(|a, b| a.id == b.id);
    let before = membership.peers();
    for p in peers
        .iter()
        .filter(|p| !before.iter().any(|b| b.id == p.id))
    {
        tracing::info!(node = %p.id, api = %p.api_addr, "node joined the cluster");
        metrics::counter!("hanzo_twin_cluster_joins_total").increment(1);
    }
    for b in before
        .iter()
        .filter(|b| !peers.iter().any(|p| p.id == b.id))
    {
        tracing::warn!(node = %b.id, "node left the cluster (or stopped answering)");
        metrics::counter!("hanzo_twin_cluster_leaves_total").increment(1);
    }
    metrics::gauge!("hanzo_twin_cluster_nodes").set((peers.len() + 1) as f64);
    membership.set_peers(peers);
}
