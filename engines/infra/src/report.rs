//! What a run measured: per service, and end to end per entry service.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are kept in microseconds, to 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant digits: valid bounds, cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|e| unreachable!("3 significant digits is valid: {e}"))
    })
}

/// A histogram in a saved simulation state: HdrHistogram's V2 encoding
/// (what its other implementations read), as bytes.
pub(crate) mod histogram_serde {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{Deserializer as V2Reader, Serializer as _, V2Serializer};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .map_err(|e| serde::ser::Error::custom(format!("histogram: {e:?}")))?;
        bytes.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        V2Reader::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| serde::de::Error::custom(format!("histogram: {e:?}")))
    }
}

pub(crate) fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).round().clamp(1.0, 3.6e9) as u64
}

/// Percentiles of a latency distribution, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_s: f64,
    pub p50_s: f64,
    pub p90_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let s = |v: u64| v as f64 / 1e6;
        Latency {
            count: h.len(),
            mean_s: h.mean() / 1e6,
            p50_s: s(h.value_at_quantile(0.5)),
            p90_s: s(h.value_at_quantile(0.9)),
            p99_s: s(h.value_at_quantile(0.99)),
            max_s: s(h.max()),
        }
    }
}

/// One service over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    /// Requests that reached it.
    pub arrivals: u64,
    /// Answered successfully, and their time from arrival to answer.
    pub ok: u64,
    pub latency: Latency,
    /// Failed: a dependency failed, its replica died under it, or a write
    /// met a full disk.
    pub failed: u64,
    /// Refused at once: no ready replica, or the replica's queue was full.
    pub rejected: u64,
    /// Its calls that timed out, and the attempts it made again.
    pub call_timeouts: u64,
    pub retries: u64,
    /// Mean time waiting for a worker (Wq), mean time from arrival to
    /// departure (W), and mean requests present (L, time-averaged).
    pub mean_wait_s: f64,
    pub mean_time_in_system_s: f64,
    pub mean_in_system: f64,
    /// Departures per second (the throughput Little's law multiplies).
    pub throughput_rps: f64,
    /// Replica-seconds ready (the cost of running it).
    pub replica_seconds: f64,
    /// Replicas at the end (ready or starting), and the most at once.
    pub replicas: u32,
    pub peak_replicas: u32,
    /// Calls it did not make because their circuit breaker was open.
    #[serde(default)]
    pub short_circuited: u64,
    /// Times a replica was taken out of rotation by its readiness probe.
    #[serde(default)]
    pub unready_events: u64,
    /// Replicas killed for passing their memory limit.
    #[serde(default)]
    pub oom_kills: u64,
    /// Replicas waiting for a node with room (Pending) at the end.
    #[serde(default)]
    pub pending: u32,
    /// Its pods evicted from nodes that stopped answering.
    #[serde(default)]
    pub evictions: u64,
    /// Times its standby was promoted in its place, and the service that
    /// answers to its names at the end when that is another.
    #[serde(default)]
    pub failovers: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<String>,
}

/// A node at the end of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub name: String,
    /// Answering (not stopped).
    pub ready: bool,
    /// Replicas placed on it, and what they request of its allocatable.
    pub pods: u32,
    pub cpu_requested: f64,
    pub cpu: f64,
    pub memory_requested_mib: f64,
    pub memory_mib: f64,
}

/// Requests entering at one service, from their arrival to their answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryReport {
    pub service: String,
    pub sent: u64,
    pub ok: u64,
    /// Answered with an error, or never (dropped at a partition).
    pub failed: u64,
    pub latency: Latency,
    /// Per `bucket_s` of simulated time from 0: what ended in it.
    pub timeline: Vec<Bucket>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Bucket {
    pub ok: u64,
    pub failed: u64,
    /// The slowest answer in it, seconds.
    pub max_latency_s: f64,
    pub latency_sum_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Simulated seconds run.
    pub time_s: f64,
    /// Events handled (arrivals, completions, answers, timeouts…).
    pub events: u64,
    pub bucket_s: f64,
    pub services: Vec<ServiceReport>,
    pub entries: Vec<EntryReport>,
    /// The cluster's nodes, when they are modelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
}

impl Report {
    pub fn service(&self, name: &str) -> Option<&ServiceReport> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn entry(&self, service: &str) -> Option<&EntryReport> {
        self.entries.iter().find(|e| e.service == service)
    }

    /// Replica-hours ready over the run, all services: the run's cost.
    pub fn replica_hours(&self) -> f64 {
        self.services.iter().map(|s| s.replica_seconds).sum::<f64>() / 3600.0
    }
}
