//! Publishing what a twin predicts, back to the plant (`sync.publish`): one
//! child actor of the twin per publisher.
//!
//! At `sync.rate_hz` the publisher asks its twin for a prediction (the
//! twin's state, and what it predicts for every measured attribute beside
//! the latest reading) and publishes it, on the fixed schedule of
//! [`TickSchedule`]; while the broker is away it publishes nothing (a prediction is
//! stale by the time the broker is back) and counts the ticks it skipped.

use super::SourceStats;
use super::link::Link;
use super::mqtt::{describe, options, qos, spawn_poller};
use crate::definition::{MqttPublishSpec, SourceSpec};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, TwinMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rumqttc::{AsyncClient, ConnectionError, Packet};
use std::sync::Arc;
use std::time::Duration;

/// A publisher's ticks, on a fixed schedule of one per period. A tick that
/// fires late (timers fire on millisecond boundaries, and a loaded node
/// runs them later still) delays only itself: the next is due a period
/// after this one was due, or at once if that has passed. No tick comes
/// before it is due, and each is due at least a period after the previous
/// one was, and no earlier than the previous one ended; so `n` ticks span
/// at least `n - 2` periods, and the rate is kept (a schedule counted from
/// each tick's end instead falls to half of 1 kHz).
pub(super) struct TickSchedule<M> {
    period: Duration,
    due: std::time::Instant,
    /// The actor's tick message.
    tick: fn() -> M,
}

impl<M: ractor::Message> TickSchedule<M> {
    pub(super) fn new(period: Duration, tick: fn() -> M) -> TickSchedule<M> {
        TickSchedule {
            period,
            due: std::time::Instant::now(),
            tick,
        }
    }

    /// Schedules the first tick, a period from now.
    pub(super) fn start(&mut self, myself: &ActorRef<M>) {
        self.due = std::time::Instant::now() + self.period;
        myself.send_after(self.period, self.tick);
    }

    /// Schedules the tick after the one just handled.
    pub(super) fn next(&mut self, myself: &ActorRef<M>) {
        let now = std::time::Instant::now();
        self.due = (self.due + self.period).max(now);
        let wait = self.due - now;
        if wait.is_zero() {
            let _ = myself.cast((self.tick)());
        } else {
            myself.send_after(wait, self.tick);
        }
    }
}

/// How to spawn (and respawn) one MQTT publisher.
pub struct MqttPublisherChild {
    pub child_name: String,
    pub index: usize,
    pub spec: MqttPublishSpec,
    /// The sync block's sources, whose first MQTT connection a publisher
    /// without a broker of its own uses.
    pub sources: Vec<SourceSpec>,
    pub rate_hz: f64,
    pub backoff_ms: Vec<u64>,
    pub stats: Arc<SourceStats>,
    pub history: super::SyncHistory,
    pub twin_label: String,
}

impl ChildSpec for MqttPublisherChild {
    fn name(&self) -> &str {
        &self.child_name
    }

    fn kind(&self) -> &'static str {
        "publish"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = PublisherArgs {
            name: self.child_name.trim_start_matches("publish:").to_string(),
            index: self.index,
            spec: self.spec.clone(),
            sources: self.sources.clone(),
            period: Duration::from_secs_f64(1.0 / self.rate_hz),
            backoff_ms: self.backoff_ms.clone(),
            stats: self.stats.clone(),
            history: self.history.clone(),
            twin_label: self.twin_label.clone(),
            twin: context.twin,
            messages: context.messages,
        };
        crate::protocol::spawn_child(MqttPublisher, args, context.supervisor)
    }
}

pub struct PublisherArgs {
    name: String,
    index: usize,
    spec: MqttPublishSpec,
    sources: Vec<SourceSpec>,
    period: Duration,
    backoff_ms: Vec<u64>,
    stats: Arc<SourceStats>,
    history: super::SyncHistory,
    twin_label: String,
    twin: ActorRef<TwinMsg>,
    messages: crate::inspector::MessageCount,
}

pub struct MqttPublisher;

pub struct PublisherState {
    args: PublisherArgs,
    client: AsyncClient,
    eventloop: Option<rumqttc::EventLoop>,
    poller: Option<tokio::task::JoinHandle<()>>,
    link: Link,
    connected: bool,
    ticks: TickSchedule<PublisherMsg>,
}

pub enum PublisherMsg {
    Event(Result<Packet, ConnectionError>, RpcReplyPort<Duration>),
    /// Time to publish; each tick schedules the next.
    Tick,
}

/// Local only: never sent between nodes.
impl ractor::Message for PublisherMsg {}

impl PublisherState {
    /// Asks the twin for its prediction and publishes it, stamped with the
    /// tick's wall time `at`.
    async fn publish(&mut self, at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
        let mut payload = crate::protocol::call_actor(
            &self.args.twin,
            &self.args.twin_label,
            "the request",
            Duration::from_secs(5),
            |reply| TwinMsg::Prediction { reply },
        )
        .await
        .map_err(|e| e.to_string())?;
        payload["wall_time"] = serde_json::json!(at);
        let bytes = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
        self.client
            .try_publish(
                self.args.spec.topic.clone(),
                qos(self.args.spec.qos),
                false,
                bytes,
            )
            .map_err(|e| format!("publishing failed: {e}"))
    }
}

impl Actor for MqttPublisher {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = PublisherArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PublisherMsg>,
        args: PublisherArgs,
    ) -> Result<PublisherState, ActorProcessingErr> {
        let client_id = format!("hanzo-twin-{}-publish-{}", args.twin_label, args.index);
        let connection = args
            .spec
            .connection(&args.sources)
            .ok_or("the publisher has no broker to publish to")?;
        let broker = connection.broker.to_string();
        let options = match options(&connection, client_id) {
            Ok(options) => options,
            Err(reason) => {
                args.stats.refuse(&reason);
                return Err(reason.into());
            }
        };
        let (client, eventloop) = AsyncClient::new(options, 64);
        let link = Link::new(
            args.name.clone(),
            broker,
            "the MQTT broker",
            args.stats.clone(),
            args.history.clone(),
            args.backoff_ms.clone(),
        );
        let period = args.period;
        Ok(PublisherState {
            args,
            client,
            eventloop: Some(eventloop),
            poller: None,
            link,
            connected: false,
            ticks: TickSchedule::new(period, || PublisherMsg::Tick),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<PublisherMsg>,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(eventloop) = state.eventloop.take() {
            // A publisher reads nothing: only (re)connections concern it.
            let connack = |p: &Packet| matches!(p, Packet::ConnAck(_));
            state.poller = Some(spawn_poller(
                eventloop,
                myself.clone(),
                connack,
                PublisherMsg::Event,
            ));
        }
        state.ticks.start(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PublisherMsg>,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(poller) = state.poller.take() {
            poller.abort();
        }
        let _ = state.client.try_disconnect();
        state.link.stopped();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PublisherMsg>,
        msg: PublisherMsg,
        state: &mut PublisherState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.args.messages.time();
        match msg {
            PublisherMsg::Event(event, reply) => {
                let wait = match event {
                    Ok(Packet::ConnAck(_)) => {
                        state.connected = true;
                        state.link.connected();
                        Duration::ZERO
                    }
                    Ok(_) => Duration::ZERO,
                    Err(error) => {
                        state.connected = false;
                        let (connection, reason) = describe(&error);
                        state.link.lost(connection, reason)
                    }
                };
                // The poller waiting for this reply is gone only if the
                // publisher is stopping.
                let _ = reply.send(wait);
            }
            PublisherMsg::Tick => {
                let at = chrono::Utc::now();
                if state.connected {
                    match state.publish(at).await {
                        Ok(()) => {
                            state.args.stats.message(at);
                            metrics::counter!("hanzo_twin_sync_messages_total", "twin" => state.args.twin_label.clone(), "direction" => "out", "outcome" => "published")
                                .increment(1);
                        }
                        Err(reason) => state.args.stats.update(|s| {
                            s.skipped += 1;
                            s.last_error = Some(reason);
                        }),
                    }
                } else {
                    state.args.stats.update(|s| s.skipped += 1);
                }
                state.ticks.next(&myself);
            }
        }
        Ok(())
    }
}
