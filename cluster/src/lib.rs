//! Cluster membership and twin placement.
//!
//! A node always knows the set of live nodes it belongs to (just itself until it
//! joins others) and places every twin id on exactly one of them by rendezvous
//! (highest-random-weight) hashing: every node computes the same owner from the
//! same member list, and when a node leaves only its own twins move.

pub mod mesh;
pub mod tls;

use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};

/// A member of the cluster.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: String,
    /// Where its HTTP API listens.
    pub api_addr: String,
    /// Whether this entry is the node answering.
    pub local: bool,
    /// Whether the node hosts twins (a client-only member does not, and owns
    /// nothing).
    #[serde(default = "yes")]
    pub hosts_twins: bool,
    /// Where its cluster server listens (`host:port`), for members that close
    /// the mesh themselves (TLS).
    #[serde(default)]
    pub cluster_addr: String,
}

fn yes() -> bool {
    true
}

/// The live members as this node sees them. Shared between the API and whatever
/// maintains membership.
#[derive(Clone)]
pub struct Membership {
    local: NodeInfo,
    peers: Arc<RwLock<Vec<NodeInfo>>>,
    /// Counts changes of `peers`.
    version: Arc<std::sync::atomic::AtomicU64>,
}

impl Membership {
    /// A membership of one: this node alone.
    pub fn single(id: impl Into<String>, api_addr: impl Into<String>) -> Membership {
        Membership {
            local: NodeInfo {
                id: id.into(),
                api_addr: api_addr.into(),
                local: true,
                hosts_twins: true,
                cluster_addr: String::new(),
            },
            peers: Arc::new(RwLock::new(Vec::new())),
            version: Arc::default(),
        }
    }

    /// The same, listening for peers at `addr`.
    pub fn with_cluster_addr(mut self, addr: impl Into<String>) -> Membership {
        self.local.cluster_addr = addr.into();
        self
    }

    /// The membership of a client that hosts no twins: it never owns one.
    pub fn client(id: impl Into<String>) -> Membership {
        let mut m = Membership::single(id, "");
        m.local.hosts_twins = false;
        m
    }

    pub fn local(&self) -> &NodeInfo {
        &self.local
    }

    /// The other live nodes.
    pub fn peers(&self) -> Vec<NodeInfo> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the other live nodes (the mesh keeps this current).
    pub fn set_peers(&self, peers: Vec<NodeInfo>) {
        let mut current = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if *current != peers {
            *current = peers;
            self.version
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How many times the other live nodes changed.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Every live node, this one first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut all = vec![self.local.clone()];
        // A poisoned lock only means a writer panicked mid-update of a Vec of
        // plain data; the data is still usable.
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        all.extend(peers.iter().cloned());
        all
    }

    /// The node that owns `key` (a twin id) among the live nodes that host
    /// twins; `None` when there is none.
    pub fn owner(&self, key: &str) -> Option<NodeInfo> {
        let nodes: Vec<NodeInfo> = self.nodes().into_iter().filter(|n| n.hosts_twins).collect();
        let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
        rendezvous_owner(&ids, key).map(|i| nodes[i].clone())
    }

    /// Whether this node owns `key`.
    pub fn is_local(&self, key: &str) -> bool {
        self.owner(key).is_some_and(|o| o.id == self.local.id)
    }
}

impl hanzo_twin_actors::Placement for Membership {
    fn owns(&self, key: &str) -> bool {
        self.is_local(key)
    }
}

/// Index of the node with the highest weight for `key`, `None` for no nodes.
pub fn rendezvous_owner(nodes: &[&str], key: &str) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .max_by_key(|(_, node)| (weight(node, key), **node))
        .map(|(i, _)| i)
}

/// A stable 64-bit weight of (node, key): FNV-1a, then the splitmix64 finaliser
/// to spread FNV's weak low bits. Stable across processes and versions, unlike
/// `std`'s hasher.
fn weight(node: &str, key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain([0xff]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        (0..3000).map(|i| format!("twin-{i}")).collect()
    }

    #[test]
    fn single_node_owns_everything() {
        let m = Membership::single("a", "127.0.0.1:8082");
        assert!(keys().iter().all(|k| m.is_local(k)));
    }

    #[test]
    fn placement_is_balanced_and_deterministic() {
        let nodes = ["n1", "n2", "n3"];
        let mut counts = [0usize; 3];
        for k in keys() {
            let i = rendezvous_owner(&nodes, &k).expect("owner");
            assert_eq!(Some(i), rendezvous_owner(&nodes, &k));
            counts[i] += 1;
        }
        for c in counts {
            assert!((800..=1200).contains(&c), "unbalanced: {counts:?}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let three = ["n1", "n2", "n3"];
        let two = ["n1", "n3"];
        for k in keys() {
            let before = three[rendezvous_owner(&three, &k).expect("owner")];
            let after = two[rendezvous_owner(&two, &k).expect("owner")];
            if before != "n2" {
                assert_eq!(before, after, "{k} moved without cause");
            }
        }
    }

    #[test]
    fn a_client_owns_nothing() {
        let m = Membership::client("sdk");
        assert!(m.owner("twin-1").is_none());
        m.set_peers(vec![NodeInfo {
            id: "n1".into(),
            api_addr: "127.0.0.1:1".into(),
            local: false,
            hosts_twins: true,
            cluster_addr: String::new(),
        }]);
        assert!(
            keys()
                .iter()
                .all(|k| m.owner(k).is_some_and(|o| o.id == "n1"))
        );
    }

    #[test]
    fn no_nodes_no_owner() {
        assert_eq!(rendezvous_owner(&[], "x"), None);
    }
}
