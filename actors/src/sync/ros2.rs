//! A ROS 2 source (ros2-client over RustDDS): one child actor of its twin per
//! source, one DDS subscription per ROS topic.
//!
//! The source joins its DDS domain on the loopback interface only: DDS has
//! no transport security here (SROS2 is not offered), so, as with plain MQTT,
//! the robot's ROS graph reaches the twin through a bridge on the node's
//! host. Messages are the standard types, decoded from CDR by the structs
//! below (ROS 2's own definitions, field for field); each becomes readings
//! the twin takes like any other source's.

use super::SourceStats;
use super::readings::{Inbox, Reading, Unread};
use crate::definition::{Ros2SourceSpec, Target};
use crate::protocol::{ChildContext, ChildSpec, SpawnFuture, SyncValue, TwinMsg};
use futures_util::StreamExt;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ros2_client::{
    Context, DEFAULT_SUBSCRIPTION_QOS, MessageTypeName, Name, NodeName, NodeOptions,
};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// `builtin_interfaces/Time`.
#[derive(Deserialize)]
struct Time {
    _sec: i32,
    _nanosec: u32,
}

/// `std_msgs/Header`.
#[derive(Deserialize)]
struct Header {
    _stamp: Time,
    _frame_id: String,
}

/// `sensor_msgs/JointState`.
#[derive(Deserialize)]
struct JointState {
    _header: Header,
    name: Vec<String>,
    position: Vec<f64>,
    velocity: Vec<f64>,
    _effort: Vec<f64>,
}

/// `geometry_msgs/Point` and `geometry_msgs/Vector3`.
#[derive(Deserialize)]
struct Point {
    x: f64,
    y: f64,
    z: f64,
}

/// `geometry_msgs/Quaternion`.
#[derive(Deserialize)]
struct Quaternion {
    x: f64,
    y: f64,
    z: f64,
    w: f64,
}

/// `geometry_msgs/Pose`.
#[derive(Deserialize)]
struct Pose {
    position: Point,
    orientation: Quaternion,
}

/// `geometry_msgs/PoseStamped`.
#[derive(Deserialize)]
struct PoseStamped {
    _header: Header,
    pose: Pose,
}

/// `geometry_msgs/Transform`.
#[derive(Deserialize)]
struct Transform {
    translation: Point,
    rotation: Quaternion,
}

/// `geometry_msgs/TransformStamped`.
#[derive(Deserialize)]
struct TransformStamped {
    _header: Header,
    child_frame_id: String,
    transform: Transform,
}

/// `tf2_msgs/TFMessage`.
#[derive(Deserialize)]
struct TfMessage {
    transforms: Vec<TransformStamped>,
}

/// How to spawn (and respawn) one ROS 2 source.
pub struct Ros2Child {
    pub child_name: String,
    /// The source's index in the twin's `sync.sources`.
    pub index: usize,
    pub spec: Ros2SourceSpec,
    pub inbox: Inbox,
    pub stats: Arc<SourceStats>,
    pub history: super::SyncHistory,
}

impl ChildSpec for Ros2Child {
    fn name(&self) -> &str {
        &self.child_name
    }

    fn kind(&self) -> &'static str {
        "sync"
    }

    fn spawn(&self, context: ChildContext) -> SpawnFuture {
        let args = Ros2Args {
            index: self.index,
            spec: self.spec.clone(),
            inbox: self.inbox.clone(),
            stats: self.stats.clone(),
            twin: context.twin,
            history: self.history.clone(),
            name: self.child_name.trim_start_matches("sync:").to_string(),
        };
        crate::protocol::spawn_child(Ros2Source, args, context.supervisor)
    }
}

pub struct Ros2Args {
    index: usize,
    spec: Ros2SourceSpec,
    inbox: Inbox,
    stats: Arc<SourceStats>,
    twin: ActorRef<TwinMsg>,
    history: super::SyncHistory,
    name: String,
}

pub struct Ros2Source;

pub struct Ros2State {
    args: Ros2Args,
    /// The DDS participant's tasks: the node's spinner and one reader per
    /// topic. Aborted when the source stops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ROS 2 node, dropped (and its readers with it) when the source
    /// stops.
    node: Option<ros2_client::Node>,
}

/// One decoded message: its readings, or why it gave none.
pub struct Ros2Msg {
    topic: String,
    readings: Result<Vec<(Target, SyncValue)>, String>,
}

impl ractor::Message for Ros2Msg {}

impl Actor for Ros2Source {
    type Msg = Ros2Msg;
    type State = Ros2State;
    type Arguments = Ros2Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Ros2Msg>,
        args: Ros2Args,
    ) -> Result<Ros2State, ActorProcessingErr> {
        let mut tasks = Vec::new();
        let mut node = None;
        match subscribe(&args.spec, &myself, &mut tasks) {
            Ok(subscribed) => {
                node = Some(subscribed);
                args.stats.update(|s| {
                    s.state = "connected".into();
                    s.last_error = None;
                    s.connected_since = Some(chrono::Utc::now());
                });
                let topics: Vec<&str> = args.spec.topics.keys().map(String::as_str).collect();
                args.history.record(
                    Some(&args.name),
                    "connected",
                    format!(
                        "joined DDS domain {} on {}{}; subscribed to {}",
                        args.spec.domain_id,
                        args.spec
                            .networks()
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                        match &args.spec.security {
                            Some(s) => format!(" with SROS2 (enclave {})", s.enclave.display()),
                            None => String::new(),
                        },
                        topics.join(", ")
                    ),
                    None,
                );
            }
            Err(e) => {
                // The actor stays, reporting why it cannot read: a restart
                // would fail the same way.
                tracing::warn!(source = %args.name, error = %e, "ROS 2 source cannot subscribe");
                args.stats.refuse(&e);
                args.history.record(Some(&args.name), "refused", e, None);
            }
        }
        Ok(Ros2State { args, tasks, node })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Ros2Msg>,
        msg: Ros2Msg,
        state: &mut Ros2State,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        let now = chrono::Utc::now();
        args.stats.message(now);
        match msg.readings {
            Ok(readings) => {
                let received = Instant::now();
                args.stats.update(|s| s.readings += readings.len() as u64);
                args.inbox.push(
                    readings.into_iter().map(|(target, value)| Reading {
                        source: args.index,
                        target,
                        value,
                        received,
                        received_at: now,
                    }),
                    &args.twin,
                );
            }
            Err(reason) => {
                let detail = format!("{}: {reason}", msg.topic);
                args.stats.unread(&args.history, Unread::Unparsed(detail));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Ros2Msg>,
        state: &mut Ros2State,
    ) -> Result<(), ActorProcessingErr> {
        for task in state.tasks.drain(..) {
            task.abort();
        }
        state.node = None;
        state.args.stats.update(|s| s.state = "disconnected".into());
        Ok(())
    }
}

/// Joins the domain on loopback and starts one reader task per topic, each
/// sending what it decodes to the source's actor.
fn subscribe(
    spec: &Ros2SourceSpec,
    source: &ActorRef<Ros2Msg>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<ros2_client::Node, String> {
    let mut builder =
        rustdds::DomainParticipantBuilder::new(spec.domain_id).with_only_networks(spec.networks());
    if let Some(security) = &spec.security {
        builder = builder.builtin_security(enclave_files(&security.enclave)?);
    }
    let participant = builder.build().map_err(|e| {
        let secured = if spec.security.is_some() {
            " with SROS2 (check the enclave's certificates, permissions and governance)"
        } else {
            ""
        };
        format!("cannot join DDS domain {}{secured}: {e}", spec.domain_id)
    })?;
    let context = Context::from_domain_participant(participant)
        .map_err(|e| format!("cannot start ROS 2 on DDS domain {}: {e}", spec.domain_id))?;
    let node_name = format!("twin_source_{}", uuid::Uuid::new_v4().simple());
    let mut node = context
        .new_node(
            NodeName::new("/hanzo_twin", &node_name).map_err(|e| e.to_string())?,
            NodeOptions::new(),
        )
        .map_err(|e| format!("cannot create the ROS 2 node: {e}"))?;
    let spinner = node.spinner().map_err(|e| e.to_string())?;
    tasks.push(tokio::spawn(async move {
        if let Err(e) = spinner.spin().await {
            tracing::warn!(error = %e, "ROS 2 spinner ended");
        }
    }));
    for (topic, target) in &spec.topics {
        let (target, message_type) = target.resolved()?;
        let name = Name::parse(topic).map_err(|e| format!("topic {topic}: {e}"))?;
        let (package, kind) = message_type
            .split_once('/')
            .ok_or_else(|| format!("message type {message_type}"))?;
        let dds_topic = node
            .create_topic(
                &name,
                MessageTypeName::new(package, kind),
                &DEFAULT_SUBSCRIPTION_QOS,
            )
            .map_err(|e| format!("topic {topic}: {e}"))?;
        let topic_name = topic.clone();
        let source = source.clone();
        macro_rules! reader {
            ($msg:ty, $decode:expr) => {{
                let subscription = node
                    .create_subscription::<$msg>(&dds_topic, None)
                    .map_err(|e| format!("subscribing to {topic}: {e}"))?;
                let decode = $decode;
                tokio::spawn(async move {
                    let mut stream = std::pin::pin!(subscription.async_stream());
                    while let Some(next) = stream.next().await {
                        let readings = match next {
                            Ok((msg, _)) => decode(&target, msg),
                            Err(e) => Err(format!("unreadable message: {e}")),
                        };
                        let msg = Ros2Msg {
                            topic: topic_name.clone(),
                            readings,
                        };
                        if source.send_message(msg).is_err() {
                            return;
                        }
                    }
                })
            }};
        }
        tasks.push(match message_type {
            "sensor_msgs/JointState" => reader!(JointState, joint_state),
            "geometry_msgs/Pose" => reader!(Pose, |t: &Target, p: Pose| pose(t, &p)),
            "geometry_msgs/PoseStamped" => {
                reader!(PoseStamped, |t: &Target, p: PoseStamped| pose(t, &p.pose))
            }
            _ => reader!(TfMessage, transforms),
        });
    }
    Ok(node)
}

/// An SROS2 enclave's files, each checked to be readable first: RustDDS
/// says only that security failed to start.
fn enclave_files(
    enclave: &std::path::Path,
) -> Result<rustdds::DomainParticipantSecurityConfigFiles, String> {
    for file in crate::definition::ENCLAVE_FILES {
        let path = enclave.join(file);
        std::fs::File::open(&path)
            .map_err(|e| format!("security.enclave: {}: {e}", path.display()))?;
    }
    // SROS2 writes its keys unencrypted.
    Ok(
        rustdds::DomainParticipantSecurityConfigFiles::with_ros_default_names(
            enclave,
            String::new(),
        ),
    )
}

fn finite(v: f64, what: &str) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{what} is {v}"))
    }
}

/// A JointState's positions and velocities, one reading per named joint
/// under the target prim (or at the path a name gives, if absolute).
fn joint_state(prim: &Target, msg: JointState) -> Result<Vec<(Target, SyncValue)>, String> {
    let mut out = Vec::new();
    for (field, values) in [("position", &msg.position), ("velocity", &msg.velocity)] {
        if values.is_empty() {
            continue;
        }
        if values.len() != msg.name.len() {
            return Err(format!(
                "{} names but {} {field} values",
                msg.name.len(),
                values.len()
            ));
        }
        for (name, v) in msg.name.iter().zip(values) {
            let path = if name.starts_with('/') {
                name.clone()
            } else {
                format!("{}/{name}", prim.prim)
            };
            let target = Target::parse(&format!("{path}.{field}"))?;
            out.push((target, SyncValue::Scalar(finite(*v, field)?)));
        }
    }
    if out.is_empty() {
        return Err("a JointState with neither positions nor velocities".into());
    }
    Ok(out)
}

/// A pose for the target: the whole pose for `.pose`, else its position.
fn pose(target: &Target, p: &Pose) -> Result<Vec<(Target, SyncValue)>, String> {
    let position = [
        finite(p.position.x, "position.x")?,
        finite(p.position.y, "position.y")?,
        finite(p.position.z, "position.z")?,
    ];
    let o = &p.orientation;
    let orientation = [o.x, o.y, o.z, o.w];
    if orientation.iter().any(|v| !v.is_finite()) {
        return Err("orientation is not finite".into());
    }
    let value = if target.attribute.as_deref() == Some("pose") {
        SyncValue::Pose {
            position,
            orientation,
        }
    } else {
        SyncValue::Vector(position)
    };
    Ok(vec![(target.clone(), value)])
}

/// Each transform's pose, for the body its `child_frame_id` names under the
/// target prim.
fn transforms(prim: &Target, msg: TfMessage) -> Result<Vec<(Target, SyncValue)>, String> {
    let mut out = Vec::new();
    for t in msg.transforms {
        let frame = t.child_frame_id.trim_start_matches('/');
        let target = Target::parse(&format!("{}/{frame}.pose", prim.prim))?;
        let p = Pose {
            position: t.transform.translation,
            orientation: t.transform.rotation,
        };
        out.extend(pose(&target, &p)?);
    }
    if out.is_empty() {
        return Err("a TFMessage with no transforms".into());
    }
    Ok(out)
}
