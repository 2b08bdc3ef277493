//! Drift alerts leaving the twin (`drift_detection.response: alert`): one
//! child actor of the twin (`alert:drift`) delivers each drift and
//! drift_cleared event to the definition's webhook (a JSON POST) and, when
//! the node has a stream, to Kafka on `<topic_prefix>.<twin id>.alerts`.
//!
//! The twin hands alerts over through a small bounded queue and never waits
//! for a delivery: a slow receiver costs dropped alerts (counted as
//! skipped), never a slower twin. Each target shows in the sync status
//! among the publishers, with what was delivered and the last failure.

use super::{SourceStats, SyncHistory};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, mpsc};

/// Alerts waiting for delivery; past this the newest are dropped.
pub const QUEUE: usize = 64;

/// How long one webhook delivery may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// One place alerts go, and its counters in the sync status.
#[derive(Clone)]
pub enum AlertTarget {
    Webhook {
        url: String,
        stats: Arc<SourceStats>,
    },
    #[cfg(feature = "kafka")]
    Kafka {
        brokers: super::KafkaBrokers,
        topic: String,
        stats: Arc<SourceStats>,
    },
}

/// How to spawn (and respawn) the alert child. The queue outlives a
/// restart: alerts queued while it was down are delivered by the next one.
pub struct AlertChild {
    pub targets: Vec<AlertTarget>,
    pub queue: Arc<Mutex<mpsc::Receiver<Value>>>,
    pub history: SyncHistory,
    pub twin_label: String,
}

impl ChildSpec for AlertChild {
    fn name(&self) -> &str {
        "alert:drift"
    }

    fn kind(&self) -> &'static str {
        "alert"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = AlertArgs {
            targets: self.targets.clone(),
            queue: self.queue.clone(),
            history: self.history.clone(),
            twin_label: self.twin_label.clone(),
            messages: context.messages,
        };
        crate::protocol::spawn_child(AlertSender, args, context.supervisor)
    }
}

pub struct AlertArgs {
    targets: Vec<AlertTarget>,
    queue: Arc<Mutex<mpsc::Receiver<Value>>>,
    history: SyncHistory,
    twin_label: String,
    messages: crate::inspector::MessageCount,
}

pub struct AlertSender;

/// The alert child takes no messages: its worker drains the queue.
pub enum AlertMsg {}

/// Local only: never sent between nodes.
impl ractor::Message for AlertMsg {}

pub struct AlertState {
    worker: Option<tokio::task::JoinHandle<()>>,
}

/// Where the worker delivers, with the clients it needs.
struct Delivery {
    http: reqwest::Client,
    #[cfg(feature = "kafka")]
    producer: Option<rdkafka::producer::FutureProducer>,
    args: AlertArgs,
}

impl Delivery {
    async fn deliver(&self, alert: &Value) {
        let _timer = self.args.messages.time();
        for target in &self.args.targets {
            match target {
                AlertTarget::Webhook { url, stats } => {
                    let sent = self
                        .http
                        .post(url)
                        .json(alert)
                        .send()
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| {
                            if r.status().is_success() {
                                Ok(())
                            } else {
                                Err(format!("the webhook answered {}", r.status()))
                            }
                        });
                    self.settle(stats, "webhook", sent);
                }
                #[cfg(feature = "kafka")]
                AlertTarget::Kafka { topic, stats, .. } => {
                    let Some(producer) = &self.producer else {
                        continue;
                    };
                    let bytes = alert.to_string();
                    let record = rdkafka::producer::FutureRecord::to(topic)
                        .key(&self.args.twin_label)
                        .payload(&bytes);
                    let sent = match producer.send_result(record) {
                        Err((e, _)) => Err(format!("the producer refused the alert: {e}")),
                        Ok(delivery) => match delivery.await {
                            Ok(Ok(_)) => Ok(()),
                            Ok(Err((e, _))) => Err(format!("delivery failed: {e}")),
                            Err(_) => Err("the producer stopped".into()),
                        },
                    };
                    self.settle(stats, "stream", sent);
                }
            }
        }
    }

    fn settle(&self, stats: &SourceStats, target: &str, sent: Result<(), String>) {
        match sent {
            Ok(()) => {
                stats.update(|s| {
                    if s.state != "connected" {
                        s.state = "connected".into();
                        s.connected_since = Some(chrono::Utc::now());
                        s.last_error = None;
                    }
                });
                stats.message(chrono::Utc::now());
            }
            Err(reason) => {
                tracing::warn!(twin = %self.args.twin_label, %target, %reason, "drift alert not delivered");
                self.args
                    .history
                    .record(Some(&stats.name()), "alert_failed", reason.clone(), None);
                stats.update(|s| {
                    s.state = "disconnected".into();
                    s.connected_since = None;
                    s.skipped += 1;
                    s.last_error = Some(reason);
                });
            }
        }
    }
}

impl Actor for AlertSender {
    type Msg = AlertMsg;
    type State = AlertState;
    type Arguments = AlertArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AlertMsg>,
        args: AlertArgs,
    ) -> Result<AlertState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        #[cfg(feature = "kafka")]
        let producer = match args.targets.iter().find_map(|t| match t {
            AlertTarget::Kafka { brokers, .. } => Some(brokers.clone()),
            AlertTarget::Webhook { .. } => None,
        }) {
            None => None,
            Some(brokers) => Some(
                super::kafka::client_config(&brokers)
                    .set(
                        "client.id",
                        format!("hanzo-twin-{}-alerts", args.twin_label),
                    )
                    .set("message.timeout.ms", "10000")
                    .create()
                    .map_err(|e| format!("cannot create the Kafka producer for alerts: {e}"))?,
            ),
        };
        for target in &args.targets {
            let stats = match target {
                AlertTarget::Webhook { stats, .. } => stats,
                #[cfg(feature = "kafka")]
                AlertTarget::Kafka { stats, .. } => stats,
            };
            // Nothing sent yet: the first alert tells how the receiver is.
            stats.update(|s| s.state = "idle".into());
        }
        let queue = args.queue.clone();
        let delivery = Delivery {
            http,
            #[cfg(feature = "kafka")]
            producer,
            args,
        };
        let worker = tokio::spawn(async move {
            let mut queue = queue.lock().await;
            while let Some(alert) = queue.recv().await {
                delivery.deliver(&alert).await;
            }
        });
        Ok(AlertState {
            worker: Some(worker),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AlertMsg>,
        state: &mut AlertState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(worker) = state.worker.take() {
            worker.abort();
        }
        Ok(())
    }
}
