//! Publishing what a twin predicts to Kafka (`sync.publish` entries of type
//! `kafka`), through librdkafka (rdkafka). One child actor of the twin per
//! publisher, like the MQTT publisher: at `sync.rate_hz` it asks its twin
//! for a prediction and hands it to the producer, keyed by the twin's id so
//! one twin's predictions stay in order on one partition.
//!
//! librdkafka connects, retries and reconnects by itself; the publisher
//! learns how the broker is from each message's delivery report: a delivered
//! message makes it `connected`, a failed one `disconnected` with the
//! reason. A tick while the producer's queue is full publishes nothing and
//! is counted as skipped.
//!
//! Also the reading side of a replay from Kafka ([`TopicLines`]), and the
//! client settings every Kafka client of the node shares ([`client_config`]).

use super::publish::TickSchedule;
use super::{KafkaBrokers, SourceStats};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, TwinMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::sync::Arc;
use std::time::Duration;

/// How long librdkafka keeps trying to deliver one prediction; one older
/// than this is stale anyway.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A Kafka client's settings for `brokers`: in the clear, or over mutual
/// TLS, where librdkafka checks each broker's certificate against the CA
/// and the host it reached (`ssl.endpoint.identification.algorithm`).
pub fn client_config(brokers: &KafkaBrokers) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &brokers.list);
    if let Some(tls) = &brokers.tls {
        config
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", tls.ca_file.to_string_lossy())
            .set("ssl.certificate.location", tls.cert_file.to_string_lossy())
            .set("ssl.key.location", tls.key_file.to_string_lossy())
            .set("ssl.endpoint.identification.algorithm", "https");
    }
    config
}

/// How to spawn (and respawn) one Kafka publisher.
pub struct KafkaPublisherChild {
    pub child_name: String,
    /// The entry's brokers, or the node's stream.
    pub brokers: KafkaBrokers,
    pub topic: String,
    pub rate_hz: f64,
    pub stats: Arc<SourceStats>,
    pub twin_label: String,
}

impl ChildSpec for KafkaPublisherChild {
    fn name(&self) -> &str {
        &self.child_name
    }

    fn kind(&self) -> &'static str {
        "publish"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = KafkaArgs {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            period: Duration::from_secs_f64(1.0 / self.rate_hz),
            stats: self.stats.clone(),
            twin_label: self.twin_label.clone(),
            twin: context.twin,
            messages: context.messages,
        };
        crate::protocol::spawn_child(KafkaPublisher, args, context.supervisor)
    }
}

pub struct KafkaArgs {
    brokers: KafkaBrokers,
    topic: String,
    period: Duration,
    stats: Arc<SourceStats>,
    twin_label: String,
    twin: ActorRef<TwinMsg>,
    messages: crate::inspector::MessageCount,
}

pub struct KafkaPublisher;

/// Puts what librdkafka reports about the brokers (a certificate refused,
/// every broker down) into the publisher's status as it happens, where a
/// delivery report would only say, seconds later, that a message timed out.
pub struct StatusContext {
    stats: Arc<SourceStats>,
    twin_label: String,
}

impl rdkafka::ClientContext for StatusContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(twin = %self.twin_label, %error, "Kafka publisher: {reason}");
        self.stats.update(|s| {
            s.state = "disconnected".into();
            s.connected_since = None;
            s.last_error = Some(reason.to_string());
        });
    }
}

pub struct KafkaState {
    args: KafkaArgs,
    producer: FutureProducer<StatusContext>,
    ticks: TickSchedule<KafkaMsg>,
}

pub enum KafkaMsg {
    /// Time to publish; each tick schedules the next.
    Tick,
}

/// Local only: never sent between nodes.
impl ractor::Message for KafkaMsg {}

impl KafkaState {
    /// Asks the twin for its prediction and queues it for the broker; the
    /// delivery report comes back to the stats.
    async fn publish(&self, at: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
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
        let record = FutureRecord::to(&self.args.topic)
            .key(&self.args.twin_label)
            .payload(&bytes)
            .timestamp(at.timestamp_millis());
        let delivery = self
            .producer
            .send_result(record)
            .map_err(|(e, _)| format!("the producer refused the message: {e}"))?;
        let stats = self.args.stats.clone();
        let label = self.args.twin_label.clone();
        // Bounded: at most rate_hz × DELIVERY_TIMEOUT reports are pending.
        tokio::spawn(async move {
            match delivery.await {
                Ok(Ok(_)) => {
                    stats.update(|s| {
                        if s.state != "connected" {
                            s.state = "connected".into();
                            s.connected_since = Some(chrono::Utc::now());
                            s.last_error = None;
                        }
                    });
                    stats.message(at);
                    metrics::counter!("hanzo_twin_sync_messages_total", "twin" => label, "direction" => "out", "outcome" => "published")
                        .increment(1);
                }
                Ok(Err((e, _))) => stats.update(|s| {
                    s.state = "disconnected".into();
                    s.connected_since = None;
                    s.skipped += 1;
                    s.last_error = Some(format!("delivery failed: {e}"));
                }),
                // The producer went first (the publisher is stopping).
                Err(_) => {}
            }
        });
        Ok(())
    }
}

impl Actor for KafkaPublisher {
    type Msg = KafkaMsg;
    type State = KafkaState;
    type Arguments = KafkaArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<KafkaMsg>,
        args: KafkaArgs,
    ) -> Result<KafkaState, ActorProcessingErr> {
        let producer: FutureProducer<StatusContext> = client_config(&args.brokers)
            .set("client.id", format!("hanzo-twin-{}", args.twin_label))
            .set(
                "message.timeout.ms",
                DELIVERY_TIMEOUT.as_millis().to_string(),
            )
            // Predictions are small and frequent: send them at once.
            .set("linger.ms", "5")
            .create_with_context(StatusContext {
                stats: args.stats.clone(),
                twin_label: args.twin_label.clone(),
            })
            .map_err(|e| {
                let reason = format!("cannot create the Kafka producer: {e}");
                args.stats.refuse(&reason);
                reason
            })?;
        args.stats.update(|s| s.state = "connecting".into());
        let period = args.period;
        Ok(KafkaState {
            args,
            producer,
            ticks: TickSchedule::new(period, || KafkaMsg::Tick),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<KafkaMsg>,
        state: &mut KafkaState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticks.start(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<KafkaMsg>,
        state: &mut KafkaState,
    ) -> Result<(), ActorProcessingErr> {
        // What is queued goes out if the broker takes it soon; a stopping
        // twin does not wait longer for its last predictions.
        let producer = state.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(1))).await;
        state.args.stats.update(|s| {
            s.state = "disconnected".into();
            s.connected_since = None;
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<KafkaMsg>,
        msg: KafkaMsg,
        state: &mut KafkaState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.args.messages.time();
        match msg {
            KafkaMsg::Tick => {
                let at = chrono::Utc::now();
                if let Err(reason) = state.publish(at).await {
                    state.args.stats.update(|s| {
                        s.skipped += 1;
                        s.last_error = Some(reason);
                    });
                }
                state.ticks.next(&myself);
            }
        }
        Ok(())
    }
}

/// A topic read from its start to where it ended when opened, one line per
/// message: a recording replayed from Kafka (`sync.replay.kafka`).
///
/// The consumer takes its partitions by assignment, not by joining a
/// group, so it commits nothing and disturbs no one else's offsets.
pub struct TopicLines {
    consumer: rdkafka::consumer::StreamConsumer,
    /// Per partition still to read: the offset past its last message when
    /// the topic was opened.
    ends: std::collections::HashMap<i32, i64>,
}

impl TopicLines {
    pub async fn open(brokers: &KafkaBrokers, topic: &str) -> Result<TopicLines, String> {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::StreamConsumer = client_config(brokers)
            .set(
                "group.id",
                format!("hanzo-twin-replay-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| format!("cannot create the Kafka consumer: {e}"))?;
        let topic = topic.to_string();
        // Metadata and watermarks are blocking calls into librdkafka.
        let (consumer, ends) = tokio::task::spawn_blocking(move || {
            let wait = Duration::from_secs(10);
            let metadata = consumer
                .fetch_metadata(Some(&topic), wait)
                .map_err(|e| format!("cannot read topic {topic}'s metadata: {e}"))?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
                .ok_or_else(|| format!("the brokers have no topic {topic}"))?;
            let mut ends = std::collections::HashMap::new();
            let mut assignment = rdkafka::TopicPartitionList::new();
            for partition in partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&topic, partition, wait)
                    .map_err(|e| format!("cannot read where topic {topic} ends: {e}"))?;
                if high > low {
                    ends.insert(partition, high);
                    assignment
                        .add_partition_offset(&topic, partition, rdkafka::Offset::Offset(low))
                        .map_err(|e| e.to_string())?;
                }
            }
            consumer
                .assign(&assignment)
                .map_err(|e| format!("cannot read topic {topic}: {e}"))?;
            Ok::<_, String>((consumer, ends))
        })
        .await
        .map_err(|e| e.to_string())??;
        Ok(TopicLines { consumer, ends })
    }

    /// The next message's text; `None` at the end: once every partition
    /// was read to where it ended when opened, and no message came for
    /// [`IDLE_END`]. (Some Kafka-protocol brokers report a partition's end
    /// by record batch rather than by message, so the end offset alone is
    /// not trusted to be the last.)
    pub async fn next_line(&mut self) -> Result<Option<String>, String> {
        use rdkafka::Message;
        let at_end = self.ends.is_empty();
        let wait = if at_end { IDLE_END } else { STALLED };
        let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) if at_end => return Ok(None),
            Err(_) => {
                return Err(format!(
                    "no message for {} s before the topic's end",
                    STALLED.as_secs()
                ));
            }
            Ok(message) => message.map_err(|e| format!("reading the topic failed: {e}"))?,
        };
        if self
            .ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            self.ends.remove(&message.partition());
        }
        Ok(Some(
            message
                .payload()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default(),
        ))
    }
}

/// How long a replayed topic read to its end stays quiet before the
/// replay ends.
const IDLE_END: Duration = Duration::from_secs(1);

/// How long a replayed topic may give nothing before its end.
const STALLED: Duration = Duration::from_secs(30);
