//! A ROS 2 source's definition: the spec's `topics` map.

use super::{Target, check_name};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

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
    /// SROS2: DDS Security with this node's enclave. Without it, DDS stays
    /// on this host (127.0.0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<Ros2Security>,
    /// Addresses of this node's network interfaces that DDS runs on;
    /// 127.0.0.1 when empty. Any other address needs `security`, as the
    /// spec's Sync Channel Security requires SROS2 for ROS 2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub interfaces: Vec<IpAddr>,
}

/// SROS2's DDS Security (authentication by PKI-DH, access control, and
/// encryption) with the files of one enclave, as `ros2 security
/// create_enclave` writes them: `identity_ca.cert.pem`, `cert.pem`,
/// `key.pem`, `permissions_ca.cert.pem`, `governance.p7s` and
/// `permissions.p7s`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ros2Security {
    /// The enclave's directory on the node
    /// (`<keystore>/enclaves/<enclave name>`).
    #[schema(value_type = String)]
    pub enclave: PathBuf,
}

/// The files of an SROS2 enclave, by the names ROS 2 gives them.
pub const ENCLAVE_FILES: [&str; 6] = [
    "identity_ca.cert.pem",
    "cert.pem",
    "key.pem",
    "permissions_ca.cert.pem",
    "governance.p7s",
    "permissions.p7s",
];

impl Ros2SourceSpec {
    /// The interfaces DDS runs on.
    pub fn networks(&self) -> Vec<IpAddr> {
        if self.interfaces.is_empty() {
            vec![IpAddr::from([127, 0, 0, 1])]
        } else {
            self.interfaces.clone()
        }
    }
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
    #[serde(default)]
    security: Option<Ros2Security>,
    #[serde(default)]
    interfaces: Vec<IpAddr>,
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
        if let Some(security) = &raw.security
            && security.enclave.as_os_str().is_empty()
        {
            return Err("security.enclave: give the enclave's directory on the node".into());
        }
        if raw.security.is_none()
            && let Some(ip) = raw.interfaces.iter().find(|ip| !ip.is_loopback())
        {
            return Err(format!(
                "interfaces: `{ip}` is not loopback; ROS 2 beyond this host needs SROS2 (security.enclave)"
            ));
        }
        Ok(Ros2SourceSpec {
            name: raw.name,
            domain_id: raw.domain_id,
            topics: raw.topics,
            security: raw.security,
            interfaces: raw.interfaces,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> Result<Ros2SourceSpec, String> {
        serde_yaml_ng::from_str(&format!(
            "domain_id: 3\ntopics: {{/robot/joint_states: /World/Arm}}\n{extra}"
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn ros2_beyond_loopback_needs_an_sros2_enclave() {
        let plain = source("").expect("plain");
        assert_eq!(plain.networks(), vec![IpAddr::from([127, 0, 0, 1])]);
        assert!(source("interfaces: [\"::1\", 127.0.0.2]\n").is_ok());
        let open = source("interfaces: [10.1.2.3]\n").expect_err("no SROS2");
        assert!(
            open.contains("interfaces: `10.1.2.3`") && open.contains("SROS2"),
            "{open}"
        );
        let secured = source("interfaces: [10.1.2.3]\nsecurity: {enclave: /keys/enclaves/twin}\n")
            .expect("secured");
        assert_eq!(secured.networks(), vec![IpAddr::from([10, 1, 2, 3])]);
        let empty = source("security: {enclave: \"\"}\n").expect_err("empty enclave");
        assert!(empty.contains("security.enclave"), "{empty}");
        let typo = source("security: {enclave: /k, keystore: /k}\n").expect_err("unknown key");
        assert!(typo.contains("keystore"), "{typo}");
        let bad_ip = source("interfaces: [robot.local]\n").expect_err("not an address");
        assert!(
            bad_ip.contains("interfaces") || bad_ip.contains("IP"),
            "{bad_ip}"
        );
    }
}
