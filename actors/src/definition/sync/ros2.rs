//! A ROS 2 source's definition: the spec's `topics` map.

use super::{Target, check_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// ROS 2 topics, read over DDS: the spec's `topics` map from ROS topic to
/// what it measures. The message type follows from the target, or is named.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRos2")]
pub struct Ros2SourceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The DDS domain (`ROS_DOMAIN_ID`), 0 to 232.
    pub domain_id: u16,
    /// ROS topic (`/robot/joint_states`) to its target.
    pub topics: BTreeMap<String, Ros2Topic>,
}

/// What one ROS topic measures.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ros2Topic {
    /// A prim (`/World/Arm`: a `sensor_msgs/JointState` of the joints under
    /// it) or an attribute (`.pose`, `.position`, `.xformOp:translate`: a
    /// `geometry_msgs/PoseStamped`).
    Target(String),
    /// The target with its message type named: `sensor_msgs/JointState`,
    /// `geometry_msgs/Pose`, `geometry_msgs/PoseStamped` or
    /// `tf2_msgs/TFMessage` (each transform's `child_frame_id` names a body
    /// under the target prim).
    Typed {
        target: String,
        #[serde(rename = "type")]
        message_type: String,
    },
}

/// The ROS message types a ROS 2 source reads.
pub const ROS2_TYPES: [&str; 4] = [
    "sensor_msgs/JointState",
    "geometry_msgs/Pose",
    "geometry_msgs/PoseStamped",
    "tf2_msgs/TFMessage",
];

impl Ros2Topic {
    /// The target and the message type it is read as.
    pub fn resolved(&self) -> Result<(Target, &str), String> {
        let (target, named) = match self {
            Ros2Topic::Target(t) => (t.as_str(), None),
            Ros2Topic::Typed {
                target,
                message_type,
            } => (target.as_str(), Some(message_type.as_str())),
        };
        let target = Target::parse(target)?;
        let message_type = match (named, target.attribute.as_deref()) {
            (Some(t), _) => ROS2_TYPES
                .iter()
                .find(|k| **k == t)
                .copied()
                .ok_or_else(|| {
                    format!(
                        "message type `{t}` is not read; use one of {}",
                        ROS2_TYPES.join(", ")
                    )
                })?,
            (None, None) => "sensor_msgs/JointState",
            (None, Some("pose" | "position" | "xformOp:translate")) => "geometry_msgs/PoseStamped",
            (None, Some(a)) => {
                return Err(format!(
                    "no ROS message type follows from attribute `{a}`: give {{target, type}} with one of {}",
                    ROS2_TYPES.join(", ")
                ));
            }
        };
        match (message_type, target.attribute.as_deref()) {
            ("sensor_msgs/JointState" | "tf2_msgs/TFMessage", Some(a)) => Err(format!(
                "a {message_type} maps to a prim (the joints or frames under it), not to attribute `{a}`"
            )),
            ("geometry_msgs/Pose" | "geometry_msgs/PoseStamped", None) => Err(format!(
                "a {message_type} maps to a body's `pose`, `position` or `xformOp:translate`"
            )),
            _ => Ok((target, message_type)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRos2 {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain_id: u16,
    topics: BTreeMap<String, Ros2Topic>,
}

impl TryFrom<RawRos2> for Ros2SourceSpec {
    type Error = String;

    fn try_from(raw: RawRos2) -> Result<Self, String> {
        check_name(raw.name.as_deref())?;
        if raw.domain_id > 232 {
            return Err(format!("domain_id must be 0 to 232, got {}", raw.domain_id));
        }
        if raw.topics.is_empty() {
            return Err("topics must map at least one ROS topic to its target".into());
        }
        for (topic, target) in &raw.topics {
            check_ros_topic(topic).map_err(|e| format!("topics.{topic}: {e}"))?;
            target
                .resolved()
                .map_err(|e| format!("topics.{topic}: {e}"))?;
        }
        Ok(Ros2SourceSpec {
            name: raw.name,
            domain_id: raw.domain_id,
            topics: raw.topics,
        })
    }
}

/// A fully qualified ROS topic name: `/` then tokens of letters, digits
/// and `_`, separated by `/`, none starting with a digit.
fn check_ros_topic(topic: &str) -> Result<(), String> {
    let bad = || format!("`{topic}` is not a ROS topic name like /robot/joint_states");
    let rest = topic.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty() || topic.len() > 256 {
        return Err(bad());
    }
    for token in rest.split('/') {
        let ok = token
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}
