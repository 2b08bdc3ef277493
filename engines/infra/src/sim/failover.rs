//! Failover inside the simulation: outages of what a service's names lead
//! to (nothing running behind them), and a primary's standby promoted by
//! its failover manager once the primary has been down for `detect_s`.

use super::*;

impl InfraSim {
    /// Whether a replica of `service` runs (started, whatever its
    /// readiness probe says).
    fn running(&self, service: usize) -> bool {
        self.replicas[service].iter().any(|r| r.ready)
    }

    /// `service`'s replicas changed: outages of every name leading to it
    /// open or close, and a primary just down has its failover watched.
    pub(super) fn availability(&mut self, service: usize) {
        if self.routes.is_empty() {
            return; // still being built
        }
        let up = self.running(service);
        for role in 0..self.routes.len() {
            if self.routes[role] != service {
                continue;
            }
            match (self.down_since[role], up) {
                (None, false) => {
                    self.down_since[role] = Some(self.now);
                    self.outages[role].push(Outage {
                        from: self.now,
                        to: None,
                        promoted: false,
                    });
                    if role == service
                        && let Some(f) = &self.model.services[role].failover
                    {
                        let at = self.now + f.detect_s;
                        self.schedule(
                            at,
                            Event::FailoverCheck {
                                service: role,
                                since: self.now,
                            },
                        );
                    }
                }
                (Some(_), true) => {
                    self.down_since[role] = None;
                    if let Some(o) = self.outages[role].last_mut() {
                        o.to = Some(self.now);
                    }
                }
                _ => {}
            }
        }
    }

    /// The failover manager's look at a primary down since `since`: if it
    /// still is and its standby runs, the standby is promoted; a standby
    /// that does not run is looked at again after the same delay.
    pub(super) fn failover_check(&mut self, service: usize, since: f64) {
        if self.down_since[service] != Some(since) || self.routes[service] != service {
            return;
        }
        let Some(f) = self.model.services[service].failover.clone() else {
            return;
        };
        let Some(standby) = self.index(&f.standby) else {
            return;
        };
        if self.running(standby) {
            self.schedule(self.now + f.promote_s, Event::Promoted { service });
        } else {
            self.schedule(
                self.now + f.detect_s.max(1.0),
                Event::FailoverCheck { service, since },
            );
        }
    }

    /// The standby is promoted: every name of the primary leads to it
    /// from now on (unless the primary came back during the promotion,
    /// and kept its role).
    pub(super) fn promote(&mut self, service: usize) {
        if self.down_since[service].is_none() || self.routes[service] != service {
            return;
        }
        let Some(standby) = self.model.services[service]
            .failover
            .as_ref()
            .and_then(|f| self.index(&f.standby))
        else {
            return;
        };
        for role in 0..self.routes.len() {
            if self.routes[role] == service {
                self.routes[role] = standby;
                self.down_since[role] = None;
                if let Some(o) = self.outages[role].last_mut()
                    && o.to.is_none()
                {
                    o.to = Some(self.now);
                    o.promoted = true;
                }
            }
        }
        self.services[service].failovers += 1;
        // A standby that died during its promotion leaves them down again.
        self.availability(standby);
    }

    /// `role`'s outages that started in `[from, to)`: (start, end or the
    /// time now and whether it is still open, ended by a promotion).
    pub(super) fn outages_in(
        &self,
        role: usize,
        from: f64,
        to: f64,
    ) -> Vec<(f64, f64, bool, bool)> {
        self.outages[role]
            .iter()
            .filter(|o| o.from >= from && o.from < to)
            .map(|o| (o.from, o.to.unwrap_or(self.now), o.to.is_none(), o.promoted))
            .collect()
    }
}
