//! An OPC-UA source (async-opcua): one child actor of its twin per source,
//! one subscription per session, one monitored item per mapped node.
//!
//! A task holds the session. Each data change is read where it arrives (in
//! the subscription's callback) and goes straight into the twin's bounded
//! inbox, so a fast server can never fill a mailbox. The actor keeps the
//! connection's bookkeeping: the task tells it when the session comes up,
//! and asks it how long to wait when the session fails or breaks (the sync
//! block's `reconnect_backoff_ms`). The library's own reconnection is off,
//! so every outage, however short, is a gap in the history.
//!
//! Trust is pinned: the source trusts exactly the server certificate its
//! definition names (copied into a private PKI folder that lives as long as
//! the actor), and presents the twin's certificate.

use super::SourceStats;
use super::link::{Link, password};
use super::readings::{Inbox, Reading, Unread};
use crate::definition::{OpcuaSourceSpec, SecurityMode, Target};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, SyncValue, TwinMsg};
use futures_util::StreamExt;
use opcua::client::{
    Client, ClientBuilder, ClientConfig, DataChangeCallback, IdentityToken, MonitoredItem, Session,
};
use opcua::crypto::{CertificateStore, SecurityPolicy};
use opcua::types::{
    DataValue, EndpointDescription, MessageSecurityMode, MonitoredItemCreateRequest,
    MonitoringMode, MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
    UserTokenPolicy, Variant,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to spawn (and respawn) one OPC-UA source.
pub struct OpcuaChild {
    pub child_name: String,
    /// The source's index in the twin's `sync.sources`.
    pub index: usize,
    pub spec: OpcuaSourceSpec,
    pub backoff_ms: Vec<u64>,
    pub inbox: Inbox,
    pub stats: Arc<SourceStats>,
    pub history: super::SyncHistory,
}

impl ChildSpec for OpcuaChild {
    fn name(&self) -> &str {
        &self.child_name
    }

    fn kind(&self) -> &'static str {
        "sync"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let name = self.child_name.trim_start_matches("sync:").to_string();
        let args = OpcuaArgs {
            spec: self.spec.clone(),
            link: Link::new(
                name.clone(),
                self.spec.endpoint.clone(),
                "the OPC-UA server",
                self.stats.clone(),
                self.history.clone(),
                self.backoff_ms.clone(),
            ),
            feed: Arc::new(Feed {
                index: self.index,
                inbox: self.inbox.clone(),
                stats: self.stats.clone(),
                history: self.history.clone(),
                twin: context.twin,
                name,
            }),
            messages: context.messages,
        };
        crate::protocol::spawn_child(OpcuaSource, args, context.supervisor)
    }
}

pub struct OpcuaArgs {
    spec: OpcuaSourceSpec,
    link: Link,
    feed: Arc<Feed>,
    messages: crate::inspector::MessageCount,
}

/// Where readings go: shared by the subscription's callbacks.
struct Feed {
    index: usize,
    inbox: Inbox,
    stats: Arc<SourceStats>,
    history: super::SyncHistory,
    twin: ActorRef<TwinMsg>,
    name: String,
}

impl Feed {
    /// One data change of a monitored node.
    fn take(&self, node: &str, target: &Target, data: DataValue) {
        let now = chrono::Utc::now();
        self.stats.message(now);
        match reading(target, &data) {
            Ok(value) => {
                self.stats.update(|s| s.readings += 1);
                self.inbox.push(
                    [Reading {
                        source: self.index,
                        target: target.clone(),
                        value,
                        received: Instant::now(),
                        received_at: now,
                    }],
                    &self.twin,
                );
            }
            Err(reason) => self
                .stats
                .unread(&self.history, Unread::Unparsed(format!("{node}: {reason}"))),
        }
    }
}

pub struct OpcuaSource;

pub struct OpcuaState {
    args: OpcuaArgs,
    /// The task holding the session; aborted when the source stops.
    session: Option<tokio::task::JoinHandle<()>>,
    /// The PKI folder: the twin's trust in the one server. Deleted with
    /// the actor.
    _pki: Option<tempfile::TempDir>,
}

/// What the session's task tells the source.
pub enum OpcuaMsg {
    /// The session is up and subscribed.
    Connected,
    /// The session failed or broke, leaving the link `connection`
    /// (`disconnected` or `refused`) for `reason`; the reply is how long to
    /// wait before the next try.
    Lost {
        connection: &'static str,
        reason: String,
        reply: RpcReplyPort<Duration>,
    },
}

/// Local only: never sent between nodes.
impl ractor::Message for OpcuaMsg {}

impl Actor for OpcuaSource {
    type Msg = OpcuaMsg;
    type State = OpcuaState;
    type Arguments = OpcuaArgs;

    /// A source whose files or secrets cannot be read fails here, and its
    /// twin retries it on the child backoff, showing the reason.
    async fn pre_start(
        &self,
        myself: ActorRef<OpcuaMsg>,
        args: OpcuaArgs,
    ) -> Result<OpcuaState, ActorProcessingErr> {
        let prepared = prepare(&args.spec);
        let (connection, pki) = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                args.link.stats.refuse(&reason);
                tracing::warn!(source = %args.feed.name, %reason, "OPC-UA source cannot start");
                return Err(reason.into());
            }
        };
        args.link.stats.update(|s| s.state = "connecting".into());
        let session = tokio::spawn(run(connection, args.feed.clone(), myself));
        Ok(OpcuaState {
            args,
            session: Some(session),
            _pki: pki,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<OpcuaMsg>,
        msg: OpcuaMsg,
        state: &mut OpcuaState,
    ) -> Result<(), ActorProcessingErr> {
        let _timer = state.args.messages.time();
        match msg {
            OpcuaMsg::Connected => state.args.link.connected(),
            OpcuaMsg::Lost {
                connection,
                reason,
                reply,
            } => {
                let wait = state.args.link.lost(connection, reason);
                // The task waiting for this reply is gone only if the
                // source is stopping.
                let _ = reply.send(wait);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<OpcuaMsg>,
        state: &mut OpcuaState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(session) = state.session.take() {
            session.abort();
        }
        state.args.link.stopped();
        Ok(())
    }
}

/// Everything a session needs, read and checked once per actor start.
struct Connection {
    config: ClientConfig,
    endpoint: EndpointDescription,
    identity: IdentityToken,
    publishing_interval: Duration,
    sampling_interval_ms: f64,
    /// Node id to (its text, its target).
    nodes: Vec<(NodeId, String, Target)>,
}

/// Reads the files and secrets, and puts the server's certificate in a
/// fresh PKI folder's trusted list.
fn prepare(spec: &OpcuaSourceSpec) -> Result<(Connection, Option<tempfile::TempDir>), String> {
    let security = &spec.security;
    let policy = SecurityPolicy::from_str(security.policy.as_str())
        .map_err(|_| format!("security.policy {} is unknown", security.policy.as_str()))?;
    let mode = match security.mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    let mut builder = ClientBuilder::new()
        .application_name("Hanzo Twin")
        .application_uri(security.application_uri())
        .product_uri("urn:hanzo-twin")
        .create_sample_keypair(false)
        .trust_server_certs(false)
        .verify_server_certs(true)
        // Reconnection is the source's (its backoff, its gaps).
        .session_retry_limit(0)
        .keep_alive_interval(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(10));
    let mut pki = None;
    if security.mode != SecurityMode::None {
        let folder = tempfile::Builder::new()
            .prefix("hanzo-twin-opcua-")
            .tempdir()
            .map_err(|e| format!("cannot make a PKI folder: {e}"))?;
        let (Some(cert), Some(key), Some(server_cert)) = (
            &security.cert_file,
            &security.key_file,
            &security.server_cert_file,
        ) else {
            return Err("a secured channel needs cert_file, key_file and server_cert_file".into());
        };
        CertificateStore::read_cert(cert).map_err(|e| format!("security.cert_file: {e}"))?;
        CertificateStore::read_pkey(key).map_err(|e| format!("security.key_file: {e}"))?;
        let server = CertificateStore::read_cert(server_cert)
            .map_err(|e| format!("security.server_cert_file: {e}"))?;
        let trusted = folder.path().join("trusted");
        std::fs::create_dir_all(&trusted)
            .and_then(|_| std::fs::create_dir_all(folder.path().join("rejected")))
            .map_err(|e| format!("cannot make a PKI folder: {e}"))?;
        let der = server
            .to_der()
            .map_err(|e| format!("security.server_cert_file: {e}"))?;
        std::fs::write(trusted.join(CertificateStore::cert_file_name(&server)), der)
            .map_err(|e| format!("cannot trust the server's certificate: {e}"))?;
        builder = builder
            .pki_dir(folder.path())
            // Absolute paths: the PKI folder is only the trust list.
            .certificate_path(cert.clone())
            .private_key_path(key.clone());
        pki = Some(folder);
    }
    let identity = match &spec.username {
        Some(user) => IdentityToken::new_user_name(
            user.clone(),
            password(spec.password_env.as_deref(), spec.password_file.as_deref())?
                .unwrap_or_default(),
        ),
        None => IdentityToken::Anonymous,
    };
    let user_token = if spec.username.is_some() {
        UserTokenPolicy {
            token_type: opcua::types::UserTokenType::UserName,
            ..UserTokenPolicy::anonymous()
        }
    } else {
        UserTokenPolicy::anonymous()
    };
    let endpoint: EndpointDescription =
        (spec.endpoint.as_str(), policy.to_uri(), mode, user_token).into();
    let mut nodes = Vec::new();
    for (text, target) in &spec.mapping {
        let id = NodeId::from_str(text).map_err(|e| format!("mapping.{text}: {e}"))?;
        nodes.push((id, text.clone(), target.clone()));
    }
    Ok((
        Connection {
            config: builder.into_config(),
            endpoint,
            identity,
            publishing_interval: Duration::from_millis(spec.publishing_interval_ms),
            sampling_interval_ms: spec.sampling_interval_ms as f64,
            nodes,
        },
        pki,
    ))
}

/// Holds a session while it lasts, then asks the source how long to wait,
/// and starts over. Ends with the source.
async fn run(connection: Connection, feed: Arc<Feed>, source: ActorRef<OpcuaMsg>) {
    loop {
        let (state, reason) = session(&connection, &feed, &source).await;
        let lost = ractor::call!(source, |reply| OpcuaMsg::Lost {
            connection: state,
            reason,
            reply,
        });
        match lost {
            Ok(wait) => tokio::time::sleep(wait).await,
            Err(_) => return,
        }
    }
}

/// One session, from the endpoint's discovery to its end: why it ended.
async fn session(
    connection: &Connection,
    feed: &Arc<Feed>,
    source: &ActorRef<OpcuaMsg>,
) -> (&'static str, String) {
    let mut client = Client::new(connection.config.clone());
    let (session, event_loop) = match client
        .connect_to_matching_endpoint(connection.endpoint.clone(), connection.identity.clone())
        .await
    {
        Ok(pair) => pair,
        Err(e) => return describe(e.status(), &e.to_string()),
    };
    let events = event_loop.enter();
    let mut events = std::pin::pin!(events);
    let mut subscribing = std::pin::pin!(futures_util::future::Fuse::terminated());
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(opcua::client::SessionPollResult::Reconnected(_))) => {
                    subscribing.set(futures_util::FutureExt::fuse(subscribe(
                        session.clone(),
                        connection,
                        feed.clone(),
                    )));
                }
                Some(Ok(opcua::client::SessionPollResult::ConnectionLost(code))) => {
                    return describe(code, "the connection broke");
                }
                Some(Ok(_)) => {}
                Some(Err(code)) => return describe(code, "the session could not be opened"),
                None => return ("disconnected", "the session closed".into()),
            },
            subscribed = &mut subscribing => match subscribed {
                Ok(()) => {
                    if source.cast(OpcuaMsg::Connected).is_err() {
                        return ("disconnected", "the source stopped".into());
                    }
                }
                // The session ends as it is dropped: a disconnect would
                // need the event loop, which nobody polls from here.
                Err(e) => return describe(e.status(), &format!("subscribing failed: {e}")),
            },
        }
    }
}

/// One subscription with every mapped node in it. A node the server does
/// not have is reported and left out; the others are read.
async fn subscribe(
    session: Arc<Session>,
    connection: &Connection,
    feed: Arc<Feed>,
) -> Result<(), opcua::types::Error> {
    let targets: HashMap<NodeId, (String, Target)> = connection
        .nodes
        .iter()
        .map(|(id, text, target)| (id.clone(), (text.clone(), target.clone())))
        .collect();
    let callback_feed = feed.clone();
    let callback = DataChangeCallback::new(move |data: DataValue, item: &MonitoredItem| {
        if let Some((text, target)) = targets.get(&item.item_to_monitor().node_id) {
            callback_feed.take(text, target, data);
        }
    });
    let interval = connection.publishing_interval;
    // The server ends a subscription nobody asks about for lifetime_count
    // publishing intervals; keep-alives come every max_keep_alive_count.
    let subscription = session
        .create_subscription(interval, 600, 20, 0, 0, true, callback)
        .await?;
    let items: Vec<MonitoredItemCreateRequest> = connection
        .nodes
        .iter()
        .map(|(id, _, _)| {
            MonitoredItemCreateRequest::new(
                ReadValueId::from(id.clone()),
                MonitoringMode::Reporting,
                MonitoringParameters {
                    sampling_interval: connection.sampling_interval_ms,
                    // Keep every change between publishes, not only the last.
                    queue_size: 64,
                    discard_oldest: true,
                    ..Default::default()
                },
            )
        })
        .collect();
    let created = session
        .create_monitored_items(subscription, TimestampsToReturn::Both, items)
        .await?;
    for (item, (_, text, _)) in created.iter().zip(&connection.nodes) {
        if item.result.status_code.is_bad() {
            feed.stats.unread(
                &feed.history,
                Unread::Unmapped(format!(
                    "{text}: the server cannot monitor it ({})",
                    item.result.status_code
                )),
            );
        }
    }
    Ok(())
}

/// What a status code means for the status: `refused` when trying again
/// would fail the same way (trust, login, policy), else `disconnected`.
fn describe(code: StatusCode, context: &str) -> (&'static str, String) {
    let refused = [
        StatusCode::BadCertificateUntrusted,
        StatusCode::BadCertificateInvalid,
        StatusCode::BadCertificateHostNameInvalid,
        StatusCode::BadCertificateUriInvalid,
        StatusCode::BadCertificateTimeInvalid,
        StatusCode::BadSecurityChecksFailed,
        StatusCode::BadSecurityPolicyRejected,
        StatusCode::BadIdentityTokenRejected,
        StatusCode::BadIdentityTokenInvalid,
        StatusCode::BadUserAccessDenied,
        StatusCode::BadTcpEndpointUrlInvalid,
    ];
    let what = match code {
        StatusCode::BadIdentityTokenRejected | StatusCode::BadUserAccessDenied => {
            "the server refused the login (bad user name or password?)"
        }
        StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed => {
            "the certificates were not accepted (is the twin's certificate trusted by the server, and server_cert_file the server's?)"
        }
        StatusCode::BadTcpEndpointUrlInvalid => "the server has no such endpoint",
        _ => context,
    };
    let state = if refused.iter().any(|r| r.sub_code() == code.sub_code()) {
        "refused"
    } else {
        "disconnected"
    };
    (state, format!("{what}: {}", code.sub_code().name()))
}

/// A data change as a reading for `target`: a number is a scalar; 3
/// numbers a vector; 7 numbers, for a `.pose`, a position and a
/// quaternion (x, y, z, qx, qy, qz, qw).
fn reading(target: &Target, data: &DataValue) -> Result<SyncValue, String> {
    if let Some(status) = data.status
        && status.is_bad()
    {
        return Err(format!("the server reports {}", status.sub_code().name()));
    }
    let variant = data.value.as_ref().ok_or("a change with no value")?;
    let pose = target.attribute.as_deref() == Some("pose");
    let finite = |v: f64| {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{v} is not a finite number"))
        }
    };
    if let Some(v) = variant.as_f64() {
        if pose {
            return Err("a pose takes 7 numbers (x, y, z, qx, qy, qz, qw)".into());
        }
        return Ok(SyncValue::Scalar(finite(v)?));
    }
    if let Variant::Boolean(b) = variant {
        return Ok(SyncValue::Scalar(if *b { 1.0 } else { 0.0 }));
    }
    let Variant::Array(array) = variant else {
        return Err(format!(
            "a {:?} is not a number or an array of numbers",
            variant.type_id()
        ));
    };
    let numbers = array
        .values
        .iter()
        .map(|v| v.as_f64().ok_or("an array of something else than numbers"))
        .map(|v| v.map_err(str::to_string).and_then(finite))
        .collect::<Result<Vec<f64>, String>>()?;
    match (numbers.as_slice(), pose) {
        (&[x, y, z, qx, qy, qz, qw], true) => Ok(SyncValue::Pose {
            position: [x, y, z],
            orientation: [qx, qy, qz, qw],
        }),
        (_, true) => Err(format!(
            "a pose takes 7 numbers (x, y, z, qx, qy, qz, qw), not {}",
            numbers.len()
        )),
        (&[x, y, z], false) => Ok(SyncValue::Vector([x, y, z])),
        _ => Err(format!(
            "an array of {} numbers; a vector takes 3",
            numbers.len()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(v: Variant) -> DataValue {
        DataValue {
            value: Some(v),
            ..Default::default()
        }
    }

    #[test]
    fn numbers_arrays_and_poses_become_readings_and_the_rest_is_refused() {
        let temp = Target::parse("/World/Cell.temperature").expect("target");
        let pose = Target::parse("/World/Arm/Link3.pose").expect("target");
        assert_eq!(
            reading(&temp, &data(Variant::Float(41.5))),
            Ok(SyncValue::Scalar(41.5))
        );
        assert_eq!(
            reading(&temp, &data(Variant::Int32(-3))),
            Ok(SyncValue::Scalar(-3.0))
        );
        assert_eq!(
            reading(&temp, &data(Variant::from(vec![1.0f64, 2.0, 3.0]))),
            Ok(SyncValue::Vector([1.0, 2.0, 3.0]))
        );
        assert_eq!(
            reading(
                &pose,
                &data(Variant::from(vec![1.0f64, 2.0, 3.0, 0.0, 0.0, 0.0, 1.0]))
            ),
            Ok(SyncValue::Pose {
                position: [1.0, 2.0, 3.0],
                orientation: [0.0, 0.0, 0.0, 1.0]
            })
        );
        for (target, value, says) in [
            (&temp, Variant::from("warm"), "not a number"),
            (&temp, Variant::Double(f64::NAN), "not a finite number"),
            (&temp, Variant::from(vec![1.0f64, 2.0]), "a vector takes 3"),
            (&pose, Variant::Double(1.0), "7 numbers"),
        ] {
            let err = reading(target, &data(value)).expect_err(says);
            assert!(err.contains(says), "{err}");
        }
        let bad = DataValue {
            value: Some(Variant::Double(1.0)),
            status: Some(StatusCode::BadSensorFailure),
            ..Default::default()
        };
        assert!(
            reading(&temp, &bad).is_err_and(|e| e.contains("BadSensorFailure")),
            "a bad status is not a reading"
        );
    }
}
