//! The host's side of cluster placement: which twins this node holds.
//! Rebalancing hands off what placement gives another node and takes over
//! what it gives this one that no live node holds; a request for a twin
//! held nowhere claims it first.

use super::{HostMsg, HostState, Rebalanced, storage};
use crate::error::TwinError;
use crate::protocol::{Scope, StartOptions, TwinRef};
use crate::record::{Lifecycle, TwinId, TwinRecord};
use ractor::ActorRef;

impl HostState {
    /// Hands off up to `max_moves` twins placement moved away, then takes over
    /// the twins placement gives this node that no live node holds.
    pub(super) async fn rebalance(
        &mut self,
        myself: &ActorRef<HostMsg>,
        max_moves: usize,
    ) -> Result<Rebalanced, TwinError> {
        let mut done = Rebalanced::default();
        let Some(placement) = self.placement.clone() else {
            return Ok(done);
        };
        let away: Vec<TwinId> = self
            .records
            .ids()
            .filter(|id| !placement.owns(&id.to_string()))
            .take(max_moves)
            .collect();
        let mut lasting = Vec::new();
        for id in away {
            let record = self.record(id)?.clone();
            let clock = self.activations.get(id).map(|r| r.clock);
            self.stop_actor(id, true).await;
            if !record.ephemeral {
                lasting.push(record);
                continue;
            }
            // A fork lives in no store: its state travels with it.
            let state = self.checkpoints.latest(id);
            self.unhold(id);
            match (clock, state) {
                (Some(clock), Some(state)) => {
                    done.forks.push((record, clock, (*state).clone()));
                }
                _ => tracing::warn!(fork = %id, "fork had no state to hand off; it is gone"),
            }
        }
        if !lasting.is_empty() {
            // The final checkpoints must be durable before the new owners
            // may start from them (and before `unhold` drops pending ones).
            self.checkpoints.flush().await;
            for record in &lasting {
                self.unhold(record.id);
            }
            for released in self.release(lasting).await {
                tracing::info!(twin = %released.id, "twin handed off to its new owner");
                self.tree.twin(&released, "handed_off", None);
                metrics::counter!("hanzo_twin_handoffs_total").increment(1);
                done.released.push(released.id);
            }
        }
        // A store this node keeps alone has no other live node.
        let live = self
            .store
            .live_nodes(self.config.lease)
            .await
            .map_err(storage)?
            .unwrap_or_default();
        let me = self.config.node_id.clone();
        // The store answers with the few twins that concern this round, not
        // every record: those held here that another node holds now, and
        // those nobody live holds.
        let held: Vec<TwinId> = self.records.ids().collect();
        let lost = self
            .store
            .held_elsewhere(&me, &held)
            .await
            .map_err(storage)?;
        let claimable = self
            .store
            .claimable(&me, &live, &held)
            .await
            .map_err(storage)?;
        for record in claimable {
            let id = record.id;
            if !placement.owns(&id.to_string()) {
                continue;
            }
            let from = record.status.node.clone().filter(|holder| *holder != me);
            match self.take_over(myself, id, from).await {
                Ok(true) => done.adopted.push(id),
                Ok(false) => {}
                Err(e) => tracing::error!(twin = %id, error = %e, "claiming the twin failed"),
            }
        }
        // Another node holds these now: this one was silent past its lease
        // (paused, cut off) and they were taken over. Stop them here, writing
        // nothing, so the twin runs once.
        for (id, holder) in lost {
            tracing::warn!(twin = %id, holder = ?holder, "another node took this twin over; stopping it here");
            self.stop_actor(id, false).await;
            self.unhold(id);
        }
        Ok(done)
    }

    /// Writes `records` as held by no node, so that their new owners may
    /// claim them at once. The writes are queued together and share the
    /// store's flushes; the caller made the twins' final checkpoints
    /// durable first. A write that fails is logged: that twin is then
    /// claimable once this node's lease runs out.
    pub(super) async fn release(&mut self, records: Vec<TwinRecord>) -> Vec<TwinRecord> {
        let mut queued = Vec::with_capacity(records.len());
        for mut record in records {
            record.status.node = None;
            record.updated_at = chrono::Utc::now();
            let durable = self.writer.put(record.clone()).await;
            queued.push((record, durable));
        }
        let mut released = Vec::with_capacity(queued.len());
        for (record, durable) in queued {
            if let Err(e) = durable.wait().await {
                tracing::error!(twin = %record.id, error = %e, "releasing the twin failed");
            }
            released.push(record);
        }
        released
    }

    /// Claims the twin in the store (from `from`, a holder whose lease ran
    /// out, if any) and holds it; `false` when another node got it first.
    pub(super) async fn take_over(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        from: Option<String>,
    ) -> Result<bool, TwinError> {
        let me = self.config.node_id.clone();
        let Some(claimed) = self
            .store
            .claim(id, &me, from.as_deref())
            .await
            .map_err(storage)?
        else {
            return Ok(false);
        };
        if let Some(dead) = &from {
            tracing::warn!(twin = %id, node = %dead, "taking over a twin from a node that stopped answering");
        }
        self.adopt(myself, claimed).await;
        Ok(true)
    }

    /// Holds a twin claimed from the store; one that was running resumes from
    /// its last checkpoint.
    pub(super) async fn adopt(&mut self, myself: &ActorRef<HostMsg>, mut record: TwinRecord) {
        let id = record.id;
        // A passivated twin comes back on its next request, here as anywhere.
        let resume = (record.status.state == Lifecycle::Running && !record.status.passivated)
            .then_some(record.status.clock);
        if resume.is_some() {
            record.status.state = Lifecycle::Stopped;
        }
        // A checkpoint cached from an earlier stay here is stale now.
        self.checkpoints.release(id);
        self.hold(record.clone());
        tracing::info!(twin = %id, "took the twin over");
        self.tree.twin(&record, "adopted", None);
        if let Some(clock) = resume {
            let twin = TwinRef {
                key: id.to_string(),
                scope: Scope::Node,
            };
            let options = StartOptions {
                clock,
                reset: false,
            };
            if let Err(e) = self.start(myself, &twin, options).await {
                tracing::error!(twin = %id, error = %e, "could not resume the twin taken over");
            }
        }
    }

    /// In a cluster, a request may name a twin this node does not hold yet
    /// (placement just gave it here) or no longer holds (it just moved). The
    /// shared store decides: a twin placement gives here that nobody live
    /// holds is taken over now; one another node holds is `Moving`.
    pub(super) async fn ensure_held(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        scope: &Scope,
    ) -> Result<(), TwinError> {
        let Some(placement) = self.placement.clone() else {
            return Ok(());
        };
        if self.records.contains(id) {
            return Ok(());
        }
        let Some(record) = self.store.get(id).await.map_err(storage)? else {
            return Ok(());
        };
        if !scope.admits(&record) {
            // Answered as unknown, like any twin outside the caller's scope.
            return Ok(());
        }
        let me = self.config.node_id.clone();
        let holder = record.status.node.clone();
        let owned = placement.owns(&id.to_string());
        let live = match &holder {
            Some(h) if *h != me => self
                .store
                .live_nodes(self.config.lease)
                .await
                .map_err(storage)?
                // A store this node keeps alone: no other node is alive in it.
                .is_some_and(|l| l.contains(h)),
            _ => false,
        };
        let mut holder = holder;
        if owned && !live {
            if self
                .take_over(myself, id, holder.clone().filter(|h| *h != me))
                .await?
            {
                return Ok(());
            }
            // Another node claimed it first: say which.
            holder = self
                .store
                .get(id)
                .await
                .map_err(storage)?
                .and_then(|r| r.status.node);
        }
        let from = holder.unwrap_or_else(|| "none".into());
        Err(TwinError::Moving {
            twin: id.to_string(),
            from,
            to: if owned { me } else { "its new owner".into() },
        })
    }
}
