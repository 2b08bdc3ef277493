//! A twin's own subtree: the actors a twin supervises (its sync sources today;
//! publishers and render workers hang here the same way).
//!
//! Restart rules, as `docs/semantics.md` states them:
//! - A child that fails (panics, or its handler returns an error) is restarted
//!   by its twin after a backoff (100 ms, doubling, at most 10 s), without
//!   touching the twin's simulation.
//! - A child that fails more than [`MAX_RESTARTS`] times within
//!   [`RESTART_WINDOW`] is given up: it stays `failed` until the twin restarts
//!   or its configuration changes. The twin runs on.
//! - Children are permanent: one that ends without its twin asking (killed,
//!   or stopped on its own) counts as a failure and is restarted the same way.
//! - A twin that ends, or crashes, takes its children with it (ractor stops a
//!   supervisor's linked children); the twin's next start spawns them afresh
//!   from its definition.

use crate::inspector::MessageCount;
use crate::protocol::{ChildContext, ChildReport, ChildSpec, TwinMsg};
use ractor::{ActorCell, ActorId, ActorRef};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The actor a supervision event says has ended, and why: a failure's
/// error, or a termination's reason; `None` for events that end nothing.
pub fn ended(event: &ractor::SupervisionEvent) -> Option<(ActorId, String)> {
    match event {
        ractor::SupervisionEvent::ActorFailed(cell, e) => Some((cell.get_id(), e.to_string())),
        ractor::SupervisionEvent::ActorTerminated(cell, _, reason) => Some((
            cell.get_id(),
            reason.clone().unwrap_or_else(|| "stopped".into()),
        )),
        _ => None,
    }
}

/// More failures than this within [`RESTART_WINDOW`] and a child is given up.
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The twin's children as the host reads them for the tree, without a
/// message to the twin. Written by the twin on every change.
#[derive(Clone, Default)]
pub struct ChildBoard(Arc<Mutex<Vec<(ChildReport, MessageCount)>>>);

impl ChildBoard {
    pub fn reports(&self) -> Vec<ChildReport> {
        let board = self.0.lock().unwrap_or_else(|e| e.into_inner());
        board
            .iter()
            .map(|(r, m)| ChildReport {
                messages: m.get(),
                uptime_s: m.uptime_s(),
                handling_mean_us: m.handling_mean_us(),
                ..r.clone()
            })
            .collect()
    }

    fn publish(&self, entries: &[ChildEntry]) {
        let reports = entries
            .iter()
            .map(|e| (e.report(), e.messages.clone()))
            .collect();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = reports;
    }
}

/// What happened to a child, for the twin to tell the tree's watchers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildEvent {
    pub name: String,
    pub kind: &'static str,
    /// `started`, `failed`, `restarted`, `gave_up` or `stopped`.
    pub event: &'static str,
    pub detail: Option<String>,
}

struct ChildEntry {
    spec: Arc<dyn ChildSpec>,
    actor: Option<ActorCell>,
    status: &'static str,
    restarts: u32,
    failures: VecDeque<Instant>,
    last_error: Option<String>,
    messages: MessageCount,
}

impl ChildEntry {
    fn report(&self) -> ChildReport {
        ChildReport {
            name: self.spec.name().to_string(),
            kind: self.spec.kind(),
            actor_id: self.actor.as_ref().map(|a| a.get_id()),
            status: self.status,
            restarts: self.restarts,
            messages: self.messages.get(),
            uptime_s: self.messages.uptime_s(),
            handling_mean_us: self.messages.handling_mean_us(),
            last_error: self.last_error.clone(),
        }
    }
}

/// A twin's children and their restart state.
pub struct Children {
    entries: Vec<ChildEntry>,
    /// Bumped when the set of children is replaced, so restarts scheduled
    /// for the old set are dropped.
    generation: u64,
    board: ChildBoard,
}

/// What the twin must do after a supervision event about a child.
pub enum Followup {
    Nothing,
    /// Send [`TwinMsg::RestartChild`] with these after `delay`.
    RestartAfter {
        delay: Duration,
        index: usize,
        generation: u64,
    },
}

impl Children {
    pub fn new(specs: Vec<Arc<dyn ChildSpec>>, board: ChildBoard) -> Children {
        let entries = specs
            .into_iter()
            .map(|spec| ChildEntry {
                spec,
                actor: None,
                status: "stopped",
                restarts: 0,
                failures: VecDeque::new(),
                last_error: None,
                messages: MessageCount::default(),
            })
            .collect();
        Children {
            entries,
            generation: 0,
            board,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn reports(&self) -> Vec<ChildReport> {
        self.entries.iter().map(ChildEntry::report).collect()
    }

    /// Spawns every child that is not running. A child that cannot be spawned
    /// counts as a failure and is retried on the usual backoff.
    pub async fn start_all(
        &mut self,
        twin: &ActorRef<TwinMsg>,
    ) -> (Vec<ChildEvent>, Vec<Followup>) {
        let mut events = Vec::new();
        let mut followups = Vec::new();
        for index in 0..self.entries.len() {
            if self.entries[index].actor.is_none() && self.entries[index].status != "failed" {
                let (e, f) = self.spawn(index, twin, "started").await;
                events.extend(e);
                followups.push(f);
            }
        }
        self.board.publish(&self.entries);
        (events, followups)
    }

    async fn spawn(
        &mut self,
        index: usize,
        twin: &ActorRef<TwinMsg>,
        event: &'static str,
    ) -> (Option<ChildEvent>, Followup) {
        let entry = &mut self.entries[index];
        let context = ChildContext {
            twin: twin.clone(),
            supervisor: twin.get_cell(),
            messages: entry.messages.clone(),
        };
        match entry.spec.spawn(context).await {
            Ok(actor) => {
                entry.actor = Some(actor);
                entry.status = "running";
                let event = ChildEvent {
                    name: entry.spec.name().to_string(),
                    kind: entry.spec.kind(),
                    event,
                    detail: None,
                };
                (Some(event), Followup::Nothing)
            }
            Err(reason) => {
                let (event, followup) = self.failed_at(index, format!("could not start: {reason}"));
                (Some(event), followup)
            }
        }
    }

    /// Stops every child (the set is being replaced or the twin is stopping).
    pub fn stop_all(&mut self) -> Vec<ChildEvent> {
        self.generation += 1;
        let mut events = Vec::new();
        for entry in &mut self.entries {
            if let Some(actor) = entry.actor.take() {
                actor.stop(Some("its twin stopped it".into()));
                events.push(ChildEvent {
                    name: entry.spec.name().to_string(),
                    kind: entry.spec.kind(),
                    event: "stopped",
                    detail: None,
                });
            }
            entry.status = "stopped";
        }
        self.board.publish(&self.entries);
        events
    }

    /// Replaces the set of children: the old ones stop, the new ones start.
    pub async fn replace(
        &mut self,
        specs: Vec<Arc<dyn ChildSpec>>,
        twin: &ActorRef<TwinMsg>,
    ) -> (Vec<ChildEvent>, Vec<Followup>) {
        let mut events = self.stop_all();
        let generation = self.generation;
        *self = Children::new(specs, self.board.clone());
        self.generation = generation;
        let (started, followups) = self.start_all(twin).await;
        events.extend(started);
        (events, followups)
    }

    fn index_of(&self, actor: &ActorId) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.actor.as_ref().is_some_and(|a| a.get_id() == *actor))
    }

    /// A child's actor failed. `None` if it is none of this twin's children.
    pub fn failed(&mut self, actor: &ActorId, error: String) -> Option<(ChildEvent, Followup)> {
        let index = self.index_of(actor)?;
        self.entries[index].actor = None;
        let result = self.failed_at(index, error);
        self.board.publish(&self.entries);
        Some(result)
    }

    fn failed_at(&mut self, index: usize, error: String) -> (ChildEvent, Followup) {
        let now = Instant::now();
        let generation = self.generation;
        let entry = &mut self.entries[index];
        while entry
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        entry.last_error = Some(error.clone());
        tracing::warn!(child = entry.spec.name(), %error, "a twin's child failed");
        if entry.failures.len() > MAX_RESTARTS {
            entry.status = "failed";
            let detail = format!(
                "failed {} times within {} s, not restarted; last error: {error}",
                entry.failures.len(),
                RESTART_WINDOW.as_secs()
            );
            entry.last_error = Some(detail.clone());
            let event = ChildEvent {
                name: entry.spec.name().to_string(),
                kind: entry.spec.kind(),
                event: "gave_up",
                detail: Some(detail),
            };
            return (event, Followup::Nothing);
        }
        entry.status = "restarting";
        let doublings = (entry.failures.len() - 1).min(16) as u32;
        let delay = FIRST_BACKOFF
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(MAX_BACKOFF);
        let event = ChildEvent {
            name: entry.spec.name().to_string(),
            kind: entry.spec.kind(),
            event: "failed",
            detail: Some(error),
        };
        (
            event,
            Followup::RestartAfter {
                delay,
                index,
                generation,
            },
        )
    }

    /// Kills a child's actor at once, as a crash would end it (chaos
    /// engineering of the twin's subtree); its restart follows the policy.
    pub fn kill(&mut self, name: &str) -> Result<(), String> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.spec.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self.entries.iter().map(|e| e.spec.name()).collect();
                format!("the twin has no child `{name}`; it has {names:?}")
            })?;
        let actor = entry
            .actor
            .as_ref()
            .ok_or_else(|| format!("child `{name}` is not running ({})", entry.status))?;
        actor.kill();
        Ok(())
    }

    /// A scheduled restart is due; stale ones (the set was replaced since) are
    /// dropped.
    pub async fn restart(
        &mut self,
        index: usize,
        generation: u64,
        twin: &ActorRef<TwinMsg>,
    ) -> Option<(Option<ChildEvent>, Followup)> {
        if generation != self.generation
            || self
                .entries
                .get(index)
                .is_none_or(|e| e.actor.is_some() || e.status != "restarting")
        {
            return None;
        }
        self.entries[index].restarts += 1;
        let result = self.spawn(index, twin, "restarted").await;
        self.board.publish(&self.entries);
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SpawnFuture;

    #[test]
    fn backoff_doubles_and_a_child_is_given_up_past_its_intensity() {
        struct Never;
        impl ChildSpec for Never {
            fn name(&self) -> &str {
                "sync:0:test"
            }
            fn kind(&self) -> &'static str {
                "sync"
            }
            fn spawn(&self, _: ChildContext) -> SpawnFuture {
                Box::pin(async { Err("never".to_string()) })
            }
        }
        let board = ChildBoard::default();
        let mut children = Children::new(vec![Arc::new(Never)], board.clone());
        let mut delays = Vec::new();
        for _ in 0..MAX_RESTARTS {
            let (event, followup) = children.failed_at(0, "boom".into());
            assert_eq!(event.event, "failed");
            match followup {
                Followup::RestartAfter { delay, .. } => delays.push(delay),
                Followup::Nothing => panic!("a child within its intensity is restarted"),
            }
        }
        assert_eq!(delays[0], FIRST_BACKOFF);
        assert!(
            delays
                .windows(2)
                .all(|w| w[1] == (w[0] * 2).min(MAX_BACKOFF))
        );
        let (event, followup) = children.failed_at(0, "boom".into());
        assert_eq!(event.event, "gave_up");
        assert!(matches!(followup, Followup::Nothing));
        assert_eq!(children.reports()[0].status, "failed");
    }
}
