//! What an infrastructure twin simulates: services with replicas, workers and
//! queues, the work a request costs, the calls it makes downstream, and the
//! traffic that enters the system. Written in a twin definition (YAML), or
//! built from Kubernetes objects (replicas and CPU limits) plus the call graph.

use crate::InfraError;
use rand::Rng;
use rand_distr::{Distribution as _, Exp, LogNormal, StandardNormal};
use serde::{Deserialize, Serialize};

/// How long something takes, in seconds: a probability distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Distribution {
    /// Memoryless, with this mean (queueing theory's M).
    Exponential { mean_s: f64 },
    /// Always this long (queueing theory's D).
    Constant { s: f64 },
    /// Log-normal with this median and 99th percentile: the usual shape of a
    /// service's latency.
    LogNormal { median_s: f64, p99_s: f64 },
}

/// The standard normal quantile at 0.99.
const Z99: f64 = 2.326_347_874_040_841;

impl Distribution {
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        match *self {
            Distribution::Exponential { mean_s } => match Exp::new(1.0 / mean_s) {
                Ok(exp) => exp.sample(rng),
                Err(_) => mean_s,
            },
            Distribution::Constant { s } => s,
            Distribution::LogNormal { median_s, p99_s } => {
                let sigma = (p99_s / median_s).ln() / Z99;
                match LogNormal::new(median_s.ln(), sigma) {
                    Ok(d) => d.sample(rng),
                    Err(_) => median_s * (sigma * rng.sample::<f64, _>(StandardNormal)).exp(),
                }
            }
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            Distribution::Exponential { mean_s } => mean_s,
            Distribution::Constant { s } => s,
            Distribution::LogNormal { median_s, p99_s } => {
                let sigma = (p99_s / median_s).ln() / Z99;
                median_s * (sigma * sigma / 2.0).exp()
            }
        }
    }

    pub fn check(&self, field: &str) -> Result<(), InfraError> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match *self {
            Distribution::Exponential { mean_s } if ok(mean_s) && mean_s > 0.0 => Ok(()),
            Distribution::Exponential { .. } => Err(InfraError::invalid(
                field,
                "exponential.mean_s must be a positive number of seconds",
            )),
            Distribution::Constant { s } if ok(s) => Ok(()),
            Distribution::Constant { .. } => Err(InfraError::invalid(
                field,
                "constant.s must be a number of seconds, 0 or more",
            )),
            Distribution::LogNormal { median_s, p99_s }
                if ok(median_s) && median_s > 0.0 && ok(p99_s) && p99_s >= median_s =>
            {
                Ok(())
            }
            Distribution::LogNormal { .. } => Err(InfraError::invalid(
                field,
                "log_normal needs 0 < median_s ≤ p99_s, in seconds",
            )),
        }
    }
}

fn one() -> u32 {
    1
}
fn certain() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}
fn default_startup() -> f64 {
    10.0
}
fn default_disk_limit() -> f64 {
    95.0
}

/// A service: a Deployment or StatefulSet behind a Service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceModel {
    pub name: String,
    /// Other names it answers to: its Kubernetes Services.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: u32,
    /// Requests one replica works on at once (its threads or connections);
    /// more wait in its queue, first come first served.
    #[serde(default = "one")]
    pub workers: u32,
    /// Requests waiting per replica beyond which new ones are refused at
    /// once (HTTP 503); unbounded when absent.
    #[serde(default)]
    pub queue_limit: Option<u32>,
    /// The CPU time one request needs on one whole core.
    pub service_time: Distribution,
    /// Cores one replica may use (its CPU limit). Workers beyond it share
    /// them, each slowed when it starts; absent: a core per worker.
    #[serde(default)]
    pub cpu_limit: Option<f64>,
    /// Cores one replica asks for (its CPU request): what autoscaling
    /// measures use against, and what a namespace's quota counts.
    #[serde(default)]
    pub cpu_request: Option<f64>,
    /// Services whose calls it accepts (its NetworkPolicies); absent: any.
    /// A call from another is dropped, as a policy drops its packets.
    #[serde(default)]
    pub ingress_from: Option<Vec<String>>,
    /// A HorizontalPodAutoscaler on CPU.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Seconds from a replica's (re)start to its readiness: a killed pod's
    /// replacement takes this long to take traffic.
    #[serde(default = "default_startup")]
    pub startup_s: f64,
    /// The share of its requests that write to disk (a database's), which
    /// fail while its disk is fuller than `disk_limit_percent`.
    #[serde(default)]
    pub writes: f64,
    #[serde(default = "default_disk_limit")]
    pub disk_limit_percent: f64,
    /// Calls each request makes, one after another, holding its worker.
    #[serde(default)]
    pub calls: Vec<CallModel>,
    /// Its pods' readiness probe: a replica that fails it takes no new
    /// requests until it passes again.
    #[serde(default)]
    pub readiness: Option<Readiness>,
    /// What a replica holds in memory, and its limit: past it the replica
    /// is OOM-killed.
    #[serde(default)]
    pub memory: Option<Memory>,
    /// Memory one replica asks for (its containers' `requests.memory`):
    /// what the scheduler needs free on a node.
    #[serde(default)]
    pub memory_request_mib: Option<f64>,
    /// A StatefulSet's: a pod on a node that stopped answering is not
    /// replaced elsewhere until the node is back (its identity may run
    /// once only), where a Deployment's is.
    #[serde(default)]
    pub stateful: bool,
    /// A standby promoted when this service has no running replica (a
    /// database's primary and its streaming replica).
    #[serde(default)]
    pub failover: Option<Failover>,
}

/// What a failover manager (Patroni, CloudNativePG, Stolon) does for a
/// primary: once it has had no running replica for `detect_s` (Patroni's
/// leader lock `ttl`), the standby is promoted, which takes `promote_s`;
/// then every name of the primary (its Services, `postgres-rw`) leads to
/// the standby. The old primary, when it comes back, rejoins as a replica:
/// nothing fails back by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    pub standby: String,
    #[serde(default = "thirty_s")]
    pub detect_s: f64,
    #[serde(default = "five_s")]
    pub promote_s: f64,
}

/// A cluster node, as the scheduler sees it: what it can allocate to pods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeModel {
    pub name: String,
    /// Allocatable cores, MiB and pods.
    pub cpu: f64,
    pub memory_mib: f64,
    #[serde(default = "max_pods")]
    pub pods: u32,
}

fn max_pods() -> u32 {
    110
}

fn ten_s() -> f64 {
    10.0
}
fn one_s() -> f64 {
    1.0
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn thirty_s() -> f64 {
    30.0
}
fn five_s() -> f64 {
    5.0
}
fn eviction_s() -> f64 {
    300.0
}

/// Kubernetes' readiness probe (a container's `readinessProbe`): every
/// `period_s` the kubelet asks each replica, which answers once a worker is
/// free to, within `timeout_s`, or fails. After `failure_threshold`
/// failures in a row the replica is taken out of its Services' endpoints
/// (it finishes what it holds), after `success_threshold` passes put back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    #[serde(default = "ten_s")]
    pub period_s: f64,
    #[serde(default = "one_s")]
    pub timeout_s: f64,
    #[serde(default = "three")]
    pub failure_threshold: u32,
    #[serde(default = "one")]
    pub success_threshold: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            period_s: ten_s(),
            timeout_s: one_s(),
            failure_threshold: three(),
            success_threshold: one(),
        }
    }
}

/// A replica's memory, in MiB: `base_mib` plus `per_request_mib` for each
/// request it holds (working or queued). Above `limit_mib` (its container's
/// memory limit) the kernel kills it (OOMKilled): what it held fails, and
/// it restarts after Kubernetes' crash back-off (10 s, doubling to 5 min,
/// reset after 10 min running) plus its startup time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub base_mib: f64,
    pub per_request_mib: f64,
    pub limit_mib: f64,
}

/// A caller's circuit breaker on one call (as resilience4j and Hystrix
/// have): after `consecutive_failures` failed attempts in a row it opens,
/// and calls fail at once, without reaching the service, for `open_s`;
/// then one trial call goes through (half-open): its success closes the
/// breaker, its failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "five")]
    pub consecutive_failures: u32,
    #[serde(default = "thirty_s")]
    pub open_s: f64,
}

fn default_namespace() -> String {
    "default".into()
}

/// Kubernetes' HorizontalPodAutoscaler on CPU utilization: every 15 s the
/// replica count becomes ⌈ready × utilization / target⌉ (within 10 % it
/// stays), between `min_replicas` and `max_replicas`; it scales down only to
/// the largest count wanted over the last five minutes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Mean CPU use as a percentage of the CPU request.
    pub target_cpu_percent: f64,
}

/// A namespace's ResourceQuota: what its pods may ask for together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub namespace: String,
    /// `requests.cpu`, cores.
    #[serde(default)]
    pub cpu_requests: Option<f64>,
    /// `pods`.
    #[serde(default)]
    pub pods: Option<u32>,
}

impl ServiceModel {
    /// One replica with one worker, no calls, and the defaults a twin
    /// definition gets.
    pub fn new(name: &str, service_time: Distribution) -> ServiceModel {
        ServiceModel {
            name: name.to_string(),
            aliases: Vec::new(),
            namespace: default_namespace(),
            replicas: 1,
            workers: 1,
            queue_limit: None,
            service_time,
            cpu_limit: None,
            cpu_request: None,
            ingress_from: None,
            autoscale: None,
            startup_s: default_startup(),
            writes: 0.0,
            disk_limit_percent: default_disk_limit(),
            calls: Vec::new(),
            readiness: None,
            memory: None,
            memory_request_mib: None,
            stateful: false,
            failover: None,
        }
    }
}

/// One downstream call a request makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallModel {
    /// The service called.
    pub to: String,
    /// The chance that a request makes it (a cache hit skips the database).
    #[serde(default = "certain")]
    pub probability: f64,
    /// Seconds the caller waits for an answer before giving the attempt up;
    /// absent: it waits as long as it takes.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Attempts after the first when one fails or times out.
    #[serde(default)]
    pub retries: u32,
    /// Whether the caller fails when the call does; `false` carries on (a
    /// cache the service can do without).
    #[serde(default = "yes")]
    pub required: bool,
    // No `skip_serializing_if`: a model is part of a saved simulation
    // state, whose encoding (bincode) is not self-describing.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
}

/// Requests per second over simulated time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RateProfile {
    /// A Poisson stream at this rate.
    Constant { rps: f64 },
    /// Poisson at `rps` from each `at_s` until the next (replayed load);
    /// zero before the first.
    Steps { steps: Vec<RateStep> },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateStep {
    pub at_s: f64,
    pub rps: f64,
}

impl RateProfile {
    /// The rate at `t` and when it next changes.
    pub(crate) fn at(&self, t: f64) -> (f64, f64) {
        match self {
            RateProfile::Constant { rps } => (*rps, f64::INFINITY),
            RateProfile::Steps { steps } => {
                let i = steps.partition_point(|s| s.at_s <= t);
                let rate = if i == 0 { 0.0 } else { steps[i - 1].rps };
                let next = steps.get(i).map_or(f64::INFINITY, |s| s.at_s);
                (rate, next)
            }
        }
    }
}

/// Requests entering the system at a service (from users, or a gateway's
/// clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryTraffic {
    pub service: String,
    pub rate: RateProfile,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficModel {
    pub entries: Vec<EntryTraffic>,
}

fn default_latency() -> Distribution {
    Distribution::Constant { s: 0.0005 }
}

/// The services and the network between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfraModel {
    pub services: Vec<ServiceModel>,
    /// One-way network latency of every call and answer (0.5 ms by default).
    #[serde(default = "default_latency")]
    pub network_latency: Distribution,
    /// ResourceQuotas, which cap autoscaling.
    #[serde(default)]
    pub quotas: Vec<Quota>,
    /// The cluster's nodes: replicas are scheduled onto them by their
    /// requests, and wait (Pending) when none has room. None: capacity is
    /// not modelled.
    #[serde(default)]
    pub nodes: Vec<NodeModel>,
    /// Seconds after a node stops answering (and the node controller's
    /// 40 s grace) before its pods are evicted and replaced elsewhere: the
    /// `tolerationSeconds` of `node.kubernetes.io/unreachable`, 300 by
    /// default.
    #[serde(default = "eviction_s")]
    pub eviction_s: f64,
}

impl InfraModel {
    /// Checks every value and that every call names a service, naming the
    /// field of the first problem.
    pub fn check(&self) -> Result<(), InfraError> {
        let mut names = std::collections::HashSet::new();
        self.network_latency.check("network_latency")?;
        if self.services.is_empty() {
            return Err(InfraError::invalid("services", "name at least one service"));
        }
        for (i, s) in self.services.iter().enumerate() {
            let field = |f: &str| format!("services[{i}].{f}");
            if s.name.is_empty() || !names.insert(s.name.as_str()) {
                return Err(InfraError::invalid(
                    field("name"),
                    format!("`{}` is empty or not unique", s.name),
                ));
            }
            if s.workers == 0 {
                return Err(InfraError::invalid(field("workers"), "must be at least 1"));
            }
            s.service_time.check(&field("service_time"))?;
            if let Some(cpu) = s.cpu_limit
                && !(cpu.is_finite() && cpu > 0.0)
            {
                return Err(InfraError::invalid(
                    field("cpu_limit"),
                    "must be a positive number of cores",
                ));
            }
            if !(s.startup_s.is_finite() && s.startup_s >= 0.0) {
                return Err(InfraError::invalid(
                    field("startup_s"),
                    "must be 0 or more seconds",
                ));
            }
            if !(0.0..=1.0).contains(&s.writes) {
                return Err(InfraError::invalid(
                    field("writes"),
                    "a share between 0 and 1",
                ));
            }
            if let Some(cpu) = s.cpu_request
                && !(cpu.is_finite() && cpu > 0.0)
            {
                return Err(InfraError::invalid(
                    field("cpu_request"),
                    "must be a positive number of cores",
                ));
            }
            if let Some(a) = s.autoscale
                && !(a.min_replicas >= 1
                    && a.max_replicas >= a.min_replicas
                    && a.target_cpu_percent.is_finite()
                    && a.target_cpu_percent > 0.0)
            {
                return Err(InfraError::invalid(
                    field("autoscale"),
                    "needs 1 ≤ min_replicas ≤ max_replicas and a positive target_cpu_percent",
                ));
            }
            if let Some(from) = &s.ingress_from
                && let Some(bad) = from.iter().find(|f| {
                    !self
                        .services
                        .iter()
                        .any(|o| &o.name == *f || o.aliases.contains(f))
                })
            {
                return Err(InfraError::invalid(
                    field("ingress_from"),
                    format!("there is no service `{bad}`"),
                ));
            }
            if let Some(r) = s.readiness
                && !(r.period_s.is_finite()
                    && r.period_s > 0.0
                    && r.timeout_s.is_finite()
                    && r.timeout_s > 0.0
                    && r.failure_threshold >= 1
                    && r.success_threshold >= 1)
            {
                return Err(InfraError::invalid(
                    field("readiness"),
                    "needs positive period_s and timeout_s, and thresholds of at least 1",
                ));
            }
            if let Some(m) = s.memory
                && !([m.base_mib, m.per_request_mib, m.limit_mib]
                    .iter()
                    .all(|v| v.is_finite() && *v >= 0.0)
                    && m.limit_mib > m.base_mib)
            {
                return Err(InfraError::invalid(
                    field("memory"),
                    "needs base_mib, per_request_mib and limit_mib in MiB, 0 or more, with limit_mib above base_mib",
                ));
            }
            if let Some(m) = s.memory_request_mib
                && !(m.is_finite() && m >= 0.0)
            {
                return Err(InfraError::invalid(
                    field("memory_request_mib"),
                    "must be 0 or more MiB",
                ));
            }
            if let Some(f) = &s.failover {
                match self.index(&f.standby) {
                    None => {
                        return Err(InfraError::invalid(
                            field("failover.standby"),
                            format!("there is no service `{}`", f.standby),
                        ));
                    }
                    Some(j) if j == i => {
                        return Err(InfraError::invalid(
                            field("failover.standby"),
                            "a service cannot be its own standby",
                        ));
                    }
                    Some(_) => {}
                }
                if ![f.detect_s, f.promote_s]
                    .iter()
                    .all(|v| v.is_finite() && *v >= 0.0)
                {
                    return Err(InfraError::invalid(
                        field("failover"),
                        "detect_s and promote_s are 0 or more seconds",
                    ));
                }
            }
            if let Some(n) = self.nodes.first()
                && !self.nodes.iter().any(|n| self.fits_empty(s, n))
            {
                return Err(InfraError::invalid(
                    field("cpu_request"),
                    format!(
                        "a replica of {} asks for {} cores and {} MiB, more than any node can allocate (node {}: {} cores, {} MiB)",
                        s.name,
                        s.cpu_request.unwrap_or(0.0),
                        s.memory_request_mib.unwrap_or(0.0),
                        n.name,
                        n.cpu,
                        n.memory_mib
                    ),
                ));
            }
            if !(0.0..=100.0).contains(&s.disk_limit_percent) {
                return Err(InfraError::invalid(
                    field("disk_limit_percent"),
                    "a percentage between 0 and 100",
                ));
            }
        }
        let mut node_names = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let field = |f: &str| format!("nodes[{i}].{f}");
            if n.name.is_empty() || !node_names.insert(n.name.as_str()) {
                return Err(InfraError::invalid(
                    field("name"),
                    format!("`{}` is empty or not unique", n.name),
                ));
            }
            if !(n.cpu.is_finite() && n.cpu > 0.0 && n.memory_mib.is_finite() && n.memory_mib > 0.0)
                || n.pods == 0
            {
                return Err(InfraError::invalid(
                    field("cpu"),
                    "a node needs positive cpu (cores), memory_mib and pods",
                ));
            }
        }
        if !(self.eviction_s.is_finite() && self.eviction_s >= 0.0) {
            return Err(InfraError::invalid("eviction_s", "0 or more seconds"));
        }
        for (i, s) in self.services.iter().enumerate() {
            for (j, c) in s.calls.iter().enumerate() {
                let field = |f: &str| format!("services[{i}].calls[{j}].{f}");
                if self.index(&c.to).is_none() {
                    return Err(InfraError::invalid(
                        field("to"),
                        format!("there is no service `{}`", c.to),
                    ));
                }
                if !(0.0..=1.0).contains(&c.probability) {
                    return Err(InfraError::invalid(field("probability"), "between 0 and 1"));
                }
                if let Some(t) = c.timeout_s
                    && !(t.is_finite() && t > 0.0)
                {
                    return Err(InfraError::invalid(
                        field("timeout_s"),
                        "a positive number of seconds",
                    ));
                }
                if let Some(b) = c.circuit_breaker
                    && !(b.consecutive_failures >= 1 && b.open_s.is_finite() && b.open_s > 0.0)
                {
                    return Err(InfraError::invalid(
                        field("circuit_breaker"),
                        "needs consecutive_failures of at least 1 and a positive open_s",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether one replica of `service` fits on `node` when it is empty.
    fn fits_empty(&self, service: &ServiceModel, node: &NodeModel) -> bool {
        service.cpu_request.unwrap_or(0.0) <= node.cpu + 1e-9
            && service.memory_request_mib.unwrap_or(0.0) <= node.memory_mib + 1e-9
    }

    /// The node called `name` (`node/x` or `x`).
    pub fn node(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("node/").unwrap_or(name);
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The service called `name`, or answering to it.
    pub fn service(&self, name: &str) -> Option<&ServiceModel> {
        self.index(name).map(|i| &self.services[i])
    }

    /// Its index in `services`.
    pub fn index(&self, name: &str) -> Option<usize> {
        let name = crate::fault::target_service(name);
        self.services
            .iter()
            .position(|s| s.name == name)
            .or_else(|| {
                self.services
                    .iter()
                    .position(|s| s.aliases.iter().any(|a| a == name))
            })
    }
}

impl TrafficModel {
    pub fn check(&self, model: &InfraModel) -> Result<(), InfraError> {
        for (i, e) in self.entries.iter().enumerate() {
            let field = |f: &str| format!("traffic.entries[{i}].{f}");
            if model.service(&e.service).is_none() {
                return Err(InfraError::invalid(
                    field("service"),
                    format!("there is no service `{}`", e.service),
                ));
            }
            let rates: Vec<f64> = match &e.rate {
                RateProfile::Constant { rps } => vec![*rps],
                RateProfile::Steps { steps } => {
                    if steps.windows(2).any(|w| w[1].at_s <= w[0].at_s)
                        || steps.iter().any(|s| !s.at_s.is_finite())
                    {
                        return Err(InfraError::invalid(
                            field("rate.steps"),
                            "steps must be in increasing order of at_s",
                        ));
                    }
                    steps.iter().map(|s| s.rps).collect()
                }
            };
            if rates.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
                return Err(InfraError::invalid(
                    field("rate"),
                    "rates are requests per second, 0 or more",
                ));
            }
        }
        Ok(())
    }
}
