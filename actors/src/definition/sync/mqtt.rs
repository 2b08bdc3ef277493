//! MQTT in a sync block: a source's subscription, a publisher's topic, and
//! the connection (broker, TLS files, login) both use.

use super::{SourceSpec, Target, check_name, is_loopback};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// An MQTT subscription (MQTT 3.1.1).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawMqtt")]
pub struct MqttSourceSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `mqtts://host[:port]` (TLS, port 8883 by default) or
    /// `mqtt://host[:port]` (port 1883; only to a broker on this host).
    pub broker: String,
    /// A topic filter, `+` and `#` wildcards allowed.
    pub topic: String,
    pub qos: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password is never in the definition: it is read from this
    /// environment variable of the node, or from this file on the node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    pub payload: PayloadFormat,
    /// Sensor key (the topic, or its part after the filter's fixed prefix)
    /// to the USD attribute it measures or drives.
    pub mapping: BTreeMap<String, Target>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    #[serde(default)]
    name: Option<String>,
    broker: String,
    topic: String,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsFiles>,
    #[serde(default)]
    payload: PayloadFormat,
    mapping: BTreeMap<String, Target>,
}

/// Where a broker is.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl MqttSourceSpec {
    /// The broker's address (checked when parsed).
    pub fn address(&self) -> BrokerAddress {
        parse_broker(&self.broker).unwrap_or(BrokerAddress {
            tls: true,
            host: String::new(),
            port: 0,
        })
    }
}

fn parse_broker(url: &str) -> Result<BrokerAddress, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!(
            "broker `{url}` must start with mqtts:// (TLS) or mqtt://"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("broker `{url}`: `{p}` is not a port"))?;
            (h, port)
        }
        _ => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
        return Err(format!("broker `{url}` names no host"));
    }
    Ok(BrokerAddress {
        tls,
        host: host.to_string(),
        port,
    })
}

fn check_topic_filter(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 65535 {
        return Err("topic must be 1 to 65535 bytes".into());
    }
    let levels: Vec<&str> = topic.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "topic `{topic}`: `#` must be a whole level and the last one"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("topic `{topic}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// The spec's Sync Channel Security for one broker connection: TLS with a
/// client certificate, or plain MQTT to this very host; secrets by
/// reference only.
fn check_connection(
    broker: &str,
    tls: Option<&TlsFiles>,
    username: Option<&str>,
    password_env: bool,
    password_file: bool,
) -> Result<(), String> {
    let address = parse_broker(broker)?;
    if address.tls {
        if !matches!(
            tls,
            Some(TlsFiles {
                cert_file: Some(_),
                key_file: Some(_),
                ..
            })
        ) {
            return Err(format!(
                "broker `{broker}` uses TLS: tls.cert_file and tls.key_file (the client certificate the spec requires) must be set"
            ));
        }
    } else {
        if !is_loopback(&address.host) {
            return Err(format!(
                "broker `{broker}`: plain mqtt:// is allowed only to a broker on this host; use mqtts:// with a client certificate"
            ));
        }
        if tls.is_some() {
            return Err(format!(
                "broker `{broker}` is plain mqtt://, so tls does not apply; use mqtts://"
            ));
        }
    }
    if password_env && password_file {
        return Err("set one of password_env and password_file, not both".into());
    }
    if (password_env || password_file) && username.is_none() {
        return Err("a password needs a username".into());
    }
    Ok(())
}

/// How to reach an MQTT broker, from a source or a publisher.
#[derive(Debug, Clone, Copy)]
pub struct MqttConnection<'a> {
    pub broker: &'a str,
    pub client_id: Option<&'a str>,
    pub username: Option<&'a str>,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a std::path::Path>,
    pub tls: Option<&'a TlsFiles>,
}

impl MqttConnection<'_> {
    pub fn address(&self) -> BrokerAddress {
        parse_broker(self.broker).unwrap_or(BrokerAddress {
            tls: true,
            host: String::new(),
            port: 0,
        })
    }
}

impl MqttSourceSpec {
    pub fn connection(&self) -> MqttConnection<'_> {
        MqttConnection {
            broker: &self.broker,
            client_id: self.client_id.as_deref(),
            username: self.username.as_deref(),
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_deref(),
            tls: self.tls.as_ref(),
        }
    }
}

/// MQTT publishing: to `broker` (with its own connection settings), or,
/// without one, through the connection of the sync block's first MQTT
/// source.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawMqttPublish")]
pub struct MqttPublishSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// A topic (no wildcards).
    pub topic: String,
    pub qos: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub password_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqttPublish {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    broker: Option<String>,
    topic: String,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsFiles>,
}

impl TryFrom<RawMqttPublish> for MqttPublishSpec {
    type Error = String;

    fn try_from(raw: RawMqttPublish) -> Result<Self, String> {
        check_name(raw.name.as_deref())?;
        if raw.topic.is_empty() || raw.topic.contains(['+', '#']) {
            return Err(format!(
                "topic `{}`: a publish topic is non-empty and has no wildcards",
                raw.topic
            ));
        }
        let qos = raw.qos.unwrap_or(1);
        if qos > 2 {
            return Err(format!("qos must be 0, 1 or 2, got {qos}"));
        }
        match &raw.broker {
            Some(broker) => check_connection(
                broker,
                raw.tls.as_ref(),
                raw.username.as_deref(),
                raw.password_env.is_some(),
                raw.password_file.is_some(),
            )?,
            None => {
                if raw.tls.is_some()
                    || raw.username.is_some()
                    || raw.password_env.is_some()
                    || raw.password_file.is_some()
                {
                    return Err(
                        "tls, username and passwords go with a broker; without one, the first MQTT source's connection is used".into(),
                    );
                }
            }
        }
        Ok(MqttPublishSpec {
            name: raw.name,
            broker: raw.broker,
            topic: raw.topic,
            qos,
            client_id: raw.client_id,
            username: raw.username,
            password_env: raw.password_env,
            password_file: raw.password_file,
            tls: raw.tls,
        })
    }
}

impl MqttPublishSpec {
    /// Its own connection, or the first MQTT source's.
    pub fn connection<'a>(&'a self, sources: &'a [SourceSpec]) -> Option<MqttConnection<'a>> {
        match &self.broker {
            Some(broker) => Some(MqttConnection {
                broker,
                client_id: self.client_id.as_deref(),
                username: self.username.as_deref(),
                password_env: self.password_env.as_deref(),
                password_file: self.password_file.as_deref(),
                tls: self.tls.as_ref(),
            }),
            // The first MQTT source.
            None => sources.iter().find_map(|s| match s {
                SourceSpec::Ros2(_) | SourceSpec::Opcua(_) => None,
                SourceSpec::Mqtt(m) => Some(MqttConnection {
                    client_id: self.client_id.as_deref(),
                    ..m.connection()
                }),
            }),
        }
    }
}

impl TryFrom<RawMqtt> for MqttSourceSpec {
    type Error = String;

    fn try_from(raw: RawMqtt) -> Result<Self, String> {
        check_topic_filter(&raw.topic)?;
        let qos = raw.qos.unwrap_or(1);
        if qos > 2 {
            return Err(format!("qos must be 0, 1 or 2, got {qos}"));
        }
        check_name(raw.name.as_deref())?;
        check_connection(
            &raw.broker,
            raw.tls.as_ref(),
            raw.username.as_deref(),
            raw.password_env.is_some(),
            raw.password_file.is_some(),
        )?;
        if raw.mapping.is_empty() {
            return Err("mapping must map at least one sensor to a USD attribute".into());
        }
        Ok(MqttSourceSpec {
            name: raw.name,
            broker: raw.broker,
            topic: raw.topic,
            qos,
            client_id: raw.client_id,
            username: raw.username,
            password_env: raw.password_env,
            password_file: raw.password_file,
            tls: raw.tls,
            payload: raw.payload,
            mapping: raw.mapping,
        })
    }
}

/// Certificate files on the node, in PEM.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The CA that signed the broker's certificate; the system's roots are
    /// not consulted.
    #[schema(value_type = String)]
    pub ca_file: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub key_file: Option<PathBuf>,
}

/// How a message's payload is read.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// JSON: a number, `{"value": n}`, `{"position": [x,y,z], "orientation":
    /// [x,y,z,w]}` for a pose, or `{"name": [...], "position": [...],
    /// "velocity": [...]}` (a JointState) for a prim's joints.
    #[default]
    Json,
    /// The payload is a number in text.
    Number,
}
