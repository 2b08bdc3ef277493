//! Call graphs from distributed traces: what each service calls, how often,
//! and how long its own work takes, derived from the spans real tracing
//! systems export.
//!
//! [`read_spans`] reads, telling them apart by content (never by file name):
//! * OTLP/JSON, `{"resourceSpans": …}`, one object or the OpenTelemetry
//!   Collector file exporter's lines of them; protobuf's generic JSON mapping
//!   too (base64 ids, int64s as strings, enums by name), and the older
//!   `instrumentationLibrarySpans`;
//! * Jaeger's JSON, `{"data": [traces]}`: the UI's download and the query
//!   API's answer (times in microseconds, parents as `references`).
//!
//! [`call_graph`] groups spans by trace and cuts each trace into *visits*: a
//! visit of a service starts at a span whose parent belongs to another
//! service (or to none) and holds that span's same-service descendants; its
//! parent visit owns that parent span. A caller's k-th call to a callee has
//! the probability that one of its visits made at least k (k-th calls made
//! by under 1 % are left out), so the expected number of calls is the
//! observed mean; calls are ordered by when they start within the visit, on
//! average. A service's time is a log-normal fitted to its visits' self
//! times: the visit's span less what its outgoing calls cover (the CLIENT
//! span, where traced, else the callee's span).
//! What traces cannot tell (timeouts, retries, whether a call is required)
//! is assumed and listed as a finding.

use crate::kubernetes::{Finding, Support};
use crate::model::{CallModel, Distribution};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

mod read;
pub use read::read_spans;

/// A span's role (OpenTelemetry's `SpanKind`; Jaeger's `span.kind` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// One span as read, whatever format it came in. Ids are opaque strings
/// (hex in OTLP/JSON and Jaeger, base64 in protobuf's JSON mapping).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root (an absent or empty parent id).
    pub parent_span_id: Option<String>,
    /// Its resource's `service.name` (OTLP) or its process's `serviceName`.
    pub service: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// Error status (OTLP), or an `error` / `otel.status_code` tag (Jaeger).
    pub error: bool,
}

/// The spans of one input, and what was skipped reading it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpanSet {
    pub spans: Vec<Span>,
    pub findings: Vec<Finding>,
}

/// A call emitted only while at least this share of visits makes it.
const MIN_CALL_SHARE: f64 = 0.01;
/// The least service time fitted: a log-normal needs a positive median.
const MIN_SERVICE_TIME_S: f64 = 1e-6;

/// What traces show of the system: each service's behaviour, and where
/// requests entered.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct CallGraph {
    /// Every service seen, by name.
    pub services: BTreeMap<String, ObservedService>,
    /// Services where requests entered (visits with no parent visit).
    pub entries: BTreeMap<String, ObservedEntry>,
    pub traces: u64,
    pub findings: Vec<Finding>,
}

/// One service as its traced visits show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedService {
    pub visits: u64,
    /// Visits whose entering span has error status (informational).
    pub errors: u64,
    /// The calls one visit makes, in the order visits make them.
    pub calls: Vec<CallModel>,
    /// Fitted to the visits' self times.
    pub service_time: Distribution,
    pub self_time_median_s: f64,
    pub self_time_p99_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObservedEntry {
    pub visits: u64,
    /// Its share of all entering visits.
    pub share: f64,
}

/// A visit: where a request entered a service, and what called it.
struct Visit<'a> {
    root: &'a Span,
    parent: Option<usize>,
    /// The caller's CLIENT (or PRODUCER) span the call left from, if traced.
    call_span: Option<&'a Span>,
}

#[derive(Default)]
struct ServiceTally<'a> {
    visits: u64,
    errors: u64,
    self_times_s: Vec<f64>,
    /// Per callee, per k (from 0): visits with at least k+1 calls to it, and
    /// the sum of the k+1-th call's start offsets.
    calls: BTreeMap<&'a str, Vec<(u64, f64)>>,
    untraced_client_spans: u64,
}

/// What all traces add up to, and what was wrong with them.
#[derive(Default)]
struct Tally<'a> {
    services: BTreeMap<&'a str, ServiceTally<'a>>,
    entries: BTreeMap<&'a str, u64>,
    duplicates: usize,
    orphans: usize,
    incomplete_traces: usize,
    cycles: usize,
}

/// Derives each service's calls and service time from spans (of any number
/// of inputs: a trace's spans may be spread over several).
pub fn call_graph(spans: &[Span]) -> CallGraph {
    let mut traces: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    for span in spans {
        traces.entry(&span.trace_id).or_default().push(span);
    }
    let mut tally = Tally::default();
    for trace in traces.values() {
        let (spans, parent) = tally.link(trace);
        let visits = tally.visits(&spans, &parent);
        tally.count_untraced_calls(&spans, &parent);
        let mut calls: Vec<Vec<&Visit>> = (0..visits.len()).map(|_| Vec::new()).collect();
        for visit in &visits {
            if let Some(p) = visit.parent {
                calls[p].push(visit);
            }
        }
        for (visit, calls) in visits.iter().zip(&calls) {
            tally.add_visit(visit, calls);
        }
    }
    tally.graph(traces.len())
}

impl<'a> Tally<'a> {
    /// A trace's spans (the first of each id) and the index of each one's
    /// parent; a parent not in the trace counts as none.
    fn link(&mut self, trace: &[&'a Span]) -> (Vec<&'a Span>, Vec<Option<usize>>) {
        // Span ids are looked up, never iterated: the order stays the input's.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut spans = Vec::new();
        for &span in trace {
            if index.contains_key(span.span_id.as_str()) {
                self.duplicates += 1;
            } else {
                index.insert(&span.span_id, spans.len());
                spans.push(span);
            }
        }
        let orphans_before = self.orphans;
        let parent = (spans.iter())
            .map(|span| {
                let found = index.get(span.parent_span_id.as_deref()?).copied();
                self.orphans += usize::from(found.is_none());
                found
            })
            .collect();
        self.incomplete_traces += usize::from(self.orphans > orphans_before);
        (spans, parent)
    }

    /// The trace's visits. Each span's visit: walk up to a span already
    /// placed or a root, then place the path top down (iteratively: traces
    /// can be deep).
    fn visits(&mut self, spans: &[&'a Span], parent: &[Option<usize>]) -> Vec<Visit<'a>> {
        let mut visits: Vec<Visit> = Vec::new();
        let mut visit_of: Vec<Option<usize>> = vec![None; spans.len()];
        let mut walked = vec![false; spans.len()];
        for first in 0..spans.len() {
            let (mut path, mut at) = (Vec::new(), first);
            while visit_of[at].is_none() && !walked[at] {
                walked[at] = true;
                path.push(at);
                match parent[at] {
                    Some(p) => at = p,
                    None => break,
                }
            }
            for &s in path.iter().rev() {
                let caller = parent[s].and_then(|p| Some((spans[p], visit_of[p]?)));
                visit_of[s] = Some(match caller {
                    Some((p, v)) if p.service == spans[s].service => v,
                    _ => {
                        // A parent walked but not placed: a cycle of parents.
                        self.cycles += usize::from(parent[s].is_some() && caller.is_none());
                        visits.push(Visit {
                            root: spans[s],
                            parent: caller.map(|(_, v)| v),
                            call_span: caller.map(|(p, _)| p).filter(|p| {
                                matches!(p.kind, SpanKind::Client | SpanKind::Producer)
                            }),
                        });
                        visits.len() - 1
                    }
                });
            }
        }
        visits
    }

    /// CLIENT spans that no span of another service hangs under: calls to
    /// services that are not traced (a database, say).
    fn count_untraced_calls(&mut self, spans: &[&'a Span], parent: &[Option<usize>]) {
        let mut leads_out = vec![false; spans.len()];
        for (s, p) in parent.iter().enumerate() {
            if let Some(p) = *p {
                leads_out[p] |= spans[p].service != spans[s].service;
            }
        }
        for (span, leads_out) in spans.iter().zip(leads_out) {
            if span.kind == SpanKind::Client && !leads_out {
                let tally = self.services.entry(&span.service).or_default();
                tally.untraced_client_spans += 1;
            }
        }
    }

    fn add_visit(&mut self, visit: &Visit<'a>, calls: &[&Visit<'a>]) {
        let start = visit.root.start_ns;
        let end = visit.root.end_ns.max(start);
        let tally = self.services.entry(&visit.root.service).or_default();
        tally.visits += 1;
        tally.errors += u64::from(visit.root.error);
        if visit.parent.is_none() {
            *self.entries.entry(&visit.root.service).or_default() += 1;
        }
        let mut covered = Vec::new();
        let mut offsets: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for call in calls {
            // The CLIENT span normally encloses the callee's; with clock
            // skew either may stick out: take both.
            let (mut from, mut to) = (call.root.start_ns, call.root.end_ns);
            if let Some(client) = call.call_span {
                (from, to) = (from.min(client.start_ns), to.max(client.end_ns));
            }
            let offset_s = (from as f64 - start as f64) * 1e-9;
            offsets
                .entry(&call.root.service)
                .or_default()
                .push(offset_s);
            covered.push((from.clamp(start, end), to.clamp(start, end)));
        }
        let self_ns = (end - start).saturating_sub(covered_ns(covered));
        tally.self_times_s.push(self_ns as f64 * 1e-9);
        for (callee, mut offsets) in offsets {
            offsets.sort_by(f64::total_cmp);
            let kth = tally.calls.entry(callee).or_default();
            kth.resize(kth.len().max(offsets.len()), (0, 0.0));
            for (k, offset_s) in offsets.into_iter().enumerate() {
                kth[k].0 += 1;
                kth[k].1 += offset_s;
            }
        }
    }

    fn graph(self, traces: usize) -> CallGraph {
        let mut graph = CallGraph {
            traces: traces as u64,
            ..CallGraph::default()
        };
        let entered: u64 = self.entries.values().sum();
        for (service, visits) in self.entries {
            let share = visits as f64 / entered as f64;
            let entry = ObservedEntry { visits, share };
            graph.entries.insert(service.to_string(), entry);
        }
        let incomplete = format!(
            "spans in {} of {traces} traces name a parent not among the spans read \
             (incomplete traces): each is taken as where its request entered",
            self.incomplete_traces
        );
        for (count, message) in [
            (
                self.duplicates,
                "spans repeat a span id already read in their trace: the first of each is kept",
            ),
            (self.orphans, &incomplete),
            (
                self.cycles,
                "spans are their own ancestors (a cycle of parent ids): each is taken as a root",
            ),
        ] {
            if count > 0 {
                graph.findings.push(Finding {
                    object: "Traces".to_string(),
                    support: Support::Approximated,
                    message: format!("{count} {message}"),
                });
            }
        }
        for (name, tally) in self.services {
            let observed = observe(name, tally, &mut graph.findings);
            graph.services.insert(name.to_string(), observed);
        }
        graph
    }
}

/// A service's calls and fitted service time, from its tally.
fn observe(name: &str, mut tally: ServiceTally, findings: &mut Vec<Finding>) -> ObservedService {
    let object = format!("Traced service {name}");
    let visits = tally.visits.max(1) as f64;
    let mut calls: Vec<(f64, CallModel)> = Vec::new();
    for (callee, kth) in &tally.calls {
        let made = (kth.iter())
            .map(|&(count, offset_sum_s)| (count as f64 / visits, offset_sum_s / count as f64));
        for (probability, mean_offset_s) in made.take_while(|&(p, _)| p >= MIN_CALL_SHARE) {
            let call = CallModel {
                to: callee.to_string(),
                probability,
                timeout_s: None,
                retries: 0,
                required: true,
                circuit_breaker: None,
            };
            calls.push((mean_offset_s, call));
        }
    }
    // Stable: ties keep callee-name, then k order.
    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !calls.is_empty() {
        findings.push(Finding {
            object: object.clone(),
            support: Support::Assumed,
            message: format!(
                "{} calls derived from {} visits; traces do not show timeouts, retries \
                 or whether a call is required: assumed none, none, and required",
                calls.len(),
                tally.visits
            ),
        });
    }
    tally.self_times_s.sort_by(f64::total_cmp);
    let median_s = quantile(&tally.self_times_s, 0.5).max(MIN_SERVICE_TIME_S);
    let p99_s = quantile(&tally.self_times_s, 0.99).max(median_s);
    let service_time = if tally.self_times_s.len() < 2 || p99_s <= median_s * 1.01 {
        Distribution::Constant { s: median_s }
    } else {
        Distribution::LogNormal { median_s, p99_s }
    };
    let untraced = match tally.untraced_client_spans {
        0 => String::new(),
        n => format!("; {n} CLIENT spans reach no traced service, and count as its work"),
    };
    findings.push(Finding {
        object,
        support: Support::Approximated,
        message: format!(
            "service time fitted to {} visits' self times (median {:.3} ms, p99 {:.3} ms): \
             wall time less traced calls, so waiting inside it (for a worker, a lock) \
             counts as work{untraced}",
            tally.visits,
            median_s * 1e3,
            p99_s * 1e3
        ),
    });
    ObservedService {
        visits: tally.visits,
        errors: tally.errors,
        calls: calls.into_iter().map(|(_, call)| call).collect(),
        service_time,
        self_time_median_s: median_s,
        self_time_p99_s: p99_s,
    }
}

/// The length the intervals cover together, overlaps counted once.
fn covered_ns(mut intervals: Vec<(u64, u64)>) -> u64 {
    intervals.sort_unstable();
    let (mut total, mut reached) = (0, 0);
    for (from, to) in intervals {
        let from = from.max(reached);
        if to > from {
            total += to - from;
            reached = to;
        }
    }
    total
}

/// The q-quantile of sorted values, interpolating between neighbours; 0
/// for none.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0.0;
    };
    let at = q * last as f64;
    let (below, above) = (at.floor() as usize, at.ceil() as usize);
    sorted[below] + (sorted[above] - sorted[below]) * (at - below as f64)
}
