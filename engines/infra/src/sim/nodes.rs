//! Pods and nodes inside the simulation: pods killed, crashed or stopped,
//! replicas scheduled onto nodes by their requests (kube-scheduler's
//! filter and a simplified score), pods that wait (Pending) until a node
//! has room, and nodes that stop: their pods die at once and, after the
//! eviction timeout, a Deployment's are replaced on the nodes left while a
//! StatefulSet's wait for their node.

use super::*;
use crate::report::NodeReport;

/// The node controller's `node-monitor-grace-period`: how long a node is
/// silent before it is marked unreachable (and its eviction clock starts).
const NODE_MONITOR_GRACE_S: f64 = 40.0;

/// A fault's target must exist: a node for a node's stop, a service for
/// the rest.
pub(super) fn check_target(
    model: &InfraModel,
    fault: &Fault,
    field: &str,
) -> Result<(), InfraError> {
    if matches!(fault.action, FaultAction::StopNode) {
        if model.node(&fault.target).is_none() {
            let known: Vec<&str> = model.nodes.iter().map(|n| n.name.as_str()).collect();
            return Err(InfraError::invalid(
                field,
                format!(
                    "there is no node `{}` (nodes: {})",
                    fault.target,
                    if known.is_empty() {
                        "none modelled; give topology.nodes or include_nodes".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    } else if model.index(fault.service()).is_none() {
        return Err(InfraError::invalid(
            field,
            format!("there is no service `{}`", fault.service()),
        ));
    }
    Ok(())
}

impl InfraSim {
    /// The pod is deleted (a pod kill): what it held fails, and its
    /// replacement is scheduled anew (onto the room it left, or another
    /// node's), ready after the service's startup time.
    pub(super) fn kill(&mut self, service: usize, replica: usize) {
        self.stop(service, replica);
        self.replace_pod(service, replica);
        self.schedule_pending();
    }

    /// Its container dies and restarts in place `delay` seconds later (a
    /// crash's back-off), ready after the service's startup time.
    pub(super) fn kill_after(&mut self, service: usize, replica: usize, delay: f64) {
        self.stop(service, replica);
        self.ready_after_startup(service, replica, delay);
    }

    /// The replica stops: what it held fails, and work scheduled on it is
    /// void (a new generation).
    pub(super) fn stop(&mut self, service: usize, replica: usize) {
        let rep = &mut self.replicas[service][replica];
        if rep.ready {
            self.services[service].replica_seconds += self.now - rep.ready_since;
        }
        let old = rep.generation;
        rep.generation += 1;
        rep.ready = false;
        rep.busy = 0;
        rep.queue.clear();
        let victims: Vec<Handle> = self
            .requests
            .iter()
            .filter(|(_, r)| r.service == service && r.replica == Some((replica, old)))
            .map(|(k, r)| (k, r.serial))
            .collect();
        for v in victims {
            self.fail(v);
        }
        let rep = &mut self.replicas[service][replica];
        rep.unready = false;
        rep.probe_streak = 0;
        self.availability(service);
    }

    /// What the replicas placed on `node` request of it: cores, MiB, pods.
    fn node_use(&self, node: usize) -> (f64, f64, u32) {
        let mut used = (0.0, 0.0, 0);
        for (s, replicas) in self.replicas.iter().enumerate() {
            let m = &self.model.services[s];
            for _ in replicas.iter().filter(|r| r.node == Some(node)) {
                used.0 += m.cpu_request.unwrap_or(0.0);
                used.1 += m.memory_request_mib.unwrap_or(0.0);
                used.2 += 1;
            }
        }
        used
    }

    /// Where kube-scheduler would put a new replica of `service`: among
    /// answering nodes with room for its requests (NodeResourcesFit), the
    /// one with the fewest replicas of the service (its default spreading),
    /// then the least allocated; `None` when none has room.
    fn pick_node(&self, service: usize) -> Option<usize> {
        let m = &self.model.services[service];
        let (cpu, memory) = (
            m.cpu_request.unwrap_or(0.0),
            m.memory_request_mib.unwrap_or(0.0),
        );
        let mut best: Option<(usize, u32, f64)> = None;
        for (n, node) in self.model.nodes.iter().enumerate() {
            if !self.node_up[n] {
                continue;
            }
            let (cpu_used, memory_used, pods) = self.node_use(n);
            if pods >= node.pods
                || cpu_used + cpu > node.cpu + 1e-9
                || memory_used + memory > node.memory_mib + 1e-9
            {
                continue;
            }
            let same = self.replicas[service]
                .iter()
                .filter(|r| r.node == Some(n))
                .count() as u32;
            let free = ((node.cpu - cpu_used - cpu) / node.cpu
                + (node.memory_mib - memory_used - memory) / node.memory_mib)
                / 2.0;
            let better = match best {
                None => true,
                Some((_, best_same, best_free)) => {
                    same < best_same || (same == best_same && free > best_free + 1e-12)
                }
            };
            if better {
                best = Some((n, same, free));
            }
        }
        best.map(|(n, _, _)| n)
    }

    /// The replicas at time 0, placed in order; those that find no room
    /// start Pending.
    pub(super) fn place_initial(&mut self) {
        if self.model.nodes.is_empty() {
            return;
        }
        for service in 0..self.replicas.len() {
            for replica in 0..self.replicas[service].len() {
                match self.pick_node(service) {
                    Some(n) => self.replicas[service][replica].node = Some(n),
                    None => {
                        let r = &mut self.replicas[service][replica];
                        r.ready = false;
                        r.pending = true;
                        r.pending_since = 0.0;
                    }
                }
            }
            self.availability(service);
        }
    }

    /// A new pod for the replica slot (its generation already set):
    /// placed on a node and ready after the service's startup time, or
    /// Pending until a node has room.
    pub(super) fn launch(&mut self, service: usize, replica: usize) {
        let node = if self.model.nodes.is_empty() {
            None
        } else {
            match self.pick_node(service) {
                Some(n) => Some(n),
                None => {
                    let r = &mut self.replicas[service][replica];
                    if !r.pending {
                        r.pending = true;
                        r.pending_since = self.now;
                    }
                    return;
                }
            }
        };
        let r = &mut self.replicas[service][replica];
        r.pending = false;
        r.node = node;
        self.ready_after_startup(service, replica, 0.0);
    }

    /// The replica (as its generation is now) is ready `delay` seconds
    /// and the service's startup time from now.
    pub(super) fn ready_after_startup(&mut self, service: usize, replica: usize, delay: f64) {
        let generation = self.replicas[service][replica].generation;
        let startup = self.model.services[service].startup_s;
        self.schedule(
            self.now + delay + startup,
            Event::ReplicaReady {
                service,
                replica,
                generation,
            },
        );
    }

    /// The replica's pod is gone from its node: its room is free.
    pub(super) fn release(&mut self, service: usize, replica: usize) {
        self.replicas[service][replica].node = None;
    }

    /// The replica's pod is deleted and its controller makes another: on
    /// nodes, it joins the pods waiting to be scheduled (placed by the
    /// next [`InfraSim::schedule_pending`], longest waiting first, as
    /// kube-scheduler takes them); without, it starts at once.
    pub(super) fn replace_pod(&mut self, service: usize, replica: usize) {
        self.release(service, replica);
        if self.model.nodes.is_empty() {
            self.launch(service, replica);
            return;
        }
        let r = &mut self.replicas[service][replica];
        r.pending = true;
        r.pending_since = self.now;
    }

    /// Pending replicas, longest waiting first, placed where there is
    /// room now (the scheduler retries them when the cluster changes).
    pub(super) fn schedule_pending(&mut self) {
        if self.model.nodes.is_empty() {
            return;
        }
        let mut waiting: Vec<(f64, usize, usize)> = self
            .replicas
            .iter()
            .enumerate()
            .flat_map(|(s, rs)| {
                rs.iter()
                    .enumerate()
                    .filter(|(_, r)| r.pending && !r.terminated)
                    .map(move |(i, r)| (r.pending_since, s, i))
            })
            .collect();
        waiting.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        // `launch` places it where there is room, or leaves it waiting (a
        // waiting pod has nothing scheduled, so a new generation costs it
        // nothing either way).
        for (_, service, replica) in waiting {
            self.replicas[service][replica].generation += 1;
            self.launch(service, replica);
        }
    }

    /// The node stops: every pod on it dies at once (what it held fails);
    /// they are evicted after the node controller's grace and the
    /// eviction timeout, unless it is back first.
    pub(super) fn stop_node(&mut self, node: usize) {
        if !self.node_up[node] {
            return;
        }
        self.node_up[node] = false;
        self.node_epoch[node] += 1;
        for service in 0..self.replicas.len() {
            for replica in 0..self.replicas[service].len() {
                let r = &self.replicas[service][replica];
                if r.node == Some(node) && !r.terminated {
                    self.stop(service, replica);
                }
            }
        }
        self.schedule(
            self.now + NODE_MONITOR_GRACE_S + self.model.eviction_s,
            Event::Evict {
                node,
                epoch: self.node_epoch[node],
            },
        );
    }

    /// The node is back: the pods still bound to it start again, and
    /// pending ones may fit on it.
    pub(super) fn restart_node(&mut self, node: usize) {
        if self.node_up[node] {
            return;
        }
        self.node_up[node] = true;
        for service in 0..self.replicas.len() {
            for replica in 0..self.replicas[service].len() {
                let r = &mut self.replicas[service][replica];
                if r.node == Some(node) && !r.terminated && !r.ready {
                    r.generation += 1;
                    self.ready_after_startup(service, replica, 0.0);
                }
            }
        }
        self.schedule_pending();
    }

    /// The node has been unreachable past the eviction timeout: a
    /// Deployment's pods on it are deleted and replaced where there is
    /// room; a StatefulSet's stay bound to it (Kubernetes will not run a
    /// second copy of their identity while the first may still run).
    pub(super) fn evict(&mut self, node: usize, epoch: u64) {
        if self.node_up[node] || self.node_epoch[node] != epoch {
            return;
        }
        for service in 0..self.replicas.len() {
            if self.model.services[service].stateful {
                continue;
            }
            for replica in 0..self.replicas[service].len() {
                let r = &self.replicas[service][replica];
                if r.node == Some(node) && !r.terminated {
                    self.services[service].evictions += 1;
                    self.replace_pod(service, replica);
                }
            }
        }
        self.schedule_pending();
    }

    pub(super) fn node_reports(&self) -> Vec<NodeReport> {
        self.model
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let (cpu, memory, pods) = self.node_use(n);
                NodeReport {
                    name: node.name.clone(),
                    ready: self.node_up[n],
                    pods,
                    cpu_requested: cpu,
                    cpu: node.cpu,
                    memory_requested_mib: memory,
                    memory_mib: node.memory_mib,
                }
            })
            .collect()
    }
}
