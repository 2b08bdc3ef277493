//! The simulator: events in simulated time, handled in order (ties in the
//! order they were scheduled), all randomness from one seeded ChaCha8
//! stream, so a model, traffic, faults and seed give the same run.
//!
//! A request arriving at a service goes to a ready replica picked at random
//! (kube-proxy's choice), waits there for a free worker (first come, first
//! served), works for its service time (slowed when more workers run than
//! the replica has CPU), then makes its calls one after another, holding its
//! worker while it waits for each answer. A call that fails or times out is
//! tried again up to its retries; then a required call fails the request,
//! and the failure travels up to its caller. Answers that come too late are
//! ignored, as are the answers of requests whose caller is gone.

use crate::InfraError;
use crate::assertion::{self, Assertion, Check, Evidence, Verdict, When};
use crate::fault::{Fault, FaultAction};
use crate::model::{InfraModel, TrafficModel};
use crate::report::{self, Bucket, EntryReport, Latency, Report, ServiceReport};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use slab::Slab;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

mod autoscale;
mod failover;
mod nodes;
mod probes;
mod reporting;
mod resilience;
mod whatif;
use nodes::check_target;
use whatif::routing;

/// A request slot and the serial of the request in it (slots are reused;
/// an event for a finished request finds another serial there).
type Handle = (usize, u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Event {
    /// The next outside request for entry `entry`.
    External {
        entry: usize,
    },
    /// A request reaches its service.
    Arrive {
        req: Handle,
    },
    /// A request's own work is done (on replica generation `generation`).
    WorkDone {
        req: Handle,
        generation: u64,
    },
    /// A child's answer reaches its caller.
    Answer {
        parent: Handle,
        child: u64,
        ok: bool,
    },
    /// A caller stops waiting for `child`.
    Timeout {
        parent: Handle,
        child: u64,
    },
    FaultStart {
        fault: usize,
    },
    FaultEnd {
        fault: usize,
    },
    /// A replacement replica is ready.
    ReplicaReady {
        service: usize,
        replica: usize,
        generation: u64,
    },
    /// A service's autoscaler looks at its CPU.
    Autoscale {
        service: usize,
    },
    /// The kubelet probes a service's replicas' readiness.
    Readiness {
        service: usize,
    },
    /// A node stopped answering `eviction_s` (and the node controller's
    /// grace) ago: its pods are evicted, unless it came back since (a new
    /// `epoch`).
    Evict {
        node: usize,
        epoch: u64,
    },
    /// The failover manager looks at a primary down since `since`.
    FailoverCheck {
        service: usize,
        since: f64,
    },
    /// The primary's standby is promoted.
    Promoted {
        service: usize,
    },
}

/// How often an autoscaler looks, and how far back it looks before scaling
/// down (Kubernetes' defaults).
const AUTOSCALE_PERIOD_S: f64 = 15.0;
const SCALE_DOWN_WINDOW_S: f64 = 300.0;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Scheduled {
    time: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .time
            .total_cmp(&self.time)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    serial: u64,
    service: usize,
    /// Who waits for the answer; none for an outside request.
    parent: Option<Handle>,
    /// The outside request's entry index and start, for end-to-end latency.
    entry: Option<(usize, f64)>,
    arrived: f64,
    /// It reached its service (and counts there).
    present: bool,
    /// Refused at once (no ready replica, or a full queue).
    rejected: bool,
    /// Where it waits or works: replica and its generation.
    replica: Option<(usize, u64)>,
    working: bool,
    /// The calls it makes (indices into its service's calls), and the next.
    plan: Vec<usize>,
    next: usize,
    attempt: u32,
    waiting_on: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Replica {
    ready: bool,
    /// Scaled away: takes nothing new, finishes what it holds.
    terminated: bool,
    /// Bumped when it dies: work scheduled before is void.
    generation: u64,
    busy: u32,
    queue: VecDeque<Handle>,
    ready_since: f64,
    /// Failing its readiness probe: out of its Services' endpoints (it
    /// finishes what it holds).
    unready: bool,
    /// Probe results in a row: failures while ready, passes while not.
    probe_streak: u32,
    /// Crashes (OOM kills) in a row, for the restart back-off.
    crashes: u32,
    /// The node it is placed on (none when nodes are not modelled, or
    /// while it is pending).
    node: Option<usize>,
    /// No node had room for it: it waits for one, since `pending_since`.
    pending: bool,
    pending_since: f64,
}

/// What faults do to a service now.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Conditions {
    blocked: u32,
    extra_latency_s: f64,
    jitter_s: f64,
    loss: f64,
    cpu_stress: f64,
    disk_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServiceStats {
    arrivals: u64,
    ok: u64,
    failed: u64,
    rejected: u64,
    call_timeouts: u64,
    retries: u64,
    #[serde(with = "report::histogram_serde")]
    latency: Histogram<u64>,
    wait_sum: f64,
    waits: u64,
    sojourn_sum: f64,
    departures: u64,
    present: u64,
    area: f64,
    since: f64,
    replica_seconds: f64,
    /// CPU-seconds of work started, and at the autoscaler's last look.
    cpu_used: f64,
    cpu_seen: f64,
    /// The autoscaler's wishes over its scale-down window: (time, replicas).
    wishes: VecDeque<(f64, u32)>,
    peak_replicas: u32,
    /// Calls it did not make because their circuit breaker was open.
    short_circuited: u64,
    /// Replicas taken out of rotation by their readiness probe, and
    /// OOM-killed.
    unready_events: u64,
    oom_kills: u64,
    /// Pods evicted from a node that stopped answering; standbys promoted
    /// in its place.
    evictions: u64,
    failovers: u64,
}

/// A caller's circuit breaker on one of its calls.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Breaker {
    failures: u32,
    /// Open until then; after it, half-open.
    open_until: Option<f64>,
    /// Half-open and its trial call out since then.
    trial: Option<f64>,
}

/// A watched assertion's tally over its window.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    assertion: Assertion,
    subject: Option<usize>,
    from: f64,
    to: f64,
    #[serde(with = "report::histogram_serde")]
    latency: Histogram<u64>,
    ok: u64,
    failed: u64,
    last_failure: Option<f64>,
    last_ok: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EntryStats {
    service: usize,
    sent: u64,
    ok: u64,
    failed: u64,
    #[serde(with = "report::histogram_serde")]
    latency: Histogram<u64>,
    timeline: Vec<Bucket>,
}

/// A running infrastructure simulation. `Clone` is a fork: the copy goes on
/// from the same instant, with the same future.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InfraSim {
    model: InfraModel,
    traffic: TrafficModel,
    /// Each service's call targets, by index.
    call_targets: Vec<Vec<usize>>,
    /// Per service, which callers its network policies let in (none: all).
    ingress: Vec<Option<Vec<bool>>>,
    replicas: Vec<Vec<Replica>>,
    conditions: Vec<Conditions>,
    faults: Vec<Fault>,
    requests: Slab<Request>,
    events: BinaryHeap<Scheduled>,
    seq: u64,
    serial: u64,
    now: f64,
    rng: ChaCha8Rng,
    handled: u64,
    services: Vec<ServiceStats>,
    entries: Vec<EntryStats>,
    probes: Vec<Probe>,
    bucket_s: f64,
    /// Per service, per call.
    breakers: Vec<Vec<Breaker>>,
    /// Topology patches applied while running (a what-if fork's), in order.
    patches: Vec<crate::TopologyPatch>,
    /// Per node: whether it answers, and how many times it stopped.
    node_up: Vec<bool>,
    node_epoch: Vec<u64>,
    /// Per service, the service that answers to its names now: itself,
    /// or the standby promoted in its place.
    routes: Vec<usize>,
    /// Per service (as its names lead): since when nothing runs behind
    /// it, and every such outage.
    down_since: Vec<Option<f64>>,
    outages: Vec<Vec<Outage>>,
}

/// A time when nothing ran behind a service's names.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Outage {
    from: f64,
    to: Option<f64>,
    /// Ended by a standby's promotion (not by the service coming back).
    promoted: bool,
}

impl InfraSim {
    /// A simulation at time 0 with every replica ready, outside requests
    /// arriving as `traffic` says, and `faults` scheduled.
    pub fn new(
        model: InfraModel,
        traffic: TrafficModel,
        faults: Vec<Fault>,
        seed: u64,
    ) -> Result<InfraSim, InfraError> {
        model.check()?;
        traffic.check(&model)?;
        let index = |name: &str| model.index(name);
        for (i, f) in faults.iter().enumerate() {
            f.check(&format!("faults[{i}]"))?;
            check_target(&model, f, &format!("faults[{i}].target"))?;
        }
        let (call_targets, ingress) = routing(&model);
        let replicas = model
            .services
            .iter()
            .map(|s| (0..s.replicas).map(|_| Replica::new(true, 0.0)).collect())
            .collect();
        let services = model
            .services
            .iter()
            .map(|s| ServiceStats {
                arrivals: 0,
                ok: 0,
                failed: 0,
                rejected: 0,
                call_timeouts: 0,
                retries: 0,
                latency: report::histogram(),
                wait_sum: 0.0,
                waits: 0,
                sojourn_sum: 0.0,
                departures: 0,
                present: 0,
                area: 0.0,
                since: 0.0,
                replica_seconds: 0.0,
                cpu_used: 0.0,
                cpu_seen: 0.0,
                wishes: VecDeque::new(),
                peak_replicas: s.replicas,
                short_circuited: 0,
                unready_events: 0,
                oom_kills: 0,
                evictions: 0,
                failovers: 0,
            })
            .collect();
        let entries = traffic
            .entries
            .iter()
            .filter_map(|e| index(&e.service))
            .map(|service| EntryStats {
                service,
                sent: 0,
                ok: 0,
                failed: 0,
                latency: report::histogram(),
                timeline: Vec::new(),
            })
            .collect();
        let breakers = model
            .services
            .iter()
            .map(|s| vec![Breaker::default(); s.calls.len()])
            .collect();
        let mut sim = InfraSim {
            breakers,
            conditions: vec![Conditions::default(); model.services.len()],
            model,
            traffic,
            call_targets,
            ingress,
            replicas,
            faults: Vec::new(),
            requests: Slab::new(),
            events: BinaryHeap::new(),
            seq: 0,
            serial: 0,
            now: 0.0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            handled: 0,
            services,
            entries,
            probes: Vec::new(),
            bucket_s: 1.0,
            patches: Vec::new(),
            node_up: Vec::new(),
            node_epoch: Vec::new(),
            routes: Vec::new(),
            down_since: Vec::new(),
            outages: Vec::new(),
        };
        let services = sim.model.services.len();
        sim.node_up = vec![true; sim.model.nodes.len()];
        sim.node_epoch = vec![0; sim.model.nodes.len()];
        sim.routes = (0..services).collect();
        sim.down_since = vec![None; services];
        sim.outages = vec![Vec::new(); services];
        sim.place_initial();
        for entry in 0..sim.entries.len() {
            sim.schedule_external(entry, 0.0);
        }
        for service in 0..sim.model.services.len() {
            if sim.model.services[service].autoscale.is_some() {
                sim.schedule(AUTOSCALE_PERIOD_S, Event::Autoscale { service });
            }
            if let Some(r) = sim.model.services[service].readiness {
                sim.schedule(r.period_s, Event::Readiness { service });
            }
        }
        for fault in faults {
            sim.inject(fault)?;
        }
        Ok(sim)
    }

    /// Timeline buckets of this many simulated seconds (1 by default).
    pub fn with_bucket(mut self, bucket_s: f64) -> Result<InfraSim, InfraError> {
        if !(bucket_s.is_finite() && bucket_s > 0.0) || self.now > 0.0 {
            return Err(InfraError::invalid(
                "bucket_s",
                "a positive number of seconds, set before the run starts",
            ));
        }
        self.bucket_s = bucket_s;
        Ok(self)
    }

    /// Schedules a fault (its `at_s` is from the run's start; one in the
    /// past starts now).
    pub fn inject(&mut self, fault: Fault) -> Result<(), InfraError> {
        let n = self.faults.len();
        fault.check(&format!("faults[{n}]"))?;
        check_target(&self.model, &fault, &format!("faults[{n}].target"))?;
        let start = fault.at_s.max(self.now);
        if let Some(d) = fault.duration_s
            && !matches!(fault.action, FaultAction::KillPod { .. })
        {
            self.schedule(start + d, Event::FaultEnd { fault: n });
        }
        self.schedule(start, Event::FaultStart { fault: n });
        self.faults.push(fault);
        Ok(())
    }

    pub fn now(&self) -> f64 {
        self.now
    }

    pub fn model(&self) -> &InfraModel {
        &self.model
    }

    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// Events handled so far.
    pub fn events_handled(&self) -> u64 {
        self.handled
    }

    /// Runs every event up to simulated time `until`.
    pub fn run_until(&mut self, until: f64) {
        while let Some(next) = self.events.peek() {
            if next.time > until {
                break;
            }
            let Some(Scheduled { time, event, .. }) = self.events.pop() else {
                break;
            };
            self.now = time;
            self.handled += 1;
            self.handle(event);
        }
        if until.is_finite() && until > self.now {
            self.now = until;
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.model.index(name)
    }

    /// The topology patches applied while running, in order.
    pub fn patches(&self) -> &[crate::TopologyPatch] {
        &self.patches
    }

    fn schedule(&mut self, time: f64, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            time,
            seq: self.seq,
            event,
        });
    }

    /// The next outside arrival after `from`: exponential gaps at the
    /// current rate, starting over where the rate changes (memoryless, so
    /// exact for piecewise-constant rates).
    fn schedule_external(&mut self, entry: usize, from: f64) {
        let rate = &self.traffic.entries[entry].rate;
        let mut t = from;
        loop {
            let (rps, change) = rate.at(t);
            if rps > 0.0 {
                let gap = -(1.0 - self.rng.random::<f64>()).ln() / rps;
                if t + gap < change {
                    self.schedule(t + gap, Event::External { entry });
                    return;
                }
            }
            if !change.is_finite() {
                return;
            }
            t = change;
        }
    }

    fn alive(&self, (key, serial): Handle) -> bool {
        self.requests.get(key).is_some_and(|r| r.serial == serial)
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::External { entry } => {
                self.schedule_external(entry, self.now);
                let service = self.routes[self.entries[entry].service];
                self.entries[entry].sent += 1;
                let req = self.create(service, None, Some((entry, self.now)));
                if self.conditions[service].blocked > 0 {
                    // Nothing answers across a partition.
                    self.fail(req);
                } else {
                    self.arrive(req);
                }
            }
            Event::Arrive { req } => {
                if self.alive(req) {
                    self.arrive(req);
                }
            }
            Event::WorkDone { req, generation } => {
                let Some(r) = self.requests.get(req.0).filter(|r| r.serial == req.1) else {
                    return;
                };
                if r.replica.map(|(_, g)| g) != Some(generation) {
                    return;
                }
                let service = r.service;
                let writes = self.model.services[service].writes;
                let c = &self.conditions[service];
                if writes > 0.0
                    && c.disk_percent > self.model.services[service].disk_limit_percent
                    && self.rng.random::<f64>() < writes
                {
                    self.fail(req);
                } else {
                    self.next_call(req);
                }
            }
            Event::Answer { parent, child, ok } => {
                if !self.waiting(parent, child) {
                    return;
                }
                if ok {
                    self.breaker_outcome(parent, true);
                    if let Some(p) = self.requests.get_mut(parent.0) {
                        p.waiting_on = None;
                        p.next += 1;
                        p.attempt = 0;
                    }
                    self.next_call(parent);
                } else {
                    self.call_failed(parent);
                }
            }
            Event::Timeout { parent, child } => {
                if self.waiting(parent, child) {
                    if let Some(p) = self.requests.get(parent.0) {
                        self.services[p.service].call_timeouts += 1;
                    }
                    self.call_failed(parent);
                }
            }
            Event::FaultStart { fault } => self.fault_starts(fault),
            Event::FaultEnd { fault } => self.fault_ends(fault),
            Event::ReplicaReady {
                service,
                replica,
                generation,
            } => {
                let r = &mut self.replicas[service][replica];
                if r.generation == generation && !r.ready && !r.terminated && !r.pending {
                    r.ready = true;
                    r.ready_since = self.now;
                    self.availability(service);
                }
            }
            Event::Autoscale { service } => {
                self.autoscale(service);
                self.schedule(self.now + AUTOSCALE_PERIOD_S, Event::Autoscale { service });
            }
            Event::Readiness { service } => {
                self.probe_readiness(service);
                if let Some(r) = self.model.services[service].readiness {
                    self.schedule(self.now + r.period_s, Event::Readiness { service });
                }
            }
            Event::Evict { node, epoch } => self.evict(node, epoch),
            Event::FailoverCheck { service, since } => self.failover_check(service, since),
            Event::Promoted { service } => self.promote(service),
        }
    }

    fn waiting(&self, parent: Handle, child: u64) -> bool {
        self.requests
            .get(parent.0)
            .is_some_and(|p| p.serial == parent.1 && p.waiting_on == Some(child))
    }

    fn create(
        &mut self,
        service: usize,
        parent: Option<Handle>,
        entry: Option<(usize, f64)>,
    ) -> Handle {
        self.serial += 1;
        let serial = self.serial;
        let calls = &self.model.services[service].calls;
        let mut plan = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if c.probability >= 1.0 || self.rng.random::<f64>() < c.probability {
                plan.push(i);
            }
        }
        let key = self.requests.insert(Request {
            serial,
            service,
            parent,
            entry,
            arrived: self.now,
            present: false,
            rejected: false,
            replica: None,
            working: false,
            plan,
            next: 0,
            attempt: 0,
            waiting_on: None,
        });
        (key, serial)
    }

    fn set_present(&mut self, service: usize, delta: i64) {
        let s = &mut self.services[service];
        s.area += s.present as f64 * (self.now - s.since);
        s.since = self.now;
        s.present = s.present.saturating_add_signed(delta);
    }

    /// A request reaches its service: a ready replica takes it, or it is
    /// refused.
    fn arrive(&mut self, req: Handle) {
        let service = self.requests[req.0].service;
        self.requests[req.0].arrived = self.now;
        self.requests[req.0].present = true;
        self.services[service].arrivals += 1;
        self.set_present(service, 1);
        let ready: Vec<usize> = (0..self.replicas[service].len())
            .filter(|&i| self.replicas[service][i].ready && !self.replicas[service][i].unready)
            .collect();
        let Some(&replica) = ready.choose(&mut self.rng) else {
            self.reject(req, service);
            return;
        };
        let workers = self.model.services[service].workers;
        let limit = self.model.services[service].queue_limit;
        let r = &mut self.replicas[service][replica];
        let generation = r.generation;
        self.requests[req.0].replica = Some((replica, generation));
        if r.busy < workers {
            r.busy += 1;
            self.start(req, service, replica);
        } else if limit.is_some_and(|l| r.queue.len() >= l as usize) {
            self.requests[req.0].replica = None;
            self.reject(req, service);
            return;
        } else {
            r.queue.push_back(req);
        }
        self.check_memory(service, replica);
    }

    /// A worker (already counted busy) takes the request.
    fn start(&mut self, req: Handle, service: usize, replica: usize) {
        let model = &self.model.services[service];
        let r = &self.replicas[service][replica];
        let capacity = model.cpu_limit.unwrap_or(f64::from(model.workers))
            * (1.0 - self.conditions[service].cpu_stress);
        let speed = (capacity / f64::from(r.busy)).clamp(1e-6, 1.0);
        let cpu = model.service_time.sample(&mut self.rng);
        let work = cpu / speed;
        let generation = r.generation;
        let wait = self.now - self.requests[req.0].arrived;
        let stats = &mut self.services[service];
        stats.cpu_used += cpu;
        stats.wait_sum += wait;
        stats.waits += 1;
        self.requests[req.0].working = true;
        self.schedule(self.now + work, Event::WorkDone { req, generation });
    }

    /// Makes the request's next call, or answers when it has made them all.
    fn next_call(&mut self, req: Handle) {
        let r = &self.requests[req.0];
        let Some(&call) = r.plan.get(r.next) else {
            self.finish(req, true);
            return;
        };
        let service = r.service;
        if !self.breaker_admits(service, call) {
            self.services[service].short_circuited += 1;
            self.give_up_call(req);
            return;
        }
        let target = self.routes[self.call_targets[service][call]];
        let timeout = self.model.services[service].calls[call].timeout_s;
        let child = self.create(target, Some(req), None);
        self.requests[req.0].waiting_on = Some(child.1);
        if let Some(t) = timeout {
            self.schedule(
                self.now + t,
                Event::Timeout {
                    parent: req,
                    child: child.1,
                },
            );
        }
        let admitted = self.ingress[target]
            .as_ref()
            .is_none_or(|from| from[service]);
        match self.delivery(target).filter(|_| admitted) {
            Some(delay) => self.schedule(self.now + delay, Event::Arrive { req: child }),
            // Lost on the way: the caller hears nothing (and times out).
            None => {
                self.requests.remove(child.0);
            }
        }
    }

    /// How long a message to or from `service` takes, or `None` when it is
    /// lost (partition, packet loss).
    fn delivery(&mut self, service: usize) -> Option<f64> {
        let c = &self.conditions[service];
        if c.blocked > 0 {
            return None;
        }
        let (loss, extra, jitter) = (c.loss, c.extra_latency_s, c.jitter_s);
        if loss > 0.0 && self.rng.random::<f64>() < loss {
            return None;
        }
        let mut delay = self.model.network_latency.sample(&mut self.rng) + extra;
        if jitter > 0.0 {
            delay += self.rng.random::<f64>() * jitter;
        }
        Some(delay)
    }

    fn call_failed(&mut self, req: Handle) {
        self.breaker_outcome(req, false);
        let Some(r) = self.requests.get_mut(req.0) else {
            return;
        };
        r.waiting_on = None;
        let service = r.service;
        let index = r.plan[r.next];
        let call = &self.model.services[service].calls[index];
        if r.attempt < call.retries {
            r.attempt += 1;
            self.services[service].retries += 1;
            self.next_call(req);
            return;
        }
        self.give_up_call(req);
    }

    /// The caller stops trying its current call: a required one fails the
    /// request, an optional one is skipped.
    fn give_up_call(&mut self, req: Handle) {
        let Some(r) = self.requests.get_mut(req.0) else {
            return;
        };
        r.waiting_on = None;
        let service = r.service;
        let index = r.plan[r.next];
        // Given up: a write the caller sent is lost.
        let target = self.routes[self.call_targets[service][index]];
        if self.model.services[target].writes > 0.0 && !self.probes.is_empty() {
            self.lost_write();
        }
        let Some(r) = self.requests.get_mut(req.0) else {
            return;
        };
        let call = &self.model.services[service].calls[index];
        if call.required {
            self.fail(req);
        } else {
            r.next += 1;
            r.attempt = 0;
            self.next_call(req);
        }
    }

    fn fail(&mut self, req: Handle) {
        self.finish(req, false);
    }

    fn reject(&mut self, req: Handle, service: usize) {
        self.services[service].rejected += 1;
        self.requests[req.0].rejected = true;
        self.fail(req);
    }

    /// The request answers (or fails): its worker goes to the next in its
    /// replica's queue, and the answer travels to its caller.
    fn finish(&mut self, req: Handle, ok: bool) {
        let r = self.requests.remove(req.0);
        let service = r.service;
        let elapsed = self.now - r.arrived;
        if let Some((replica, generation)) = r.replica {
            let rep = &mut self.replicas[service][replica];
            if rep.generation == generation {
                if r.working {
                    rep.busy -= 1;
                    if let Some(next) = rep.queue.pop_front() {
                        rep.busy += 1;
                        self.start(next, service, replica);
                    }
                } else {
                    rep.queue.retain(|h| *h != req);
                }
            }
        }
        if r.present {
            self.set_present(service, -1);
            let stats = &mut self.services[service];
            stats.sojourn_sum += elapsed;
            stats.departures += 1;
            if ok {
                stats.ok += 1;
                let _ = stats.latency.record(report::micros(elapsed));
            } else if !r.rejected {
                stats.failed += 1;
            }
        }
        if !self.probes.is_empty() {
            let outside = r.parent.is_none() && r.entry.is_some();
            let elapsed = r
                .entry
                .filter(|_| outside)
                .map_or(elapsed, |(_, t)| self.now - t);
            self.probe(service, ok, elapsed, r.present, outside);
        }
        if let Some(parent) = r.parent {
            if let Some(delay) = self.delivery(service) {
                self.schedule(
                    self.now + delay,
                    Event::Answer {
                        parent,
                        child: r.serial,
                        ok,
                    },
                );
            }
        } else if let Some((entry, started)) = r.entry {
            let latency = self.now - started;
            let bucket = (self.now / self.bucket_s) as usize;
            let e = &mut self.entries[entry];
            if e.timeline.len() <= bucket {
                e.timeline.resize(bucket + 1, Bucket::default());
            }
            let b = &mut e.timeline[bucket];
            if ok {
                e.ok += 1;
                b.ok += 1;
                let _ = e.latency.record(report::micros(latency));
            } else {
                e.failed += 1;
                b.failed += 1;
            }
            b.latency_sum_s += latency;
            b.max_latency_s = b.max_latency_s.max(latency);
        }
    }

    fn fault_starts(&mut self, index: usize) {
        let fault = self.faults[index].clone();
        if let FaultAction::StopNode = fault.action {
            if let Some(node) = self.model.node(&fault.target) {
                self.stop_node(node);
            }
            return;
        }
        let Some(service) = self.index(fault.service()) else {
            return;
        };
        let c = &mut self.conditions[service];
        match fault.action {
            FaultAction::KillPod { count } => {
                for _ in 0..count {
                    let ready: Vec<usize> = (0..self.replicas[service].len())
                        .filter(|&i| self.replicas[service][i].ready)
                        .collect();
                    let Some(&replica) = ready.choose(&mut self.rng) else {
                        break;
                    };
                    self.kill(service, replica);
                }
            }
            FaultAction::BlockTraffic => c.blocked += 1,
            FaultAction::Delay {
                latency_s,
                jitter_s,
            } => {
                c.extra_latency_s += latency_s;
                c.jitter_s += jitter_s;
            }
            FaultAction::Loss { percent } => c.loss = (c.loss + percent / 100.0).min(1.0),
            FaultAction::StressCpu { load_percent } => {
                c.cpu_stress = (c.cpu_stress + load_percent / 100.0).min(0.99)
            }
            FaultAction::FillDisk { percent } => c.disk_percent = c.disk_percent.max(percent),
            FaultAction::StopNode => {}
        }
    }

    fn fault_ends(&mut self, index: usize) {
        let fault = self.faults[index].clone();
        if let FaultAction::StopNode = fault.action {
            if let Some(node) = self.model.node(&fault.target) {
                self.restart_node(node);
            }
            return;
        }
        let Some(service) = self.index(fault.service()) else {
            return;
        };
        let c = &mut self.conditions[service];
        match fault.action {
            FaultAction::KillPod { .. } => {}
            FaultAction::BlockTraffic => c.blocked = c.blocked.saturating_sub(1),
            FaultAction::Delay {
                latency_s,
                jitter_s,
            } => {
                c.extra_latency_s = (c.extra_latency_s - latency_s).max(0.0);
                c.jitter_s = (c.jitter_s - jitter_s).max(0.0);
            }
            FaultAction::Loss { percent } => c.loss = (c.loss - percent / 100.0).max(0.0),
            FaultAction::StressCpu { load_percent } => {
                c.cpu_stress = (c.cpu_stress - load_percent / 100.0).max(0.0)
            }
            FaultAction::FillDisk { .. } => c.disk_percent = 0.0,
            FaultAction::StopNode => {}
        }
    }
}
