//! A twin's lifecycle on its host: create, update, start (and reactivate),
//! stop (and passivate), delete, restore and checkpoint, and what a crash
//! does. Each request is checked on the host's loop; what reads a scene or
//! waits for the disk runs off it and comes back as a continuation
//! ([`LifecycleMsg`]'s internal messages).

use super::record_writer::Durable;
use super::{HostMsg, HostState, Launched, LifecycleMsg, StartFrom, newest_checkpoint, storage};
use crate::definition::{DEFAULT_ORGANIZATION, Name, TwinDefinition};
use crate::direct::DirectRoute;
use crate::error::TwinError;
use crate::protocol::{Reply, Scope, StartOptions, TwinMsg, TwinRef};
use crate::record::{Clock, Lifecycle, TwinId, TwinRecord};
use crate::store::BoxFuture;
use hanzo_twin_engines::{SceneModel, SimState};
use ractor::{ActorId, ActorRef};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

impl HostState {
    pub(super) async fn handle_lifecycle(&mut self, myself: &ActorRef<HostMsg>, msg: LifecycleMsg) {
        match msg {
            LifecycleMsg::Create {
                definition,
                scope,
                reply,
            } => match self.prepare_create(definition, &scope) {
                Err(e) => drop(reply.send(Err(e))),
                Ok(check) => off_loop(myself, check, |checked| LifecycleMsg::Admit {
                    checked,
                    reply,
                }),
            },
            LifecycleMsg::Admit { checked, reply } => match self.admit(checked).await {
                Err(e) => drop(reply.send(Err(e))),
                Ok((record, durable)) => {
                    // The disk is waited for here, off the host's loop;
                    // creates arriving meanwhile share the next flush.
                    let host = myself.clone();
                    tokio::spawn(async move {
                        let result = match durable.wait().await {
                            Ok(_) => Ok(record),
                            Err(e) => {
                                let _ = host.cast(LifecycleMsg::Unadmit { id: record.id }.into());
                                Err(storage(e))
                            }
                        };
                        let _ = reply.send(result);
                    });
                }
            },
            LifecycleMsg::Unadmit { id } => {
                // Its record never became durable: the twin was not created.
                if !self.activations.is_running(id) {
                    self.unhold(id);
                }
            }
            LifecycleMsg::Update { twin, patch, reply } => {
                match self.prepare_update(&twin, patch) {
                    Err(e) => drop(reply.send(Err(e))),
                    Ok(PreparedUpdate::Ready(id, definition)) => {
                        let result = self.apply_update(id, *definition).await;
                        answer_when_durable(reply, result);
                    }
                    Ok(PreparedUpdate::CheckScene(id, base, check)) => {
                        off_loop(myself, check, move |checked| LifecycleMsg::UpdateChecked {
                            id,
                            base,
                            checked,
                            reply,
                        });
                    }
                }
            }
            LifecycleMsg::UpdateChecked {
                id,
                base,
                checked,
                reply,
            } => {
                let result = self.finish_update(id, base, checked).await;
                answer_when_durable(reply, result);
            }
            LifecycleMsg::Delete { twin, reply } => match self.delete(myself, &twin).await {
                Err(e) => drop(reply.send(Err(e))),
                Ok(None) => drop(reply.send(Ok(()))),
                Ok(Some(erase)) => {
                    tokio::spawn(async move {
                        let _ = reply.send(erase.await);
                    });
                }
            },
            LifecycleMsg::Rehold { record } => {
                // Its deletion failed: it is still stored, so still held
                // (stopped), unless it came back some other way meanwhile.
                if !self.records.contains(record.id) {
                    let mut record = *record;
                    if record.status.state == Lifecycle::Running {
                        record.status.state = Lifecycle::Stopped;
                    }
                    self.hold(record);
                }
            }
            LifecycleMsg::Start {
                twin,
                options,
                reply,
            } => match self.prepare_start(&twin, options) {
                Err(e) => drop(reply.send(Err(e))),
                Ok((id, prepare)) => {
                    off_loop(myself, prepare, move |prepared| LifecycleMsg::Launch {
                        id,
                        prepared,
                        then: Launched::Started(reply),
                    })
                }
            },
            LifecycleMsg::Launch { id, prepared, then } => {
                let result = self.launch(myself, id, prepared).await;
                match then {
                    Launched::Started(reply) => answer_when_durable(reply, result),
                    Launched::Reactivated(reply) => {
                        metrics::counter!("hanzo_twin_reactivations_total").increment(1);
                        let result = result.and_then(|(_, durable)| {
                            // Serving it does not wait for its status.
                            log_if_not_durable(id, durable, "saving the reactivated status");
                            self.activations
                                .get(id)
                                .map(|r| (r.route(), true))
                                .ok_or_else(|| self.not_running(id))
                        });
                        let _ = reply.send(result);
                    }
                }
            }
            LifecycleMsg::Idle { id, actor } => self.passivate(id, actor).await,
            LifecycleMsg::Stop { twin, reply } => {
                let result = self.stop(&twin).await;
                answer_when_durable(reply, result);
            }
            LifecycleMsg::Restore { twin, state, reply } => {
                let result = self.restore(&twin, state).await;
                let _ = reply.send(result);
            }
            LifecycleMsg::Checkpoint { twin, reply } => {
                let result = self.checkpoint(&twin).await;
                let _ = reply.send(result);
            }
        }
    }

    /// Starts a twin now, waiting here for its scene (used while the host
    /// itself starts, and when it takes a twin over).
    pub(super) async fn start(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        options: StartOptions,
    ) -> Result<TwinRecord, TwinError> {
        let (id, prepared) = self.prepare_start(twin, options)?;
        let prepared = prepared.await;
        let (record, durable) = self.launch(myself, id, prepared).await?;
        if let Some(durable) = durable {
            durable.wait().await.map_err(storage)?;
        }
        Ok(record)
    }

    /// The first half of a start: checks the twin may start and marks it
    /// starting, and returns the work that reads its scene and checkpoint,
    /// to run anywhere but the host's loop ([`HostState::launch`] finishes).
    pub(super) fn prepare_start(
        &mut self,
        twin: &TwinRef,
        options: StartOptions,
    ) -> Result<(TwinId, BoxFuture<'static, Result<Launch, TwinError>>), TwinError> {
        let id = self.resolve(twin)?;
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(format!(
                "twin {twin} is already running"
            )));
        }
        if !self.activations.begin_settling(id) {
            return Err(TwinError::Conflict(format!(
                "twin {twin} is already starting"
            )));
        }
        let definition = self.record(id)?.definition.clone();
        let scenes = self.scenes.clone();
        let (checkpoints, stored) = (self.checkpoints.clone(), self.checkpoint_store.clone());
        Ok((
            id,
            Box::pin(async move {
                let scene = scenes.check_runnable(&definition).await?;
                let initial = if options.reset {
                    None
                } else {
                    newest_checkpoint(&checkpoints, &stored, id).await?
                };
                Ok(Launch {
                    scene,
                    initial,
                    options,
                })
            }),
        ))
    }

    /// The second half of a start: spawns the twin's actor from what
    /// [`HostState::prepare_start`] gathered.
    pub(super) async fn launch(
        &mut self,
        myself: &ActorRef<HostMsg>,
        id: TwinId,
        prepared: Result<Launch, TwinError>,
    ) -> Result<Saved, TwinError> {
        self.unpark(myself, id);
        let launch = prepared?;
        // Deleted, or started another way, while its scene was read.
        let mut record = self.record(id)?.clone();
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(format!("twin {id} is already running")));
        }
        let clock = launch.options.clock;
        let result = self
            .spawn_twin(
                myself,
                id,
                launch.scene,
                clock,
                StartFrom::state(launch.initial),
                VecDeque::new(),
            )
            .await;
        match result {
            Ok(()) => {
                record.status.state = Lifecycle::Running;
                record.status.clock = clock;
                record.status.passivated = false;
                record.status.restarts = 0;
                record.status.last_error = None;
                record.status.node = Some(self.config.node_id.clone());
                Ok(self.save_queued(record).await)
            }
            Err(e) => {
                record.status.state = Lifecycle::Stopped;
                record.status.last_error = Some(e.to_string());
                let (_, durable) = self.save_queued(record).await;
                log_if_not_durable(id, durable, "saving the failed start");
                Err(e)
            }
        }
    }

    /// The first half of an update: applies the merge patch to the
    /// definition and checks what the host knows. A new scene or engine is
    /// checked off the host's loop ([`HostState::finish_update`] ends).
    pub(super) fn prepare_update(
        &self,
        twin: &TwinRef,
        patch: serde_json::Value,
    ) -> Result<PreparedUpdate, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?;
        if !patch.is_object() {
            return Err(TwinError::invalid(
                "",
                "a merge patch must be a JSON object",
            ));
        }
        let mut value = record.definition.to_value();
        json_patch::merge(&mut value, &patch);
        let definition = TwinDefinition::from_value(value)?;
        if definition.organization() != record.definition.organization() {
            return Err(TwinError::invalid(
                "organization",
                "a twin cannot move to another organization",
            ));
        }
        self.refuse_taken_name(&definition, Some(id))?;
        self.check_publishers(&definition)?;
        // An infrastructure twin's topology, traffic and chaos are its scene.
        let physics_changed = definition.scene != record.definition.scene
            || definition.infrastructure != record.definition.infrastructure
            || definition.engine != record.definition.engine;
        if !physics_changed {
            return Ok(PreparedUpdate::Ready(id, Box::new(definition)));
        }
        if self.activations.is_running(id) {
            return Err(TwinError::Conflict(
                "stop the twin before changing its scene, topology, traffic or engine".into(),
            ));
        }
        let scenes = self.scenes.clone();
        let base = record.updated_at;
        Ok(PreparedUpdate::CheckScene(
            id,
            base,
            Box::pin(async move {
                scenes.check_runnable(&definition).await?;
                Ok(definition)
            }),
        ))
    }

    /// The second half of an update whose scene was checked: applies it if
    /// the twin has not changed meanwhile.
    pub(super) async fn finish_update(
        &mut self,
        id: TwinId,
        base: chrono::DateTime<chrono::Utc>,
        checked: Result<TwinDefinition, TwinError>,
    ) -> Result<Saved, TwinError> {
        let definition = checked?;
        let record = self.record(id)?;
        if record.updated_at != base {
            return Err(TwinError::Conflict(
                "the twin changed while its new scene was checked; send the change again".into(),
            ));
        }
        if self.activations.is_running(id) || self.activations.is_settling(id) {
            return Err(TwinError::Conflict(
                "stop the twin before changing its scene, topology, traffic or engine".into(),
            ));
        }
        self.refuse_taken_name(&definition, Some(id))?;
        self.apply_update(id, definition).await
    }

    /// Stores the updated definition and tells the running actor what
    /// concerns it.
    pub(super) async fn apply_update(
        &mut self,
        id: TwinId,
        definition: TwinDefinition,
    ) -> Result<Saved, TwinError> {
        let record = self.record(id)?.clone();
        let renamed = definition.name != record.definition.name;
        let resynced = definition.sync != record.definition.sync;
        let mut record = record;
        record.definition = definition;
        let (record, durable) = self.save_queued(record).await;
        if resynced
            && !record.ephemeral
            && let Some(running) = self.activations.get(id)
        {
            // The twin swaps its sources in its own loop; a failure to reach
            // it is a crash the host restarts with the new definition.
            let sync = Box::new(record.definition.sync.clone());
            let _ = running.actor.cast(TwinMsg::SetSync {
                sync,
                reply: ractor::concurrency::oneshot().0.into(),
            });
        }
        if renamed {
            // Callers that named the twin by its old name must resolve again.
            self.activations.invalidate_routes();
            if let Some(running) = self.activations.get(id) {
                let name = record.definition.name.to_string();
                let _ = running.actor.cast(TwinMsg::Renamed { name });
            }
        }
        Ok((record, durable))
    }

    pub(super) async fn crashed(&mut self, myself: &ActorRef<HostMsg>, id: TwinId, reason: String) {
        let Some(running) = self.activations.remove(id) else {
            return;
        };
        tracing::warn!(twin = %id, %reason, "twin crashed");
        metrics::counter!("hanzo_twin_crashes_total").increment(1);
        let mut crashes = running.crashes;
        let now = Instant::now();
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.config.restart_window)
        {
            crashes.pop_front();
        }
        crashes.push_back(now);
        let Ok(mut record) = self.record(id).cloned() else {
            return;
        };
        record.status.last_error = Some(reason.clone());
        self.tree.twin(&record, "failed", Some(reason.clone()));
        if crashes.len() as u32 > self.config.max_restarts {
            record.status.state = Lifecycle::Failed;
            record.status.last_error = Some(format!(
                "crashed {} times within {} s, not restarted; last error: {reason}",
                crashes.len(),
                self.config.restart_window.as_secs()
            ));
            tracing::error!(twin = %id, "twin exceeded its restart limit and is marked failed");
            self.tree
                .twin(&record, "gave_up", record.status.last_error.clone());
        } else {
            let checkpoint = self.checkpoints.latest(id);
            match self
                .spawn_twin(
                    myself,
                    id,
                    running.scene,
                    running.clock,
                    StartFrom::state(checkpoint),
                    crashes,
                )
                .await
            {
                Ok(()) => {
                    record.status.restarts += 1;
                    record.status.state = Lifecycle::Running;
                    self.tree.twin(&record, "restarted", None);
                    metrics::counter!("hanzo_twin_restarts_total").increment(1);
                }
                Err(e) => {
                    record.status.state = Lifecycle::Failed;
                    record.status.last_error = Some(format!("restart failed: {e}"));
                }
            }
        }
        let (_, durable) = self.save_queued(record).await;
        log_if_not_durable(id, durable, "saving the twin's status after its crash");
    }

    /// The first half of a create: the organization and the name are
    /// checked here; the returned work reads the scene (off the host's loop)
    /// and [`HostState::admit`] finishes.
    pub(super) fn prepare_create(
        &self,
        mut definition: TwinDefinition,
        scope: &Scope,
    ) -> Result<BoxFuture<'static, Result<TwinDefinition, TwinError>>, TwinError> {
        let organization = match (&definition.organization, scope) {
            (Some(declared), Scope::Organization(own)) if declared != own => {
                return Err(TwinError::Forbidden {
                    field: Some("organization".into()),
                    message: format!(
                        "you can only create twins in your own organization `{own}`, not `{declared}`; leave organization out or set it to `{own}`"
                    ),
                });
            }
            (Some(declared), _) => declared.clone(),
            (None, Scope::Organization(own)) => own.clone(),
            (None, Scope::Node) => Name::new(DEFAULT_ORGANIZATION)
                .map_err(|m| TwinError::Storage(format!("default organization: {m}")))?,
        };
        definition.organization = Some(organization);
        self.refuse_taken_name(&definition, None)?;
        self.check_publishers(&definition)?;
        let scenes = self.scenes.clone();
        Ok(Box::pin(async move {
            scenes.check_runnable(&definition).await?;
            Ok(definition)
        }))
    }

    /// The second half of a create: holds the checked definition as a new
    /// twin, unless its name was taken meanwhile, and queues its record's
    /// write. The name is taken from here on; the create is answered once
    /// the write is durable (see `LifecycleMsg::Admit`).
    pub(super) async fn admit(
        &mut self,
        checked: Result<TwinDefinition, TwinError>,
    ) -> Result<(TwinRecord, Durable), TwinError> {
        let definition = checked?;
        self.refuse_taken_name(&definition, None)?;
        let mut record = TwinRecord::new(definition);
        record.id = self.new_id();
        record.status.node = Some(self.config.node_id.clone());
        let durable = self.writer.put(record.clone()).await;
        self.hold(record.clone());
        Ok((record, durable))
    }

    /// Refuses publishers this node cannot serve (see `StreamSettings::check`).
    pub(super) fn check_publishers(&self, definition: &TwinDefinition) -> Result<(), TwinError> {
        self.config
            .stream
            .check(&definition.sync)
            .map_err(|(field, message)| TwinError::invalid(&field, message))
    }

    /// Refuses a definition whose name another twin (than `except`) has in
    /// its organization.
    pub(super) fn refuse_taken_name(
        &self,
        definition: &TwinDefinition,
        except: Option<TwinId>,
    ) -> Result<(), TwinError> {
        if self
            .records
            .name_taken(definition.organization(), definition.name.as_str(), except)
        {
            return Err(TwinError::Conflict(format!(
                "a twin named `{}` already exists in organization {}",
                definition.name,
                definition.organization()
            )));
        }
        Ok(())
    }

    /// Stops the twin and lets go of it; the returned work, run off the
    /// host's loop, waits for its record's deletion and then erases its
    /// checkpoint (none for a fork, which was never stored). A deletion
    /// that fails gives the twin back to the host.
    pub(super) async fn delete(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
    ) -> Result<Option<BoxFuture<'static, Result<(), TwinError>>>, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?.clone();
        self.stop_actor(id, false).await;
        self.unhold(id);
        if record.ephemeral {
            return Ok(None);
        }
        let durable = self.writer.delete(id).await;
        let (host, checkpoints) = (myself.clone(), self.checkpoints.clone());
        Ok(Some(Box::pin(async move {
            match durable.wait().await {
                Ok(_) => {
                    checkpoints.delete(id).await;
                    Ok(())
                }
                Err(e) => {
                    let _ = host.cast(
                        LifecycleMsg::Rehold {
                            record: Box::new(record),
                        }
                        .into(),
                    );
                    Err(storage(e))
                }
            }
        })))
    }

    pub(super) async fn stop(&mut self, twin: &TwinRef) -> Result<Saved, TwinError> {
        let id = self.resolve(twin)?;
        let mut record = self.record(id)?.clone();
        if !self.activations.is_running(id)
            && record.status.state != Lifecycle::Failed
            && !self.is_passivated(id)
        {
            return Err(TwinError::Conflict(format!("twin {twin} is not running")));
        }
        self.stop_actor(id, true).await;
        record.status.state = Lifecycle::Stopped;
        record.status.passivated = false;
        Ok(self.save_queued(record).await)
    }

    pub(super) async fn restore(
        &mut self,
        twin: &TwinRef,
        state: SimState,
    ) -> Result<TwinRecord, TwinError> {
        let id = self.resolve(twin)?;
        let record = self.record(id)?.clone();
        if state.engine != record.definition.engine.kind {
            return Err(TwinError::invalid(
                "checkpoint",
                format!(
                    "checkpoint is for engine {}, this twin runs {}",
                    state.engine, record.definition.engine.kind
                ),
            ));
        }
        if self.activations.is_running(id) {
            let s = state.clone();
            self.call_twin(id, "restore", |reply| TwinMsg::SetState { state: s, reply })
                .await?;
        } else {
            // Check it fits the scene now rather than at the next start.
            let scene = self.scenes.check_runnable(&record.definition).await?;
            if state.scene_fingerprint != scene.fingerprint() {
                return Err(TwinError::invalid(
                    "checkpoint",
                    "checkpoint belongs to a different scene than this twin's",
                ));
            }
        }
        self.remember_checkpoint(id, Arc::new(state));
        Ok(record)
    }

    pub(super) async fn checkpoint(&mut self, twin: &TwinRef) -> Result<SimState, TwinError> {
        let id = self.resolve(twin)?;
        if self.activations.is_running(id) {
            return self
                .call_twin(id, "state", |reply| TwinMsg::GetState { reply })
                .await;
        }
        match self.stored_checkpoint(id).await? {
            Some(s) => Ok((*s).clone()),
            None => Err(TwinError::Conflict(format!(
                "twin {twin} has no checkpoint yet; start it first"
            ))),
        }
    }

    /// Handles again, in order, the requests that waited while `id` was
    /// starting or being passivated.
    pub(super) fn unpark(&mut self, myself: &ActorRef<HostMsg>, id: TwinId) {
        for msg in self.activations.settle(id) {
            // The host's own mailbox: it is gone only when the host is.
            let _ = myself.send_message(msg);
        }
    }

    /// Running as far as its owner knows, with no actor: deactivated.
    pub(super) fn is_passivated(&self, id: TwinId) -> bool {
        self.records
            .get(id)
            .is_some_and(|r| r.status.state == Lifecycle::Running && r.status.passivated)
    }

    /// Brings a passivated twin back from its checkpoint, paused, and
    /// answers `reply` with its actor once it runs; requests that name it
    /// meanwhile wait for it.
    pub(super) fn reactivate(
        &mut self,
        myself: &ActorRef<HostMsg>,
        twin: &TwinRef,
        reply: Reply<(DirectRoute, bool)>,
    ) {
        let options = StartOptions {
            clock: Clock::Paused,
            reset: false,
        };
        match self.prepare_start(twin, options) {
            Err(e) => drop(reply.send(Err(e))),
            Ok((id, prepare)) => off_loop(myself, prepare, move |prepared| LifecycleMsg::Launch {
                id,
                prepared,
                then: Launched::Reactivated(reply),
            }),
        }
    }

    /// Deactivates a twin its actor reported idle: the actor serves what is
    /// already queued, checkpoints its final state and ends; requests that
    /// come meanwhile wait, and the next one reactivates it.
    pub(super) async fn passivate(&mut self, id: TwinId, actor: ActorId) {
        let Some(running) = self.activations.passivate(id, actor) else {
            return;
        };
        let _ = running.actor.cast(TwinMsg::Passivate);
        running.actor.drain().ok();
        metrics::counter!("hanzo_twin_passivations_total").increment(1);
        if let Ok(mut record) = self.record(id).cloned() {
            record.status.passivated = true;
            self.tree.twin(&record, "passivated", None);
            let (_, durable) = self.save_queued(record).await;
            log_if_not_durable(id, durable, "saving the passivated status");
        }
    }
}

/// What a twin's start gathered off the host's loop.
pub struct Launch {
    scene: Arc<SceneModel>,
    initial: Option<Arc<SimState>>,
    options: StartOptions,
}

/// Runs `work` off the host's loop and hands its result back to the host
/// as the message `then` makes of it. A host that stopped meanwhile drops
/// the message, and with it any reply in it: the caller hears the host is
/// unavailable.
pub(super) fn off_loop<T: Send + 'static>(
    host: &ActorRef<HostMsg>,
    work: BoxFuture<'static, T>,
    then: impl FnOnce(T) -> LifecycleMsg + Send + 'static,
) {
    let host = host.clone();
    tokio::spawn(async move {
        let done = work.await;
        let _ = host.send_message(HostMsg::Lifecycle(then(done)));
    });
}

/// An update, checked as far as the host's loop goes.
pub(super) enum PreparedUpdate {
    /// Nothing left to check.
    Ready(TwinId, Box<TwinDefinition>),
    /// A new scene or engine, to check off the loop against the record as it
    /// was last changed at the given time.
    CheckScene(
        TwinId,
        chrono::DateTime<chrono::Utc>,
        BoxFuture<'static, Result<TwinDefinition, TwinError>>,
    ),
}

/// A record held, and its write on the way (none for a fork).
pub(super) type Saved = (TwinRecord, Option<Durable>);

/// Answers `reply` once the record's write is durable (at once without
/// one), off the host's loop; a write that failed is the answer.
pub(super) fn answer_when_durable(reply: Reply<TwinRecord>, result: Result<Saved, TwinError>) {
    match result {
        Err(e) => drop(reply.send(Err(e))),
        Ok((record, None)) => drop(reply.send(Ok(record))),
        Ok((record, Some(durable))) => {
            tokio::spawn(async move {
                let result = durable.wait().await.map(|_| record).map_err(storage);
                let _ = reply.send(result);
            });
        }
    }
}

/// Logs a write nobody waits for if it fails.
pub(super) fn log_if_not_durable(id: TwinId, durable: Option<Durable>, what: &'static str) {
    if let Some(durable) = durable {
        tokio::spawn(async move {
            if let Err(e) = durable.wait().await {
                tracing::error!(twin = %id, error = %e, "{what} failed");
            }
        });
    }
}
