//! What chaos injects, in Chaos Mesh's vocabulary: PodChaos `pod-kill`,
//! NetworkChaos `partition`, `delay` and `loss`, StressChaos CPU, and a disk
//! filled (the spec's `fill_disk`), and a node stopped. A fault targets one
//! service (its Deployment, StatefulSet or Service) or node (`node/x`),
//! starts at a point of the run and lasts `duration_s` (a kill is instant;
//! its pods come back by themselves).

use crate::InfraError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The scenario's name (`pod-kill`), which reports and assertions use.
    pub name: String,
    /// The service: `deployment/x`, `statefulset/x`, `service/x` or `x`.
    pub target: String,
    pub action: FaultAction,
    /// Seconds into the run when it starts.
    pub at_s: f64,
    /// How long it lasts; absent: to the end of the run.
    #[serde(default)]
    pub duration_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Kills `count` ready replicas; the requests on them fail, and each is
    /// replaced after the service's `startup_s`.
    KillPod { count: u32 },
    /// A network partition: calls to the target and its answers are dropped,
    /// so callers wait out their timeouts.
    BlockTraffic,
    /// Every call to the target is delayed by this much more (one way),
    /// plus up to `jitter_s`.
    Delay { latency_s: f64, jitter_s: f64 },
    /// Each call to the target, or its answer, is lost with this chance.
    Loss { percent: f64 },
    /// A stressor takes this share of each replica's CPU.
    StressCpu { load_percent: f64 },
    /// The target's disk is this full; above its `disk_limit_percent` its
    /// writes fail.
    FillDisk { percent: f64 },
    /// The target node (`node/x`) stops, as a cloud VM stopped (Chaos
    /// Mesh's AWSChaos `ec2-stop`, GCPChaos `node-stop`): its pods die at
    /// once, and after the eviction timeout a Deployment's are replaced on
    /// nodes with room; it starts again after `duration_s`.
    StopNode,
}

impl Fault {
    /// The service a target names.
    pub fn service(&self) -> &str {
        target_service(&self.target)
    }

    pub fn check(&self, field: &str) -> Result<(), InfraError> {
        let named = |f: &str| {
            if field.is_empty() {
                f.to_string()
            } else {
                format!("{field}.{f}")
            }
        };
        if !(self.at_s.is_finite() && self.at_s >= 0.0) {
            return Err(InfraError::invalid(
                named("at_s"),
                "0 or more seconds into the run",
            ));
        }
        if let Some(d) = self.duration_s
            && !(d.is_finite() && d > 0.0)
        {
            return Err(InfraError::invalid(
                named("duration_s"),
                "a positive number of seconds",
            ));
        }
        let percent = |v: f64| (0.0..=100.0).contains(&v);
        let ok = match self.action {
            FaultAction::KillPod { count } => count >= 1,
            FaultAction::BlockTraffic => true,
            FaultAction::Delay {
                latency_s,
                jitter_s,
            } => {
                latency_s.is_finite() && latency_s >= 0.0 && jitter_s.is_finite() && jitter_s >= 0.0
            }
            FaultAction::Loss { percent: p } => percent(p),
            FaultAction::StressCpu { load_percent } => {
                percent(load_percent) && load_percent < 100.0
            }
            FaultAction::FillDisk { percent: p } => percent(p),
            FaultAction::StopNode => self.target.starts_with("node/"),
        };
        if ok {
            Ok(())
        } else {
            Err(InfraError::invalid(
                named("action"),
                "kill_pod.count is at least 1; percentages are 0 to 100 (stress below 100); delays are 0 or more seconds; stop_node targets node/<name>",
            ))
        }
    }
}

/// `deployment/x`, `statefulset/x`, `service/x` → `x`.
pub fn target_service(target: &str) -> &str {
    match target.split_once('/') {
        Some(("deployment" | "statefulset" | "service" | "svc" | "deploy" | "sts", name)) => name,
        _ => target,
    }
}
