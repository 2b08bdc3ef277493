//! Readings: what a source makes of a message, and the bounded inbox that
//! carries them to the twin.

use crate::definition::{PayloadFormat, Target};
use crate::protocol::{SyncValue as Value, TwinMsg};
use chrono::{DateTime, Utc};
use ractor::ActorRef;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One value for one target, as a source read it.
#[derive(Debug, Clone)]
pub struct Reading {
    /// Index of the source among the twin's sources.
    pub source: usize,
    pub target: Target,
    pub value: Value,
    pub received: Instant,
    pub received_at: DateTime<Utc>,
}

/// Why a message gave no reading ([`super::SourceStats::unread`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Unread {
    /// The payload is not in the source's format.
    Unparsed(String),
    /// No mapping names the message's sensor key.
    Unmapped(String),
}

/// The sensor key of a message on `topic` under the subscription `filter`:
/// the topic after the filter's fixed prefix (`warehouse/east/sensors/#` and
/// `warehouse/east/sensors/sensor/temp_01` give `sensor/temp_01`).
pub fn sensor_key<'a>(filter: &str, topic: &'a str) -> &'a str {
    let fixed: usize = filter
        .split('/')
        .take_while(|level| *level != "+" && *level != "#")
        .map(|level| level.len() + 1)
        .sum();
    if fixed == 0 || fixed > topic.len() {
        return topic;
    }
    &topic[fixed..]
}

/// Reads one message's payload for `target`. A bare prim path takes a
/// JointState (`{"name": [...], "position": [...], "velocity": [...]}`) and
/// gives one reading per named joint under it.
pub fn parse_payload(
    format: PayloadFormat,
    target: &Target,
    payload: &[u8],
) -> Result<Vec<(Target, Value)>, String> {
    let text = std::str::from_utf8(payload).map_err(|_| "payload is not UTF-8".to_string())?;
    match format {
        PayloadFormat::Number => {
            let v: f64 = text
                .trim()
                .parse()
                .map_err(|_| format!("payload `{}` is not a number", clip(text)))?;
            finite(v)?;
            Ok(vec![(target.clone(), Value::Scalar(v))])
        }
        PayloadFormat::Json => {
            let json: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("payload is not JSON: {e}"))?;
            if target.attribute.is_none() {
                return joint_state(target, &json);
            }
            Ok(vec![(target.clone(), json_value(&json)?)])
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

fn finite(v: f64) -> Result<f64, String> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a finite number"))
    }
}

fn numbers<const N: usize>(json: &serde_json::Value, what: &str) -> Result<[f64; N], String> {
    let list = json
        .as_array()
        .filter(|a| a.len() == N)
        .ok_or_else(|| format!("{what} must be a list of {N} numbers"))?;
    let mut out = [0.0; N];
    for (slot, v) in out.iter_mut().zip(list) {
        *slot = finite(
            v.as_f64()
                .ok_or_else(|| format!("{what} must be a list of {N} numbers"))?,
        )?;
    }
    Ok(out)
}

pub(super) fn json_value(json: &serde_json::Value) -> Result<Value, String> {
    if let Some(v) = json.as_f64() {
        return Ok(Value::Scalar(finite(v)?));
    }
    if json.is_array() {
        return Ok(Value::Vector(numbers::<3>(json, "a vector")?));
    }
    if let Some(object) = json.as_object() {
        if let Some(v) = object.get("value") {
            return json_value(v);
        }
        if let Some(position) = object.get("position") {
            let position = numbers::<3>(position, "position")?;
            let orientation = match object.get("orientation") {
                Some(o) => numbers::<4>(o, "orientation")?,
                None => return Ok(Value::Vector(position)),
            };
            return Ok(Value::Pose {
                position,
                orientation,
            });
        }
    }
    Err("expected a number, {\"value\": n}, [x, y, z] or {\"position\": [x, y, z], \"orientation\": [x, y, z, w]}".into())
}

fn joint_state(prim: &Target, json: &serde_json::Value) -> Result<Vec<(Target, Value)>, String> {
    let shape = "a JointState: {\"name\": [...], \"position\": [...], \"velocity\": [...]}";
    let object = json
        .as_object()
        .ok_or_else(|| format!("expected {shape}"))?;
    let names = object
        .get("name")
        .and_then(|n| n.as_array())
        .ok_or_else(|| format!("expected {shape}"))?;
    let mut out = Vec::new();
    for field in ["position", "velocity"] {
        let Some(values) = object.get(field) else {
            continue;
        };
        let values = values
            .as_array()
            .filter(|v| v.is_empty() || v.len() == names.len())
            .ok_or_else(|| format!("{field} must list one number per name"))?;
        for (name, v) in names.iter().zip(values) {
            let name = name
                .as_str()
                .ok_or_else(|| "name must list joint names".to_string())?;
            let path = if name.starts_with('/') {
                name.to_string()
            } else {
                format!("{}/{name}", prim.prim)
            };
            let target = Target::parse(&format!("{path}.{field}"))?;
            let v = finite(
                v.as_f64()
                    .ok_or_else(|| format!("{field} must list numbers"))?,
            )?;
            out.push((target, Value::Scalar(v)));
        }
    }
    if out.is_empty() {
        return Err(format!("expected {shape} with position or velocity"));
    }
    Ok(out)
}

/// Readings on their way to the twin: bounded by the sync block's
/// `buffer_size` (the oldest go first, counted), and at most one wake-up
/// message in the twin's mailbox however fast sources push. In batch mode
/// pushes wake nobody: the twin takes the readings once per sync period.
#[derive(Clone)]
pub struct Inbox(Arc<InboxInner>);

struct InboxInner {
    readings: Mutex<VecDeque<Reading>>,
    capacity: usize,
    dropped: AtomicU64,
    wake_pending: AtomicBool,
    /// Whether a push wakes the twin (realtime), or waits for it (batch).
    wakes: bool,
}

impl Inbox {
    pub fn new(capacity: usize, wakes: bool) -> Inbox {
        Inbox(Arc::new(InboxInner {
            readings: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            wake_pending: AtomicBool::new(false),
            wakes,
        }))
    }

    /// Queues readings and wakes the twin, if this inbox wakes it and no
    /// wake-up is pending.
    pub fn push(&self, readings: impl IntoIterator<Item = Reading>, twin: &ActorRef<TwinMsg>) {
        if self.enqueue(readings) && self.0.wakes {
            // A twin that is gone has nobody to wake.
            let _ = twin.cast(TwinMsg::SyncReadings);
        }
    }

    /// Queues readings; true when the twin must be woken.
    fn enqueue(&self, readings: impl IntoIterator<Item = Reading>) -> bool {
        let mut queue = self.0.readings.lock().unwrap_or_else(|e| e.into_inner());
        for reading in readings {
            if queue.len() >= self.0.capacity {
                queue.pop_front();
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(reading);
        }
        !self.0.wake_pending.swap(true, Ordering::AcqRel)
    }

    /// Queues readings carried over from an earlier buffer, oldest first,
    /// waking nobody (the twin takes them itself).
    pub fn refill(&self, readings: Vec<Reading>) {
        self.enqueue(readings);
        self.0.wake_pending.store(false, Ordering::Release);
    }

    /// Everything queued, oldest first; the next push wakes the twin again.
    pub fn take(&self) -> Vec<Reading> {
        self.0.wake_pending.store(false, Ordering::Release);
        let mut queue = self.0.readings.lock().unwrap_or_else(|e| e.into_inner());
        queue.drain(..).collect()
    }

    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    pub fn len(&self) -> usize {
        self.0
            .readings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sensor_key_is_the_topic_after_the_filter_s_fixed_prefix() {
        assert_eq!(
            sensor_key(
                "warehouse/east/sensors/#",
                "warehouse/east/sensors/sensor/temp_01"
            ),
            "sensor/temp_01"
        );
        assert_eq!(sensor_key("plant/+/temp", "plant/a/temp"), "a/temp");
        assert_eq!(sensor_key("#", "a/b"), "a/b");
        assert_eq!(sensor_key("a/b", "a/b"), "a/b");
    }

    #[test]
    fn payloads_are_read_by_format_and_target() {
        let temp = Target::parse("/World/T.temperature").expect("valid");
        assert_eq!(
            parse_payload(PayloadFormat::Number, &temp, b" 21.5\n"),
            Ok(vec![(temp.clone(), Value::Scalar(21.5))])
        );
        assert_eq!(
            parse_payload(PayloadFormat::Json, &temp, br#"{"value": 3}"#),
            Ok(vec![(temp.clone(), Value::Scalar(3.0))])
        );
        assert!(parse_payload(PayloadFormat::Json, &temp, b"NaN").is_err());
        assert!(parse_payload(PayloadFormat::Number, &temp, b"hot").is_err());
        let joints = Target::parse("/World/Arm").expect("valid");
        let read = parse_payload(
            PayloadFormat::Json,
            &joints,
            br#"{"name": ["Shoulder", "/World/Arm/Elbow"], "position": [0.1, 0.2], "velocity": []}"#,
        )
        .expect("a JointState");
        assert_eq!(read[0].0.to_string(), "/World/Arm/Shoulder.position");
        assert_eq!(read[1].0.to_string(), "/World/Arm/Elbow.position");
        assert_eq!(read[1].1, Value::Scalar(0.2));
    }

    #[test]
    fn a_full_inbox_drops_its_oldest_readings_and_counts_them() {
        let inbox = Inbox::new(2, true);
        let target = Target::parse("/A.b").expect("valid");
        let reading = |v: f64| Reading {
            source: 0,
            target: target.clone(),
            value: Value::Scalar(v),
            received: Instant::now(),
            received_at: Utc::now(),
        };
        assert!(
            inbox.enqueue([reading(1.0), reading(2.0)]),
            "the first push wakes"
        );
        assert!(!inbox.enqueue([reading(3.0)]), "one wake-up at a time");
        let left: Vec<Value> = inbox.take().into_iter().map(|r| r.value).collect();
        assert_eq!(left, vec![Value::Scalar(2.0), Value::Scalar(3.0)]);
        assert_eq!(inbox.dropped(), 1);
        assert!(inbox.enqueue([reading(4.0)]), "taking re-arms the wake-up");
    }
}
