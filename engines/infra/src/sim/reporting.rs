//! What a run has measured so far, as a [`Report`].

use super::*;

impl InfraSim {
    /// What the run has measured so far.
    pub fn report(&self) -> Report {
        let t = self.now.max(f64::MIN_POSITIVE);
        let services = self
            .model
            .services
            .iter()
            .zip(&self.services)
            .enumerate()
            .map(|(i, (m, s))| {
                let area = s.area + s.present as f64 * (self.now - s.since);
                let ready: f64 = self.replicas[i]
                    .iter()
                    .filter(|r| r.ready)
                    .map(|r| self.now - r.ready_since)
                    .sum();
                ServiceReport {
                    name: m.name.clone(),
                    arrivals: s.arrivals,
                    ok: s.ok,
                    latency: Latency::of(&s.latency),
                    failed: s.failed,
                    rejected: s.rejected,
                    call_timeouts: s.call_timeouts,
                    retries: s.retries,
                    mean_wait_s: if s.waits > 0 {
                        s.wait_sum / s.waits as f64
                    } else {
                        0.0
                    },
                    mean_time_in_system_s: if s.departures > 0 {
                        s.sojourn_sum / s.departures as f64
                    } else {
                        0.0
                    },
                    mean_in_system: area / t,
                    throughput_rps: s.departures as f64 / t,
                    replica_seconds: s.replica_seconds + ready,
                    replicas: self.replicas[i].iter().filter(|r| !r.terminated).count() as u32,
                    peak_replicas: s.peak_replicas,
                    short_circuited: s.short_circuited,
                    unready_events: s.unready_events,
                    oom_kills: s.oom_kills,
                    pending: self.replicas[i]
                        .iter()
                        .filter(|r| r.pending && !r.terminated)
                        .count() as u32,
                    evictions: s.evictions,
                    failovers: s.failovers,
                    serving: (self.routes[i] != i)
                        .then(|| self.model.services[self.routes[i]].name.clone()),
                }
            })
            .collect();
        let entries = self
            .entries
            .iter()
            .map(|e| EntryReport {
                service: self.model.services[e.service].name.clone(),
                sent: e.sent,
                ok: e.ok,
                failed: e.failed,
                latency: Latency::of(&e.latency),
                timeline: e.timeline.clone(),
            })
            .collect();
        Report {
            time_s: self.now,
            events: self.handled,
            bucket_s: self.bucket_s,
            services,
            entries,
            nodes: self.node_reports(),
        }
    }
}
