//! Assertions as steady-state probes (LitmusChaos' model): each watches
//! its window of the run (during, before or after a scenario, or
//! throughout) and tallies what it sees into a verdict with evidence.

use super::*;

impl InfraSim {
    /// Watches `assertion` over the run (its window from the scenarios
    /// scheduled now); [`InfraSim::verdicts`] gives its outcome. `field`
    /// names it in errors (`assertions[2]`).
    pub fn watch(&mut self, assertion: Assertion, field: &str) -> Result<(), InfraError> {
        let refuse = |message: String| {
            InfraError::invalid(field, format!("`{}`: {message}", assertion.text))
        };
        let subject = match &assertion.check {
            Check::RespondsWithin { service, .. }
            | Check::P99Below { service, .. }
            | Check::ErrorRateBelow { service, .. }
            | Check::RecoversWithin { service, .. }
            | Check::FailoverWithin { service, .. } => Some(
                self.index(service)
                    .ok_or_else(|| refuse(format!("there is no service `{service}`")))?,
            ),
            Check::NoDataLoss | Check::NoRequestsLost => None,
        };
        let scenario = |name: &str| -> Result<(f64, f64), InfraError> {
            let key = assertion::scenario_key(name);
            let fault = self
                .faults
                .iter()
                .find(|f| assertion::scenario_key(&f.name) == key)
                .ok_or_else(|| {
                    let known: Vec<&str> = self.faults.iter().map(|f| f.name.as_str()).collect();
                    refuse(format!(
                        "no scenario named `{name}`; the run's scenarios are: {}",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ))
                })?;
            Ok((fault.at_s, self.fault_end(fault)))
        };
        let (from, to) = match &assertion.when {
            When::Throughout => (0.0, f64::INFINITY),
            When::During(s) => scenario(s)?,
            When::Before(s) => (0.0, scenario(s)?.0),
            When::After(s) => (scenario(s)?.1, f64::INFINITY),
        };
        let from = match (&assertion.check, &assertion.when) {
            (Check::RecoversWithin { .. }, When::Throughout) => {
                // From the first fault on the service.
                let service = subject.unwrap_or(0);
                self.faults
                    .iter()
                    .filter(|f| self.index(f.service()) == Some(service))
                    .map(|f| f.at_s)
                    .min_by(f64::total_cmp)
                    .ok_or_else(|| {
                        refuse(
                            "no scenario targets this service, so there is nothing to recover from"
                                .into(),
                        )
                    })?
            }
            (Check::RecoversWithin { .. }, When::During(s)) => scenario(s)?.0,
            _ => from,
        };
        // Recovery from a fault: until the next one starts.
        let to = if matches!(assertion.check, Check::RecoversWithin { .. }) {
            self.faults
                .iter()
                .map(|f| f.at_s)
                .filter(|&t| t > from)
                .min_by(f64::total_cmp)
                .unwrap_or(f64::INFINITY)
        } else {
            to
        };
        self.probes.push(Probe {
            assertion,
            subject,
            from,
            to,
            latency: report::histogram(),
            ok: 0,
            failed: 0,
            last_failure: None,
            last_ok: None,
        });
        Ok(())
    }

    /// When a fault's effect ends: its duration, or a kill's replacement.
    pub(super) fn fault_end(&self, fault: &Fault) -> f64 {
        match (fault.action, fault.duration_s) {
            (FaultAction::KillPod { .. }, _) => {
                fault.at_s
                    + self
                        .model
                        .service(fault.service())
                        .map_or(0.0, |s| s.startup_s)
            }
            (_, Some(d)) => fault.at_s + d,
            (_, None) => f64::INFINITY,
        }
    }

    /// A request ended at `service`: what the probes watching it see.
    pub(super) fn probe(
        &mut self,
        service: usize,
        ok: bool,
        elapsed: f64,
        present: bool,
        outside: bool,
    ) {
        let writes = self.model.services[service].writes > 0.0;
        for p in &mut self.probes {
            if self.now < p.from || self.now >= p.to {
                continue;
            }
            let counts = match p.assertion.check {
                Check::NoDataLoss => present && writes,
                Check::NoRequestsLost => outside,
                // A service named in an assertion is followed through a
                // failover: its names lead to the standby then.
                _ => p.subject.map(|s| self.routes[s]) == Some(service) && (present || outside),
            };
            if !counts {
                continue;
            }
            if ok {
                p.ok += 1;
                p.last_ok = Some(self.now);
                let _ = p.latency.record(report::micros(elapsed));
            } else {
                p.failed += 1;
                p.last_failure = Some(self.now);
            }
        }
    }

    /// A call to a service that writes was given up: data-loss probes
    /// count it.
    pub(super) fn lost_write(&mut self) {
        for p in &mut self.probes {
            if matches!(p.assertion.check, Check::NoDataLoss)
                && self.now >= p.from
                && self.now < p.to
            {
                p.failed += 1;
                p.last_failure = Some(self.now);
            }
        }
    }

    /// Each watched assertion's outcome so far, with its evidence.
    pub fn verdicts(&self) -> Vec<Verdict> {
        self.judge(true)
    }

    /// The verdicts of a run that goes on (a running twin): those whose
    /// window is not over are `pending`, their outcome so far.
    pub fn verdicts_so_far(&self) -> Vec<Verdict> {
        self.judge(false)
    }

    fn judge(&self, ended: bool) -> Vec<Verdict> {
        self.probes
            .iter()
            .map(|p| {
                let latency = Latency::of(&p.latency);
                let requests = p.ok + p.failed;
                let mut evidence = Evidence {
                    from_s: p.from,
                    to_s: p.to.min(self.now),
                    requests,
                    ok: p.ok,
                    failed: p.failed,
                    latency,
                    recovery_s: None,
                };
                let none = requests == 0;
                let pending = !ended && self.now < p.to;
                let (passed, reason) = match &p.assertion.check {
                    _ if self.now < p.from && pending => (
                        false,
                        format!(
                            "not judged yet: the window starts at {:.0} s, the twin is at {:.0} s",
                            p.from, self.now
                        ),
                    ),
                    _ if self.now < p.from => (
                        false,
                        format!(
                            "the run ended at {:.0} s, before the window that starts at {:.0} s",
                            self.now, p.from
                        ),
                    ),
                    _ if none && !matches!(p.assertion.check, Check::NoDataLoss | Check::RecoversWithin { .. } | Check::FailoverWithin { .. }) => {
                        (false, "no requests in the window to judge by".to_string())
                    }
                    Check::RespondsWithin { limit_s, .. } => (
                        p.failed == 0 && latency.max_s <= *limit_s,
                        format!(
                            "{} of {requests} answered, the slowest in {:.3} s (limit {limit_s} s); p99 {:.3} s",
                            p.ok, latency.max_s, latency.p99_s
                        ),
                    ),
                    Check::P99Below { limit_s, .. } => (
                        latency.p99_s <= *limit_s && p.ok > 0,
                        format!("p99 {:.3} s over {} answers (limit {limit_s} s)", latency.p99_s, p.ok),
                    ),
                    Check::ErrorRateBelow { percent, .. } => {
                        let rate = p.failed as f64 / requests as f64 * 100.0;
                        (rate < *percent, format!("{rate:.2} % of {requests} failed (limit {percent} %)"))
                    }
                    Check::RecoversWithin { limit_s, .. } => match p.last_failure {
                        None => {
                            evidence.recovery_s = Some(0.0);
                            (true, "no request failed after the fault".to_string())
                        }
                        Some(last) if p.last_ok.is_some_and(|ok| ok > last) => {
                            let recovery = last - p.from;
                            evidence.recovery_s = Some(recovery);
                            (
                                recovery <= *limit_s,
                                format!("the last failure came {recovery:.1} s after the fault (limit {limit_s} s)"),
                            )
                        }
                        Some(_) => (false, "still failing at the end of the run".to_string()),
                    },
                    Check::FailoverWithin { limit_s, .. } => {
                        let role = p.subject.unwrap_or(0);
                        let name = &self.model.services[role].name;
                        let outages = self.outages_in(role, p.from, p.to);
                        let worst = outages
                            .iter()
                            .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)));
                        match worst {
                            None => {
                                evidence.recovery_s = Some(0.0);
                                (true, format!("nothing was down behind {name}'s names in the window: no failover was needed"))
                            }
                            Some(&(from, to, open, promoted)) => {
                                let took = to - from;
                                evidence.recovery_s = Some(took);
                                let n = outages.len();
                                let times = if n == 1 { String::new() } else { format!(" (the longest of {n} outages)") };
                                if open {
                                    (
                                        !ended && took <= *limit_s,
                                        format!("{name} has had nothing running for {took:.1} s, since {from:.1} s{times} (limit {limit_s} s)"),
                                    )
                                } else if promoted {
                                    let standby = self.model.services[role]
                                        .failover
                                        .as_ref()
                                        .map_or("its standby", |f| f.standby.as_str());
                                    (
                                        took <= *limit_s,
                                        format!("{standby} took over {took:.1} s after {name} lost its last running replica at {from:.1} s{times} (limit {limit_s} s)"),
                                    )
                                } else {
                                    (
                                        took <= *limit_s,
                                        format!("{name} ran again {took:.1} s after it lost its last running replica at {from:.1} s, with no standby promoted{times} (limit {limit_s} s)"),
                                    )
                                }
                            }
                        }
                    }
                    Check::NoDataLoss => (
                        p.failed == 0,
                        format!(
                            "{} requests to services that write failed or were given up by their callers ({} succeeded)",
                            p.failed, p.ok
                        ),
                    ),
                    Check::NoRequestsLost => (
                        p.failed == 0,
                        format!("{} of {requests} outside requests failed or were dropped", p.failed),
                    ),
                };
                Verdict {
                    assertion: p.assertion.text.clone(),
                    passed,
                    pending,
                    reason,
                    evidence,
                }
            })
            .collect()
    }
}
