//! The `sync` block of a twin definition (the spec's Twin Schema and its Sync
//! Configuration), validated while it is parsed.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

mod mqtt;
mod opcua;
mod ros2;

pub use mqtt::{
    BrokerAddress, MqttConnection, MqttPublishSpec, MqttSourceSpec, PayloadFormat, TlsFiles,
};
pub use opcua::{OpcuaSecurity, OpcuaSourceSpec, SecurityMode, SecurityPolicy};
pub use ros2::{ENCLAVE_FILES, Ros2Security, Ros2SourceSpec, Ros2Topic};

/// How a twin relates to its physical counterpart.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawSyncSpec")]
pub struct SyncSpec {
    pub mode: SyncMode,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceSpec>,
    /// Where the twin publishes its predictions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishSpec>,
    /// How often the twin publishes, per second.
    pub rate_hz: f64,
    /// Readings waiting for the twin, across its sources; past it the oldest
    /// are dropped and counted.
    pub buffer_size: usize,
    /// Waits between reconnection attempts; the last repeats.
    pub reconnect_backoff_ms: Vec<u64>,
    /// A reading older than this when the twin takes it counts as late.
    pub latency_budget_ms: u64,
    /// Comparing prediction with reality.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_detection: Option<DriftDetection>,
    /// With mode `replay`: the recording played through the twin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<ReplaySpec>,
    /// Records every reading the twin takes, as JSON Lines, in the node's
    /// `<data_dir>/recordings/<twin id>.jsonl`: what `replay` plays.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub record: bool,
}

/// A recording played through a twin, paced by the twin's simulated time:
/// a reading recorded `t` seconds after the first is taken once the twin
/// has run `t` simulated seconds since the replay began.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySpec {
    /// A file in the node's `<data_dir>/recordings/` (a twin's own is
    /// `<twin id>.jsonl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Or a Kafka topic holding the recording's lines, one per message (the
    /// `kafka` cargo feature), read from its start past where it ended when
    /// the replay began, until it is quiet for a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaReplay>,
    /// How many simulated seconds pass per wall-clock second on the
    /// `realtime` clock (the `fast` clock runs as fast as it can, `paused`
    /// steps when asked); 0.01 to 1000.
    #[serde(default = "one")]
    pub speed: f64,
}

/// A recording kept in Kafka.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaReplay {
    /// `host:port`, comma-separated; the node's `stream.brokers` unless
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    pub topic: String,
}

fn one() -> f64 {
    1.0
}

impl ReplaySpec {
    fn check(&self) -> Result<(), String> {
        if !(self.speed.is_finite() && (0.01..=1000.0).contains(&self.speed)) {
            return Err(format!(
                "replay.speed must be 0.01 to 1000, got {}",
                self.speed
            ));
        }
        let name = match (&self.recording, &self.kafka) {
            (Some(name), None) => name,
            (None, Some(kafka)) => {
                check_kafka_topic(&kafka.topic).map_err(|e| format!("replay.kafka.{e}"))?;
                if let Some(brokers) = &kafka.brokers {
                    check_kafka_brokers(brokers).map_err(|e| format!("replay.kafka.{e}"))?;
                }
                return Ok(());
            }
            _ => {
                return Err("replay takes one of recording (a file) and kafka (a topic)".into());
            }
        };
        let plain = !name.is_empty()
            && name.len() <= 255
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !plain {
            return Err(format!(
                "replay.recording `{}` must be a file name in the node's recordings folder (letters, digits, `.`, `_`, `-`), such as <twin id>.jsonl",
                crate::definition::shortened(name)
            ));
        }
        Ok(())
    }
}

/// The spec's drift detection: a measured attribute drifts when its mean
/// error over the last `window_seconds` exceeds its threshold.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftDetection {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "ten")]
    pub window_seconds: f64,
    /// `position_m` applies to body positions (`pose`, `position`,
    /// `xformOp:translate`), `velocity_mps` to `velocity` attributes,
    /// `temperature_c` to `temperature`; any other key names an attribute
    /// (a joint's `position` in radians or metres, say).
    pub threshold: BTreeMap<String, f64>,
    #[serde(default)]
    pub response: DriftResponse,
    /// Where drift alerts are POSTed as JSON, besides the node's stream:
    /// `https://`, or `http://` to a receiver on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// What `auto_recalibrate` may adjust; required with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibrate: Option<Recalibrate>,
}

/// The parameters recalibration fits, each within its bounds, by
/// Nelder-Mead over replays of the drift window.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recalibrate {
    /// `/Prim/Path.parameter` to its bounds. Parameters: a joint's drive
    /// `stiffness` and `damping`, a body's `friction` and `mass` (kg).
    pub parameters: BTreeMap<String, Bounds>,
    /// Replays one recalibration may run at most.
    #[serde(default = "default_evaluations")]
    pub max_evaluations: usize,
}

/// A closed interval a parameter is kept in.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    pub min: f64,
    pub max: f64,
}

fn default_evaluations() -> usize {
    100
}

/// What recalibration can tune, as `Simulation::set_parameter` names it.
pub const TUNABLE: [&str; 4] = ["stiffness", "damping", "friction", "mass"];
pub const MAX_EVALUATIONS: usize = 10_000;

impl Recalibrate {
    /// The parameters as (prim, parameter, bounds), in key order.
    pub fn targets(&self) -> Vec<(Target, Bounds)> {
        self.parameters
            .iter()
            .filter_map(|(k, b)| Target::parse(k).ok().map(|t| (t, *b)))
            .collect()
    }

    fn check(&self) -> Result<(), String> {
        let field = "drift_detection.recalibrate";
        if self.parameters.is_empty() {
            return Err(format!(
                "{field}.parameters must name at least one parameter"
            ));
        }
        if self.parameters.len() > 16 {
            return Err(format!(
                "{field}.parameters names {} parameters; at most 16 are fitted at once",
                self.parameters.len()
            ));
        }
        if !(1..=MAX_EVALUATIONS).contains(&self.max_evaluations) {
            return Err(format!(
                "{field}.max_evaluations must be between 1 and {MAX_EVALUATIONS}, got {}",
                self.max_evaluations
            ));
        }
        for (key, b) in &self.parameters {
            let target = Target::parse(key).map_err(|e| format!("{field}.parameters: {e}"))?;
            match target.attribute.as_deref() {
                Some(a) if TUNABLE.contains(&a) => {}
                _ => {
                    return Err(format!(
                        "{field}.parameters.{key}: write /Prim/Path.parameter with a parameter of {}",
                        TUNABLE.join(", ")
                    ));
                }
            }
            if !(b.min.is_finite() && b.max.is_finite() && b.min >= 0.0 && b.min < b.max) {
                return Err(format!(
                    "{field}.parameters.{key}: bounds need 0 <= min < max, both finite, got min {} max {}",
                    b.min, b.max
                ));
            }
            if target.attribute.as_deref() == Some("mass") && b.min <= 0.0 {
                return Err(format!(
                    "{field}.parameters.{key}: a mass must stay positive; set min above 0"
                ));
            }
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

fn ten() -> f64 {
    10.0
}

/// What a twin does about drift: the spec's three responses.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DriftResponse {
    /// A drift event: in the sync history, in the metrics, and in what the
    /// twin publishes.
    #[default]
    Alert,
    /// The alert, then the parameters `recalibrate` names are fitted to
    /// the window's readings and applied.
    AutoRecalibrate,
    /// The alert, then the measured joints and bodies are put where their
    /// latest readings say.
    HardReset,
}

impl<'de> Deserialize<'de> for DriftResponse {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "alert" => Ok(DriftResponse::Alert),
            "auto_recalibrate" => Ok(DriftResponse::AutoRecalibrate),
            "hard_reset" => Ok(DriftResponse::HardReset),
            other => Err(serde::de::Error::custom(format!(
                "unknown drift response `{other}`, expected one of auto_recalibrate, alert, hard_reset"
            ))),
        }
    }
}

impl DriftDetection {
    /// The threshold that applies to `attribute`, if any.
    pub fn threshold_for(&self, attribute: &str) -> Option<f64> {
        let key = match attribute {
            "pose" | "xformOp:translate" => "position_m",
            "temperature" => "temperature_c",
            _ => attribute,
        };
        self.threshold
            .get(key)
            .copied()
            .or_else(|| match attribute {
                "position" => self.threshold.get("position_m").copied(),
                "velocity" => self.threshold.get("velocity_mps").copied(),
                _ => None,
            })
    }
}

pub const DEFAULT_BUFFER_SIZE: usize = 100;
pub const MAX_BUFFER_SIZE: usize = 1_000_000;
pub const DEFAULT_BACKOFF_MS: [u64; 4] = [100, 500, 2000, 10000];
pub const DEFAULT_LATENCY_BUDGET_MS: u64 = 50;
pub const DEFAULT_RATE_HZ: f64 = 10.0;
pub const MAX_RATE_HZ: f64 = 1000.0;

impl Default for SyncSpec {
    fn default() -> Self {
        SyncSpec {
            mode: SyncMode::Standalone,
            sources: Vec::new(),
            publish: Vec::new(),
            rate_hz: DEFAULT_RATE_HZ,
            buffer_size: DEFAULT_BUFFER_SIZE,
            reconnect_backoff_ms: DEFAULT_BACKOFF_MS.to_vec(),
            latency_budget_ms: DEFAULT_LATENCY_BUDGET_MS,
            drift_detection: None,
            replay: None,
            record: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyncSpec {
    #[serde(default)]
    mode: SyncMode,
    #[serde(default)]
    sources: Vec<SourceSpec>,
    #[serde(default)]
    publish: Vec<PublishSpec>,
    #[serde(default)]
    rate_hz: Option<f64>,
    #[serde(default)]
    buffer_size: Option<usize>,
    #[serde(default)]
    reconnect_backoff_ms: Option<Vec<u64>>,
    #[serde(default)]
    latency_budget_ms: Option<u64>,
    #[serde(default)]
    drift_detection: Option<DriftDetection>,
    #[serde(default)]
    replay: Option<ReplaySpec>,
    #[serde(default)]
    record: bool,
}

impl TryFrom<RawSyncSpec> for SyncSpec {
    type Error = String;

    fn try_from(raw: RawSyncSpec) -> Result<Self, String> {
        let buffer_size = raw.buffer_size.unwrap_or(DEFAULT_BUFFER_SIZE);
        if !(1..=MAX_BUFFER_SIZE).contains(&buffer_size) {
            return Err(format!(
                "buffer_size must be between 1 and {MAX_BUFFER_SIZE}, got {buffer_size}"
            ));
        }
        let backoff = raw
            .reconnect_backoff_ms
            .unwrap_or_else(|| DEFAULT_BACKOFF_MS.to_vec());
        if backoff.is_empty() || backoff.iter().any(|ms| !(1..=600_000).contains(ms)) {
            return Err(format!(
                "reconnect_backoff_ms must list 1 or more waits of 1 to 600000 ms, got {backoff:?}"
            ));
        }
        let latency_budget_ms = raw.latency_budget_ms.unwrap_or(DEFAULT_LATENCY_BUDGET_MS);
        if !(1..=3_600_000).contains(&latency_budget_ms) {
            return Err(format!(
                "latency_budget_ms must be between 1 and 3600000, got {latency_budget_ms}"
            ));
        }
        match (raw.mode, raw.sources.is_empty()) {
            (SyncMode::Realtime | SyncMode::Batch, true) => {
                return Err(format!(
                    "mode `{}` needs at least one entry in sources",
                    raw.mode.as_str()
                ));
            }
            (SyncMode::Standalone, false) => {
                return Err(
                    "mode `standalone` takes no sources; use mode `realtime` to follow them".into(),
                );
            }
            (SyncMode::Replay, false) => {
                return Err(
                    "mode `replay` plays its recording (replay.recording), not live sources; remove sources".into(),
                );
            }
            _ => {}
        }
        match (&raw.replay, raw.mode) {
            (None, SyncMode::Replay) => {
                return Err(
                    "mode `replay` needs replay.recording (or replay.kafka): the recording to play"
                        .into(),
                );
            }
            (Some(replay), SyncMode::Replay) => replay.check()?,
            (Some(_), mode) => {
                return Err(format!(
                    "replay applies to mode `replay`, not `{}`",
                    mode.as_str()
                ));
            }
            (None, _) => {}
        }
        if raw.record && raw.mode != SyncMode::Realtime && raw.mode != SyncMode::Batch {
            return Err(format!(
                "record keeps the readings of live sources (mode `realtime` or `batch`), not of mode `{}`",
                raw.mode.as_str()
            ));
        }
        let rate_hz = raw.rate_hz.unwrap_or(DEFAULT_RATE_HZ);
        if !(rate_hz.is_finite() && rate_hz > 0.0 && rate_hz <= MAX_RATE_HZ) {
            return Err(format!(
                "rate_hz must be above 0 and at most {MAX_RATE_HZ}, got {rate_hz}"
            ));
        }
        if raw.mode == SyncMode::Standalone && !raw.publish.is_empty() {
            return Err("mode `standalone` publishes nothing; use mode `realtime`".into());
        }
        for (i, sink) in raw.publish.iter().enumerate() {
            if let PublishSpec::Mqtt(m) = sink
                && m.connection(&raw.sources).is_none()
            {
                return Err(format!(
                    "publish[{i}] names no broker, and there is no MQTT source whose connection it could use"
                ));
            }
        }
        let mut sinks = std::collections::HashSet::new();
        for (i, sink) in raw.publish.iter().enumerate() {
            if !sinks.insert(sink.name(i)) {
                return Err(format!(
                    "publish[{i}]: the name `{}` is used by another publisher",
                    sink.name(i)
                ));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, source) in raw.sources.iter().enumerate() {
            if !names.insert(source.name(i)) {
                return Err(format!(
                    "sources[{i}]: the name `{}` is used by another source",
                    source.name(i)
                ));
            }
        }
        if let Some(drift) = &raw.drift_detection {
            if !(drift.window_seconds.is_finite()
                && drift.window_seconds > 0.0
                && drift.window_seconds <= 86_400.0)
            {
                return Err(format!(
                    "drift_detection.window_seconds must be above 0 and at most 86400, got {}",
                    drift.window_seconds
                ));
            }
            if let Some(webhook) = &drift.webhook {
                check_webhook(webhook)
                    .map_err(|e| format!("drift_detection.webhook `{webhook}`: {e}"))?;
            }
            if drift.threshold.is_empty() {
                return Err("drift_detection.threshold must name at least one threshold".into());
            }
            if let Some((key, v)) = drift
                .threshold
                .iter()
                .find(|(_, v)| !(v.is_finite() && **v > 0.0))
            {
                return Err(format!(
                    "drift_detection.threshold.{key} must be a positive number, got {v}"
                ));
            }
            match (drift.response, &drift.recalibrate) {
                (DriftResponse::AutoRecalibrate, Some(r)) => r.check()?,
                (DriftResponse::AutoRecalibrate, None) => {
                    return Err("drift_detection.response `auto_recalibrate` needs drift_detection.recalibrate.parameters: the parameters to fit, each with min and max".into());
                }
                (_, Some(_)) => {
                    return Err(
                        "drift_detection.recalibrate is only read with response `auto_recalibrate`"
                            .into(),
                    );
                }
                (_, None) => {}
            }
        }
        Ok(SyncSpec {
            drift_detection: raw.drift_detection,
            mode: raw.mode,
            sources: raw.sources,
            publish: raw.publish,
            rate_hz,
            buffer_size,
            reconnect_backoff_ms: backoff,
            latency_budget_ms,
            replay: raw.replay,
            record: raw.record,
        })
    }
}

/// `standalone` simulates on its own; `realtime` follows its sources as their
/// readings arrive, `batch` once per sync period, `replay` as its recording
/// says.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Standalone,
    /// Readings are applied as they arrive.
    Realtime,
    /// Readings are buffered (up to `buffer_size`) and applied together
    /// once per sync period, `1 / rate_hz`.
    Batch,
    /// A recording is played through the twin (`replay`).
    Replay,
}

impl SyncMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Standalone => "standalone",
            SyncMode::Realtime => "realtime",
            SyncMode::Batch => "batch",
            SyncMode::Replay => "replay",
        }
    }
}

impl<'de> Deserialize<'de> for SyncMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "standalone" => Ok(SyncMode::Standalone),
            "realtime" => Ok(SyncMode::Realtime),
            "batch" => Ok(SyncMode::Batch),
            "replay" => Ok(SyncMode::Replay),
            other => Err(serde::de::Error::custom(format!(
                "unknown sync mode `{other}`, expected one of standalone, realtime, batch, replay"
            ))),
        }
    }
}

/// One physical data source.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SourceSpec {
    Mqtt(Box<MqttSourceSpec>),
    /// ROS 2 over DDS (the `ros2` cargo feature).
    Ros2(Ros2SourceSpec),
    /// An OPC-UA server's variables (the `opcua` cargo feature).
    Opcua(Box<OpcuaSourceSpec>),
}

impl SourceSpec {
    /// The source's name, `<type>-<index>` unless it names itself.
    pub fn name(&self, index: usize) -> String {
        match self {
            SourceSpec::Mqtt(m) => m.name.clone().unwrap_or_else(|| format!("mqtt-{index}")),
            SourceSpec::Ros2(r) => r.name.clone().unwrap_or_else(|| format!("ros2-{index}")),
            SourceSpec::Opcua(o) => o.name.clone().unwrap_or_else(|| format!("opcua-{index}")),
        }
    }
}

/// Plain-text MQTT is for a broker on this very host (a local bridge);
/// anything that crosses a network uses TLS, as the spec's "Sync Channel
/// Security" requires.
pub(super) fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn check_name(name: Option<&str>) -> Result<(), String> {
    let ok = |name: &str| {
        (1..=63).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match name {
        Some(name) if !ok(name) => Err(format!(
            "name `{name}`: use 1-63 letters, digits, `.`, `_` or `-`"
        )),
        _ => Ok(()),
    }
}

/// Where a twin publishes what it predicts.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PublishSpec {
    Mqtt(MqttPublishSpec),
    Kafka(KafkaPublishSpec),
}

impl PublishSpec {
    pub fn name(&self, index: usize) -> String {
        match self {
            PublishSpec::Mqtt(m) => m.name.clone().unwrap_or_else(|| format!("mqtt-{index}")),
            PublishSpec::Kafka(k) => k.name.clone().unwrap_or_else(|| format!("kafka-{index}")),
        }
    }
}

/// Kafka publishing: to `brokers`, or to the node's `stream.brokers`; on
/// `topic`, or `<stream.topic_prefix>.<organization>.<twin name>`.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawKafkaPublish")]
pub struct KafkaPublishSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `host:port`, comma-separated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafkaPublish {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    brokers: Option<String>,
    #[serde(default)]
    topic: Option<String>,
}

impl TryFrom<RawKafkaPublish> for KafkaPublishSpec {
    type Error = String;

    fn try_from(raw: RawKafkaPublish) -> Result<Self, String> {
        check_name(raw.name.as_deref())?;
        if let Some(topic) = &raw.topic {
            check_kafka_topic(topic)?;
        }
        if let Some(brokers) = &raw.brokers {
            check_kafka_brokers(brokers)?;
        }
        Ok(KafkaPublishSpec {
            name: raw.name,
            brokers: raw.brokers,
            topic: raw.topic,
        })
    }
}

/// A webhook is `https://`, or plain `http://` only to this host (the
/// spec's sync channels are encrypted).
fn check_webhook(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    let loopback = parsed.host_str().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(
            "plain http only to a receiver on this host (127.0.0.1, localhost); use https".into(),
        ),
        other => Err(format!(
            "scheme `{other}`: use https (or http on this host)"
        )),
    }
}

/// A Kafka topic name as brokers accept it.
pub fn check_kafka_topic(topic: &str) -> Result<(), String> {
    let ok = (1..=249).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "topic `{topic}`: a Kafka topic is 1-249 letters, digits, `.`, `_` or `-`"
        ))
    }
}

/// Kafka brokers a twin's definition names, `host:port` comma-separated.
/// They are reached in the clear (the node's TLS is for its own stream), so
/// only brokers on this machine's loopback are accepted.
pub fn check_kafka_brokers(brokers: &str) -> Result<(), String> {
    check_kafka_broker_list(brokers, true)
}

/// Kafka brokers, `host:port` comma-separated; with `loopback_only`, each on
/// this machine's loopback. Only the node's operator may name brokers beyond
/// it (`stream.private_network`), never a twin's definition.
pub fn check_kafka_broker_list(brokers: &str, loopback_only: bool) -> Result<(), String> {
    let list: Vec<&str> = brokers.split(',').map(str::trim).collect();
    for broker in &list {
        let Some((host, port)) = broker.rsplit_once(':') else {
            return Err(format!("brokers: `{broker}` is not host:port"));
        };
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("brokers: `{broker}` has no valid port"));
        }
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback_only && !loopback {
            return Err(format!(
                "brokers: `{broker}` is not on loopback; Kafka in the clear is limited to brokers on this machine (brokers elsewhere are the node's stream.brokers, reached over stream.tls, or on a closed private network with stream.private_network: true)"
            ));
        }
    }
    Ok(())
}

/// A USD attribute a sensor measures or drives: `<prim path>.<attribute>`,
/// or a bare prim path for a JointState of the joints under it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Target {
    pub prim: String,
    pub attribute: Option<String>,
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.attribute {
            Some(a) => write!(f, "{}.{a}", self.prim),
            None => f.write_str(&self.prim),
        }
    }
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = || {
            format!(
                "`{s}` is not a USD attribute: write /Prim/Path.attribute (or a bare /Prim/Path for a JointState)"
            )
        };
        if !s.starts_with('/') || s.len() > 1024 {
            return Err(bad());
        }
        let last_slash = s.rfind('/').unwrap_or(0);
        let (prim, attribute) = match s[last_slash..].find('.') {
            Some(dot) => {
                let at = last_slash + dot;
                (&s[..at], Some(&s[at + 1..]))
            }
            None => (s, None),
        };
        let prim_ok = prim.len() > 1
            && prim[1..].split('/').all(|seg| {
                !seg.is_empty() && seg.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        let attribute_ok = attribute.is_none_or(|a| {
            !a.is_empty()
                && a.split(':').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                })
        });
        if !prim_ok || !attribute_ok {
            return Err(bad());
        }
        Ok(Target {
            prim: prim.to_string(),
            attribute: attribute.map(str::to_string),
        })
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Target::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(yaml: &str) -> Result<SyncSpec, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn auto_recalibrate_names_its_parameters_within_bounds() {
        let base = "mode: realtime\nsources:\n  - type: mqtt\n    broker: \"mqtt://127.0.0.1:1883\"\n    topic: \"arm/#\"\n    mapping: {elbow: /World/Arm/elbow.position}\ndrift_detection:\n  threshold: {position: 0.02}\n";
        let ok = sync(&format!(
            "{base}  response: auto_recalibrate\n  recalibrate:\n    parameters:\n      /World/Arm/elbow.damping: {{min: 0.5, max: 200}}\n"
        ))
        .expect("valid");
        let r = ok
            .drift_detection
            .and_then(|d| d.recalibrate)
            .expect("recalibrate");
        assert_eq!(r.max_evaluations, 100);
        assert_eq!(r.targets()[0].0.to_string(), "/World/Arm/elbow.damping");
        for (block, says) in [
            (
                "  response: auto_recalibrate\n",
                "needs drift_detection.recalibrate",
            ),
            (
                "  response: alert\n  recalibrate: {parameters: {/World/Arm/elbow.damping: {min: 0, max: 1}}}\n",
                "only read with response `auto_recalibrate`",
            ),
            (
                "  response: auto_recalibrate\n  recalibrate: {parameters: {/World/Arm/elbow.springiness: {min: 0, max: 1}}}\n",
                "stiffness, damping, friction, mass",
            ),
            (
                "  response: auto_recalibrate\n  recalibrate: {parameters: {/World/Arm/elbow.damping: {min: 5, max: 1}}}\n",
                "0 <= min < max",
            ),
            (
                "  response: auto_recalibrate\n  recalibrate: {parameters: {/World/Arm/Link3.mass: {min: 0, max: 1}}}\n",
                "must stay positive",
            ),
            (
                "  response: auto_recalibrate\n  recalibrate: {parameters: {/World/Arm/elbow.damping: {min: 0, max: 1}}, max_evaluations: 0}\n",
                "max_evaluations",
            ),
        ] {
            let e = sync(&format!("{base}{block}")).expect_err(block);
            assert!(e.contains(says), "{block}: {e}");
        }
    }

    #[test]
    fn the_spec_s_mqtt_source_parses_with_its_wildcard_and_mapping() {
        let s = sync(
            "mode: realtime\nsources:\n  - type: mqtt\n    broker: \"mqtts://iot.hanzo.svc\"\n    topic: \"warehouse/east/sensors/#\"\n    tls: {ca_file: ca.pem, cert_file: c.pem, key_file: k.pem}\n    mapping:\n      \"sensor/temp_01\": \"/World/TempSensor_01.temperature\"\n      \"sensor/cam_01\": \"/World/Camera_01.rgb\"\n",
        )
        .expect("valid");
        let SourceSpec::Mqtt(m) = &s.sources[0] else {
            panic!("an MQTT source")
        };
        assert_eq!(
            m.address(),
            BrokerAddress {
                tls: true,
                host: "iot.hanzo.svc".into(),
                port: 8883
            }
        );
        assert_eq!(m.qos, 1);
        let t = &m.mapping["sensor/temp_01"];
        assert_eq!(t.prim, "/World/TempSensor_01");
        assert_eq!(t.attribute.as_deref(), Some("temperature"));
        assert_eq!(s.buffer_size, DEFAULT_BUFFER_SIZE);
        assert_eq!(s.reconnect_backoff_ms, DEFAULT_BACKOFF_MS.to_vec());
    }

    #[test]
    fn insecure_or_malformed_sources_are_refused_with_the_reason() {
        let base = "mode: realtime\nsources:\n  - type: mqtt\n    topic: a/#\n    mapping: {x: /World/A.temperature}\n";
        let plain_remote = sync(&format!("{base}    broker: mqtt://iot.example.com\n"))
            .expect_err("plain mqtt to another host");
        assert!(
            plain_remote.contains("only to a broker on this host"),
            "{plain_remote}"
        );
        let tls_without_cert = sync(&format!(
            "{base}    broker: mqtts://iot.example.com\n    tls: {{ca_file: ca.pem}}\n"
        ))
        .expect_err("no client certificate");
        assert!(
            tls_without_cert.contains("client certificate"),
            "{tls_without_cert}"
        );
        let bad_filter = sync(
            "mode: realtime\nsources:\n  - type: mqtt\n    broker: mqtt://127.0.0.1\n    topic: a/#/b\n    mapping: {x: /World/A.t}\n",
        )
        .expect_err("# in the middle");
        assert!(bad_filter.contains("last one"), "{bad_filter}");
        let bad_target = sync(
            "mode: realtime\nsources:\n  - type: mqtt\n    broker: mqtt://127.0.0.1\n    topic: a\n    mapping: {x: World.t}\n",
        )
        .expect_err("relative path");
        assert!(bad_target.contains("not a USD attribute"), "{bad_target}");
        let no_sources = sync("mode: realtime\n").expect_err("realtime without sources");
        assert!(no_sources.contains("at least one"), "{no_sources}");
        assert!(
            sync("mode: batch\n")
                .expect_err("batch without sources")
                .contains("`batch` needs at least one")
        );
        assert!(
            sync("mode: replay\n")
                .expect_err("replay without a recording")
                .contains("needs replay.recording")
        );
        let source = "  - type: mqtt\n    broker: mqtt://127.0.0.1\n    topic: a/#\n    mapping: {x: /World/A.t}\n";
        let batch = sync(&format!("mode: batch\nrate_hz: 2\nsources:\n{source}")).expect("batch");
        assert_eq!((batch.mode, batch.rate_hz), (SyncMode::Batch, 2.0));
    }

    #[test]
    fn publishers_use_their_own_broker_or_the_first_source_s() {
        let source = "  - type: mqtt\n    broker: mqtt://127.0.0.1:1883\n    topic: a/#\n    mapping: {x: /World/A.t}\n";
        let s = sync(&format!(
            "mode: realtime\nrate_hz: 30\nsources:\n{source}publish:\n  - type: mqtt\n    topic: twin/out\n"
        ))
        .expect("valid");
        let PublishSpec::Mqtt(p) = &s.publish[0] else {
            panic!("an MQTT publisher")
        };
        assert_eq!(
            p.connection(&s.sources).map(|c| c.broker),
            Some("mqtt://127.0.0.1:1883")
        );
        assert_eq!(s.rate_hz, 30.0);
        let wildcard = sync(&format!(
            "mode: realtime\nsources:\n{source}publish:\n  - type: mqtt\n    topic: twin/#\n"
        ))
        .expect_err("a wildcard topic");
        assert!(wildcard.contains("no wildcards"), "{wildcard}");
        let nowhere =
            sync("mode: realtime\npublish:\n  - type: mqtt\n    topic: twin/out\nsources: []\n")
                .expect_err("no broker");
        assert!(
            nowhere.contains("at least one") || nowhere.contains("no broker"),
            "{nowhere}"
        );
        let fast = sync(&format!(
            "mode: realtime\nrate_hz: 5000\nsources:\n{source}"
        ))
        .expect_err("too fast");
        assert!(fast.contains("rate_hz"), "{fast}");
    }

    #[test]
    fn targets_split_at_the_last_prim_s_attribute() {
        let t = Target::parse("/World/Robot_01/end_effector.xformOp:translate").expect("valid");
        assert_eq!(t.prim, "/World/Robot_01/end_effector");
        assert_eq!(t.attribute.as_deref(), Some("xformOp:translate"));
        let joints = Target::parse("/World/Robot_01/joints").expect("valid");
        assert_eq!(joints.attribute, None);
        assert_eq!(joints.to_string(), "/World/Robot_01/joints");
    }
}
