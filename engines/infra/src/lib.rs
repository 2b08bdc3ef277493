//! Infrastructure twins (HIP-0082's "Infrastructure Digital Twins"): a
//! service topology simulated as a discrete-event system instead of physics.
//!
//! * [`model`]: services, their replicas and workers, service times, the
//!   calls each request makes downstream (with timeouts and retries), and the
//!   traffic that enters the system;
//! * [`sim::InfraSim`]: the simulator, an event queue in simulated time,
//!   seeded, so a seed gives the same run; requests queue per replica, hold a
//!   worker while they call downstream, time out, retry, and fail through
//!   their callers; replicas die and come back, are scheduled onto nodes
//!   and evicted from stopped ones, and a primary's standby takes over;
//! * [`fault`]: what chaos injects (Chaos Mesh's vocabulary): pod kill,
//!   network partition, delay, packet loss, CPU stress;
//! * [`report::Report`]: what a run measured, per service and end to end;
//! * [`traces`]: call graphs and service times read from exported traces
//!   (OTLP/JSON, Jaeger);
//! * [`whatif`]: what-if variants, a topology with a patch, and
//!   [`compare`]: runs on the same traffic side by side, as a table and a
//!   plot.
//!
//! Queueing theory checks it: `tests/queueing.rs` compares M/M/1, M/M/c and
//! M/D/1 waiting times with their closed forms and checks Little's law.

pub mod assertion;
pub mod compare;
pub mod fault;
pub mod kubernetes;
pub mod model;
pub mod report;
pub mod sim;
pub mod spec;
pub mod traces;
pub mod whatif;

pub use assertion::{Assertion, Verdict};
pub use fault::{Fault, FaultAction};
pub use model::{CallModel, Distribution, InfraModel, RateProfile, ServiceModel, TrafficModel};
pub use report::Report;
pub use sim::InfraSim;
pub use whatif::{TopologyPatch, Variant};

/// What an infrastructure model or run can refuse, naming the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InfraError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl InfraError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> InfraError {
        InfraError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
