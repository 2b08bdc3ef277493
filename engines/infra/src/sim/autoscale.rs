//! Kubernetes' scaling inside the simulation: the HorizontalPodAutoscaler's
//! algorithm on CPU, ResourceQuota caps, and replicas added and scaled away.

use super::*;

impl InfraSim {
    /// Kubernetes' HPA algorithm on the CPU used since the last look.
    pub(super) fn autoscale(&mut self, service: usize) {
        let Some(policy) = self.model.services[service].autoscale else {
            return;
        };
        let m = &self.model.services[service];
        let request = m
            .cpu_request
            .or(m.cpu_limit)
            .unwrap_or(f64::from(m.workers));
        let ready = self.replicas[service].iter().filter(|r| r.ready).count() as u32;
        let current = self.replicas[service]
            .iter()
            .filter(|r| !r.terminated)
            .count() as u32;
        let stats = &mut self.services[service];
        let used = stats.cpu_used - stats.cpu_seen;
        stats.cpu_seen = stats.cpu_used;
        if ready == 0 {
            return; // no metrics: Kubernetes leaves the count alone
        }
        let utilization = used / (AUTOSCALE_PERIOD_S * f64::from(ready) * request) * 100.0;
        let ratio = utilization / policy.target_cpu_percent;
        let wanted = if (ratio - 1.0).abs() <= 0.1 {
            current
        } else {
            (f64::from(ready) * ratio).ceil() as u32
        }
        .clamp(policy.min_replicas, policy.max_replicas);
        stats.wishes.push_back((self.now, wanted));
        while stats
            .wishes
            .front()
            .is_some_and(|(t, _)| *t < self.now - SCALE_DOWN_WINDOW_S)
        {
            stats.wishes.pop_front();
        }
        let highest = stats.wishes.iter().map(|(_, w)| *w).max().unwrap_or(wanted);
        let target = if wanted >= current {
            current + self.quota_room(service, wanted - current)
        } else {
            highest.min(current)
        };
        if target > current {
            for _ in current..target {
                self.add_replica(service);
            }
        } else {
            for _ in target..current {
                self.remove_replica(service);
            }
        }
        let stats = &mut self.services[service];
        stats.peak_replicas = stats.peak_replicas.max(target);
    }

    /// How many of `more` replicas the namespace's quotas allow.
    pub(super) fn quota_room(&self, service: usize, more: u32) -> u32 {
        let m = &self.model.services[service];
        let mut room = more;
        for q in self
            .model
            .quotas
            .iter()
            .filter(|q| q.namespace == m.namespace)
        {
            let (mut pods, mut cpu) = (0u32, 0.0);
            for (i, s) in self.model.services.iter().enumerate() {
                if s.namespace == q.namespace {
                    let n = self.replicas[i].iter().filter(|r| !r.terminated).count() as u32;
                    pods += n;
                    cpu += f64::from(n) * s.cpu_request.unwrap_or(0.0);
                }
            }
            if let Some(hard) = q.pods {
                room = room.min(hard.saturating_sub(pods));
            }
            if let (Some(hard), Some(each)) = (q.cpu_requests, m.cpu_request) {
                room = room.min(((hard - cpu) / each + 1e-9).floor().max(0.0) as u32);
            }
        }
        room
    }

    /// A new replica: scheduled onto a node (or pending), ready after the
    /// service's startup time.
    pub(super) fn add_replica(&mut self, service: usize) {
        let free = self.replicas[service]
            .iter()
            .position(|r| r.terminated && r.busy == 0 && r.queue.is_empty());
        let slot = match free {
            Some(i) => i,
            None => {
                let mut r = Replica::new(false, self.now);
                r.terminated = true;
                self.replicas[service].push(r);
                self.replicas[service].len() - 1
            }
        };
        let r = &mut self.replicas[service][slot];
        r.terminated = false;
        r.ready = false;
        r.generation += 1;
        self.launch(service, slot);
    }

    /// Scales one replica away (a pending one first, then the newest, as
    /// Kubernetes prefers to remove pods not yet running, then the
    /// youngest): it takes nothing new and finishes what it holds; its
    /// room on its node is free at once.
    pub(super) fn remove_replica(&mut self, service: usize) {
        let live = |r: &Replica| !r.terminated;
        let Some(i) = self.replicas[service]
            .iter()
            .rposition(|r| live(r) && r.pending)
            .or_else(|| self.replicas[service].iter().rposition(live))
        else {
            return;
        };
        let r = &mut self.replicas[service][i];
        if r.ready {
            self.services[service].replica_seconds += self.now - r.ready_since;
        }
        r.ready = false;
        r.terminated = true;
        r.pending = false;
        self.release(service, i);
        self.availability(service);
        self.schedule_pending();
    }
}
