//! How services protect themselves, and how Kubernetes protects them:
//! callers' circuit breakers, the kubelet's readiness probes, and memory
//! limits with their OOM kills and crash back-off.

use super::*;

/// Kubernetes' restart back-off after a crash: 10 s, doubling, at most
/// 5 minutes; forgotten after 10 minutes running.
const BACKOFF_FIRST_S: f64 = 10.0;
const BACKOFF_MAX_S: f64 = 300.0;
const BACKOFF_RESET_S: f64 = 600.0;

impl Replica {
    pub(super) fn new(ready: bool, since: f64) -> Replica {
        Replica {
            ready,
            terminated: false,
            generation: 0,
            busy: 0,
            queue: VecDeque::new(),
            ready_since: since,
            unready: false,
            probe_streak: 0,
            crashes: 0,
            node: None,
            pending: false,
            pending_since: 0.0,
        }
    }
}

impl InfraSim {
    /// Whether `service`'s call `call` may go out now: always without a
    /// breaker; with one, not while it is open, and only its one trial
    /// once it is half-open.
    pub(super) fn breaker_admits(&mut self, service: usize, call: usize) -> bool {
        let Some(policy) = self.model.services[service].calls[call].circuit_breaker else {
            return true;
        };
        let now = self.now;
        let b = &mut self.breakers[service][call];
        match b.open_until {
            None => true,
            Some(until) if now < until => false,
            // Half-open: one trial at a time (a lost one is given up after
            // another open period).
            Some(_) => match b.trial {
                Some(since) if now < since + policy.open_s => false,
                _ => {
                    b.trial = Some(now);
                    true
                }
            },
        }
    }

    /// The outcome of an attempt of the call `req` is making now.
    pub(super) fn breaker_outcome(&mut self, req: Handle, ok: bool) {
        let Some(r) = self.requests.get(req.0).filter(|r| r.serial == req.1) else {
            return;
        };
        let Some(&call) = r.plan.get(r.next) else {
            return;
        };
        let service = r.service;
        let Some(policy) = self.model.services[service].calls[call].circuit_breaker else {
            return;
        };
        let now = self.now;
        let b = &mut self.breakers[service][call];
        match b.open_until {
            // Attempts sent before it opened: they change nothing.
            Some(until) if now < until => {}
            // Half-open: the trial decides.
            Some(_) => {
                *b = if ok {
                    Breaker::default()
                } else {
                    Breaker {
                        failures: 0,
                        open_until: Some(now + policy.open_s),
                        trial: None,
                    }
                };
            }
            None if ok => b.failures = 0,
            None => {
                b.failures += 1;
                if b.failures >= policy.consecutive_failures {
                    b.failures = 0;
                    b.open_until = Some(now + policy.open_s);
                }
            }
        }
    }

    /// The kubelet probes each running replica of `service`: it passes
    /// when a worker would be free to answer within the probe's timeout.
    pub(super) fn probe_readiness(&mut self, service: usize) {
        let Some(probe) = self.model.services[service].readiness else {
            return;
        };
        let m = &self.model.services[service];
        let capacity = m.cpu_limit.unwrap_or(f64::from(m.workers))
            * (1.0 - self.conditions[service].cpu_stress);
        let workers = f64::from(m.workers);
        let mean = m.service_time.mean();
        let mut out_of_rotation = 0;
        for r in self.replicas[service]
            .iter_mut()
            .filter(|r| r.ready && !r.terminated)
        {
            // Work ahead of the probe, shared by the workers, each slowed
            // when more run than the replica has CPU for.
            let ahead = if r.busy < m.workers {
                0.0
            } else {
                (r.queue.len() as f64 + 1.0) * mean / workers
            };
            let slowdown = (f64::from(r.busy.max(1)) / capacity.max(1e-6)).max(1.0);
            let passed = ahead * slowdown <= probe.timeout_s;
            match (r.unready, passed) {
                (false, true) | (true, false) => r.probe_streak = 0,
                (false, false) => {
                    r.probe_streak += 1;
                    if r.probe_streak >= probe.failure_threshold {
                        r.unready = true;
                        r.probe_streak = 0;
                        out_of_rotation += 1;
                    }
                }
                (true, true) => {
                    r.probe_streak += 1;
                    if r.probe_streak >= probe.success_threshold {
                        r.unready = false;
                        r.probe_streak = 0;
                    }
                }
            }
        }
        self.services[service].unready_events += out_of_rotation;
    }

    /// A replica past its memory limit is OOM-killed: what it held fails,
    /// and it restarts after the crash back-off.
    pub(super) fn check_memory(&mut self, service: usize, replica: usize) {
        let Some(memory) = self.model.services[service].memory else {
            return;
        };
        let r = &mut self.replicas[service][replica];
        let held = f64::from(r.busy) + r.queue.len() as f64;
        if memory.base_mib + held * memory.per_request_mib <= memory.limit_mib {
            return;
        }
        if self.now - r.ready_since >= BACKOFF_RESET_S {
            r.crashes = 0;
        }
        r.crashes += 1;
        let backoff = (BACKOFF_FIRST_S * 2f64.powi(r.crashes.saturating_sub(1).min(16) as i32))
            .min(BACKOFF_MAX_S);
        self.services[service].oom_kills += 1;
        self.kill_after(service, replica, backoff);
    }
}
