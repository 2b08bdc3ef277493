//! The spec's assertions, sentences with a small grammar, checked as
//! steady-state probes are in LitmusChaos: over a window of the run (during
//! a scenario, before or after it, or throughout), each gives a pass or a
//! fail with its evidence.
//!
//! ```text
//! <service> responds within <duration> [<when>]         every answer OK, none slower
//! <service> p99 latency below <duration> [<when>]
//! <service> error rate below <percent>% [<when>]
//! <service> failover completes within <duration> [<when>]  each time nothing ran behind its
//!                                                        names, back (a standby promoted, or
//!                                                        itself) within the limit
//! <service> recovers within <duration> [<when>]         time from the fault to the last failure
//! no data loss [<when>]                                  no request to a service that writes fails,
//!                                                        and no caller gives one up
//! no requests lost [<when>]                              every outside request answered OK
//! <when> := during <scenario> | before <scenario> | after <scenario> | throughout
//! <duration> := <number>ms | <number>s | <number>m
//! ```
//!
//! Scenario names match with spaces read as hyphens ("network partition" is
//! the scenario `network-partition`).

use crate::report::Latency;
use serde::{Deserialize, Serialize};

/// What an assertion checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    RespondsWithin { service: String, limit_s: f64 },
    P99Below { service: String, limit_s: f64 },
    ErrorRateBelow { service: String, percent: f64 },
    RecoversWithin { service: String, limit_s: f64 },
    FailoverWithin { service: String, limit_s: f64 },
    NoDataLoss,
    NoRequestsLost,
}

/// Over which part of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Throughout,
    During(String),
    Before(String),
    After(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assertion {
    pub text: String,
    pub check: Check,
    pub when: When,
}

/// The grammar, for error messages.
pub const GRAMMAR: &str = "`<service> responds within <duration>`, `<service> p99 latency below <duration>`, \
`<service> error rate below <percent>%`, `<service> failover completes within <duration>`, \
`<service> recovers within <duration>`, `no data loss` or `no requests lost`, each optionally followed by \
`during`, `before` or `after` <scenario>, or `throughout`";

fn duration(word: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = word.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = word.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = word.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = word.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let v: f64 = number.parse().ok()?;
    (v.is_finite() && v > 0.0).then_some(v * scale)
}

/// A scenario name as written, hyphenated and lower case.
pub fn scenario_key(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
}

/// Reads one assertion; the error says what was expected.
pub fn parse(text: &str) -> Result<Assertion, String> {
    let lower = text.trim().to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    // The window: the last `during|before|after <scenario>`, or `throughout`.
    let (body, when) = match words
        .iter()
        .rposition(|w| matches!(*w, "during" | "before" | "after"))
    {
        Some(i) if i + 1 < words.len() => {
            let scenario = words[i + 1..].join(" ");
            let when = match words[i] {
                "during" => When::During(scenario),
                "before" => When::Before(scenario),
                _ => When::After(scenario),
            };
            (&words[..i], when)
        }
        Some(_) => {
            return Err(format!(
                "a scenario after `{}`",
                words.last().unwrap_or(&"")
            ));
        }
        None if words.last() == Some(&"throughout") => {
            (&words[..words.len() - 1], When::Throughout)
        }
        None => (&words[..], When::Throughout),
    };
    let need_duration = |w: Option<&&str>| {
        w.and_then(|w| duration(w)).ok_or_else(|| {
            format!(
                "a duration such as 5s or 200ms, found `{}`",
                w.unwrap_or(&"")
            )
        })
    };
    let check = match body {
        ["no", "data", "loss"] => Check::NoDataLoss,
        ["no", "requests" | "request", "lost"] | ["no", "requests", "are", "lost"] => {
            Check::NoRequestsLost
        }
        [service, "responds", "within", rest @ ..] if rest.len() == 1 => Check::RespondsWithin {
            service: service.to_string(),
            limit_s: need_duration(rest.first())?,
        },
        [
            service,
            "failover",
            "completes" | "finishes",
            "within",
            rest @ ..,
        ] if rest.len() == 1 => Check::FailoverWithin {
            service: service.to_string(),
            limit_s: need_duration(rest.first())?,
        },
        [service, "recovers", "within", rest @ ..] if rest.len() == 1 => Check::RecoversWithin {
            service: service.to_string(),
            limit_s: need_duration(rest.first())?,
        },
        [service, "p99", "latency", "below" | "under", rest @ ..]
        | [service, "p99", "below" | "under", rest @ ..]
            if rest.len() == 1 =>
        {
            Check::P99Below {
                service: service.to_string(),
                limit_s: need_duration(rest.first())?,
            }
        }
        [service, "error", "rate", "below" | "under", percent] => {
            let value = percent
                .strip_suffix('%')
                .and_then(|p| p.parse::<f64>().ok())
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| format!("a percentage such as 1%, found `{percent}`"))?;
            Check::ErrorRateBelow {
                service: service.to_string(),
                percent: value,
            }
        }
        _ => return Err(format!("one of {GRAMMAR}")),
    };
    Ok(Assertion {
        text: text.trim().to_string(),
        check,
        when,
    })
}

/// What a check saw over its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The window, seconds from the run's start (`to` is the run's end
    /// when it runs to the end).
    pub from_s: f64,
    pub to_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub latency: Latency,
    /// From the fault's start to the last failure it caused (recovery
    /// checks); `None` when it never recovered within the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub assertion: String,
    pub passed: bool,
    /// Its window is not over (a running twin): `passed` is the outcome so
    /// far, and may change.
    #[serde(default)]
    pub pending: bool,
    /// Why, in words, with the figures.
    pub reason: String,
    pub evidence: Evidence,
}
