//! An MQTT source (rumqttc): one child actor of its twin per source.
//!
//! The actor owns the client; a task polls the connection and hands each
//! event to the actor with a call, so the broker can never queue more than
//! one event in the actor's mailbox, and parsing a message happens in the
//! actor, where a panic is a supervised failure. Connection errors are not
//! failures: the source waits the sync block's `reconnect_backoff_ms` and
//! reconnects, reporting the state and the error in its status.

use super::SourceStats;
use super::link::{Link, password};
use super::readings::{Inbox, Reading, Unread, parse_payload, sensor_key};
use crate::definition::{MqttConnection, MqttSourceSpec, TlsFiles};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, TwinMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, MqttOptions, Packet, QoS,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to spawn (and respawn) one MQTT source.
pub struct MqttChild {
    pub child_name: String,
    /// The source's index in the twin's `sync.sources`.
    pub index: usize,
    pub spec: MqttSourceSpec,
    pub backoff_ms: Vec<u64>,
    pub inbox: Inbox,
    pub stats: Arc<SourceStats>,
    pub twin_label: String,
    pub history: super::SyncHistory,
}

impl ChildSpec for MqttChild {
    fn name(&self) -> &str {
        &self.child_name
    }

    fn kind(&self) -> &'static str {
        "sync"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = MqttArgs {
            index: self.index,
            spec: self.spec.clone(),
            backoff_ms: self.backoff_ms.clone(),
            inbox: self.inbox.clone(),
            stats: self.stats.clone(),
            twin: context.twin,
            twin_label: self.twin_label.clone(),
            messages: context.messages,
            history: self.history.clone(),
            name: self.child_name.trim_start_matches("sync:").to_string(),
        };
        crate::protocol::spawn_child(MqttSource, args, context.supervisor)
    }
}

pub struct MqttArgs {
    index: usize,
    spec: MqttSourceSpec,
    backoff_ms: Vec<u64>,
    inbox: Inbox,
    stats: Arc<SourceStats>,
    twin: ActorRef<TwinMsg>,
    twin_label: String,
    messages: crate::inspector::MessageCount,
    history: super::SyncHistory,
    /// The source's name, as its status and history show it.
    name: String,
}

pub struct MqttSource;

pub struct MqttState {
    args: MqttArgs,
    client: AsyncClient,
    /// Taken by the polling task when the actor has started.
    eventloop: Option<rumqttc::EventLoop>,
    poller: Option<tokio::task::JoinHandle<()>>,
    link: Link,
}

/// What the polling task hands the actor; the reply is how long to wait
/// before polling again.
pub enum MqttMsg {
    Event(Result<Packet, ConnectionError>, RpcReplyPort<Duration>),
}

/// Local only: never sent between nodes.
impl ractor::Message for MqttMsg {}

/// Reads the TLS files into a rustls configuration on ring (the provider
/// the whole node uses), trusting only the given CA.
fn tls_config(files: &TlsFiles) -> Result<TlsConfiguration, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read_certs = |path: &std::path::Path, what: &str| {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read tls.{what} {}: {e}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(&files.ca_file, "ca_file")? {
        roots
            .add(cert)
            .map_err(|e| format!("tls.ca_file {}: {e}", files.ca_file.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_root_certificates(roots);
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("cannot read tls.key_file {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("tls.cert_file and tls.key_file do not make a client certificate: {e}")
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConfiguration::Rustls(Arc::new(config)))
}

/// The client's options for `connection`; `client_id` unless it names one.
pub(super) fn options(
    connection: &MqttConnection,
    client_id: String,
) -> Result<MqttOptions, String> {
    let address = connection.address();
    let client_id = connection.client_id.map_or(client_id, str::to_string);
    let mut options = MqttOptions::new(client_id, address.host, address.port);
    options.set_keep_alive(Duration::from_secs(10));
    if let Some(user) = connection.username {
        options.set_credentials(
            user,
            password(connection.password_env, connection.password_file)?.unwrap_or_default(),
        );
    }
    if address.tls {
        let files = connection.tls.ok_or("mqtts:// needs a tls block")?;
        options.set_transport(Transport::tls_with_config(tls_config(files)?));
    }
    Ok(options)
}

pub(super) fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// Says what a connection error means for a person reading the status.
pub(super) fn describe(error: &ConnectionError) -> (&'static str, String) {
    match error {
        ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                ConnectReturnCode::NotAuthorized => "not authorized",
                ConnectReturnCode::BadClientId => "client id rejected",
                ConnectReturnCode::ServiceUnavailable => "service unavailable",
                ConnectReturnCode::RefusedProtocolVersion => "protocol version refused",
                ConnectReturnCode::Success => "refused",
            };
            (
                "refused",
                format!("the broker refused the connection: {why}"),
            )
        }
        ConnectionError::Tls(e) => ("refused", format!("TLS failed: {e}")),
        other => ("disconnected", other.to_string()),
    }
}

/// Polls the connection and hands each error, and each incoming packet
/// that `wanted` picks, to `actor` with a call (so one at a time waits in
/// its mailbox), sleeping as long as the actor answers (the backoff after an
/// error). The rest (acknowledgements, pings) the poller handles alone, so
/// the connection never waits on a busy actor for them. Ends with the actor.
pub(super) fn spawn_poller<M: ractor::Message>(
    mut eventloop: rumqttc::EventLoop,
    actor: ActorRef<M>,
    wanted: fn(&Packet) -> bool,
    wrap: fn(Result<Packet, ConnectionError>, RpcReplyPort<Duration>) -> M,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let event = match eventloop.poll().await {
                Ok(Event::Incoming(packet)) if wanted(&packet) => Ok(packet),
                Ok(_) => continue,
                Err(e) => Err(e),
            };
            match actor.call(|reply| wrap(event, reply), None).await {
                Ok(ractor::rpc::CallResult::Success(wait)) => {
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                // The actor is gone, and its connection with it.
                _ => break,
            }
        }
    })
}

impl MqttState {
    fn on_publish(&mut self, topic: &str, payload: &[u8]) {
        let at = chrono::Utc::now();
        let received = Instant::now();
        self.args.stats.message(at);
        let label = self.args.twin_label.clone();
        let count = |outcome: &'static str| {
            metrics::counter!("hanzo_twin_sync_messages_total", "twin" => label.clone(), "direction" => "in", "outcome" => outcome)
                .increment(1);
        };
        let key = sensor_key(&self.args.spec.topic, topic);
        let Some(target) = self
            .args
            .spec
            .mapping
            .get(key)
            .or_else(|| self.args.spec.mapping.get(topic))
        else {
            let reason = format!("no mapping for sensor `{key}` (topic {topic})");
            self.args
                .stats
                .unread(&self.args.history, Unread::Unmapped(reason));
            count("unmapped");
            return;
        };
        match parse_payload(self.args.spec.payload, target, payload) {
            Ok(values) => {
                let n = values.len() as u64;
                let index = self.args.index;
                let readings = values.into_iter().map(|(target, value)| Reading {
                    source: index,
                    target,
                    value,
                    received,
                    received_at: at,
                });
                self.args.inbox.push(readings, &self.args.twin);
                self.args.stats.update(|s| s.readings += n);
                count("read");
            }
            Err(reason) => {
                let reason = format!("topic {topic}: {reason}");
                self.args
                    .stats
                    .unread(&self.args.history, Unread::Unparsed(reason));
                count("unparsed");
            }
        }
    }
}

impl Actor for MqttSource {
    type Msg = MqttMsg;
    type State = MqttState;
    type Arguments = MqttArgs;

    /// A source whose files or secrets cannot be read fails here, and its
    /// twin retries it on the child backoff, showing the reason.
    async fn pre_start(
        &self,
        _myself: ActorRef<MqttMsg>,
        args: MqttArgs,
    ) -> Result<MqttState, ActorProcessingErr> {
        let client_id = format!("hanzo-twin-{}-{}", args.twin_label, args.index);
        let options = match options(&args.spec.connection(), client_id) {
            Ok(options) => options,
            Err(reason) => {
                args.stats.refuse(&reason);
                tracing::warn!(source = %args.stats.name(), %reason, "sync source cannot start");
                return Err(reason.into());
            }
        };
        args.stats.update(|s| s.state = "connecting".into());
        let (client, eventloop) = AsyncClient::new(options, 64);
        let link = Link::new(
            args.name.clone(),
            args.spec.broker.clone(),
            "the MQTT broker",
            args.stats.clone(),
            args.history.clone(),
            args.backoff_ms.clone(),
        );
        Ok(MqttState {
            args,
            client,
            eventloop: Some(eventloop),
            poller: None,
            link,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<MqttMsg>,
        state: &mut MqttState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(eventloop) = state.eventloop.take() {
            state.poller = Some(spawn_poller(eventloop, myself, |_| true, MqttMsg::Event));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<MqttMsg>,
        state: &mut MqttState,
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
        _myself: ActorRef<MqttMsg>,
        msg: MqttMsg,
        state: &mut MqttState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.args.messages.time();
        let MqttMsg::Event(event, reply) = msg;
        let mut wait = Duration::ZERO;
        match event {
            Ok(Packet::ConnAck(_)) => {
                let topic = state.args.spec.topic.clone();
                let qos = qos(state.args.spec.qos);
                // Subscriptions do not outlive a clean session: subscribe
                // on every connection. Never blocks (the poller is waiting
                // for this handler).
                if let Err(e) = state.client.try_subscribe(topic, qos) {
                    return Err(format!("subscribing failed: {e}").into());
                }
                state.link.connected();
            }
            Ok(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    let topic = state.args.spec.topic.clone();
                    state.args.stats.update(|s| {
                        s.last_error =
                            Some(format!("the broker refused the subscription to {topic}"));
                    });
                }
            }
            Ok(Packet::Publish(publish)) => {
                state.on_publish(&publish.topic, &publish.payload);
            }
            Ok(_) => {}
            Err(error) => {
                let (connection, reason) = describe(&error);
                wait = state.link.lost(connection, reason);
            }
        }
        // The poller waiting for this reply is gone only if the source is
        // stopping.
        let _ = reply.send(wait);
        Ok(())
    }
}
