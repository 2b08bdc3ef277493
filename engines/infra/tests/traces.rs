//! Call graphs from traces against graphs known in advance: traces generated
//! here from a seeded graph, written as OTLP/JSON (CLIENT spans between
//! services, as the Collector's file exporter writes it) and as Jaeger JSON
//! (server spans only), must give back the graph's call probabilities, call
//! order, entries, errors and self times; and spans from the OpenTelemetry
//! Python SDK itself (tests/python/otel_traces.py) must give back the graph
//! that script drew.

use hanzo_twin_infra::kubernetes::Support;
use hanzo_twin_infra::traces::{CallGraph, Span, call_graph, read_spans};
use hanzo_twin_infra::{Distribution, InfraError};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution as _, LogNormal};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const Z99: f64 = 2.326_347_874_040_841;
const TRACES: usize = 5000;
const SERVICES: [&str; 4] = ["api", "gateway", "postgres", "redis"];

/// The generator's self times: log-normal `(median, p99)` in seconds, or
/// constant (redis's).
fn self_time_law(service: &str) -> (f64, f64) {
    match service {
        "gateway" => (0.002, 0.008),
        "api" => (0.005, 0.020),
        "redis" => (0.0005, 0.0005),
        _ => (0.003, 0.030),
    }
}

/// One generated visit and the calls it made, in microseconds.
struct Visit {
    service: &'static str,
    start_us: u64,
    end_us: u64,
    error: bool,
    /// `(client span start, client span end, the callee's visit)`.
    calls: Vec<(u64, u64, Visit)>,
}

/// What the generator drew, to compare the derived graph with.
#[derive(Default)]
struct Truth {
    visits: BTreeMap<&'static str, u64>,
    entries: BTreeMap<&'static str, u64>,
    errors: BTreeMap<&'static str, u64>,
    /// caller → callee → visits making at least k+1 calls.
    at_least: BTreeMap<&'static str, BTreeMap<&'static str, Vec<u64>>>,
    self_times_s: BTreeMap<&'static str, Vec<f64>>,
}

struct Generator {
    rng: ChaCha8Rng,
    /// Network time each way between a CLIENT span and its callee's span.
    gap_us: u64,
    truth: Truth,
}

impl Generator {
    /// gateway → api always; api → redis (90 %), then postgres twice (30 %),
    /// once (50 %) or not at all. Requests enter at the gateway (90 %) or at
    /// the api (10 %, internal traffic). 2 % of postgres's visits fail.
    fn generate(seed: u64, gap_us: u64, traces: usize) -> (Vec<Visit>, Truth) {
        let mut generator = Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            gap_us,
            truth: Truth::default(),
        };
        let roots = (0..traces)
            .map(|i| {
                let entry = if generator.rng.random::<f64>() < 0.9 {
                    "gateway"
                } else {
                    "api"
                };
                *generator.truth.entries.entry(entry).or_default() += 1;
                generator.visit(entry, 1_750_000_000_000_000 + i as u64 * 20_000)
            })
            .collect();
        (roots, generator.truth)
    }

    fn callees(&mut self, service: &str) -> Vec<&'static str> {
        match service {
            "gateway" => vec!["api"],
            "api" => {
                let mut calls = Vec::new();
                if self.rng.random::<f64>() < 0.9 {
                    calls.push("redis");
                }
                let u = self.rng.random::<f64>();
                let postgres = if u < 0.3 {
                    2
                } else if u < 0.8 {
                    1
                } else {
                    0
                };
                calls.extend(std::iter::repeat_n("postgres", postgres));
                calls
            }
            _ => Vec::new(),
        }
    }

    fn visit(&mut self, service: &'static str, start_us: u64) -> Visit {
        let (median, p99) = self_time_law(service);
        let self_s = if p99 > median {
            let law = LogNormal::new(median.ln(), (p99 / median).ln() / Z99).expect("law");
            law.sample(&mut self.rng)
        } else {
            median
        };
        let self_us = ((self_s * 1e6).round() as u64).max(1);
        let callees = self.callees(service);
        // The service's own work, cut at random points around its calls.
        let mut cuts: Vec<u64> = (0..callees.len())
            .map(|_| self.rng.random_range(0..=self_us))
            .collect();
        cuts.sort_unstable();
        cuts.push(self_us);
        let mut t = start_us + cuts[0];
        let mut calls = Vec::new();
        let at_least = self.truth.at_least.entry(service).or_default();
        for (callee, k) in callees
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, callees[..i].iter().filter(|&d| d == c).count()))
        {
            let counts = at_least.entry(callee).or_default();
            if counts.len() <= k {
                counts.push(0);
            }
            counts[k] += 1;
        }
        for (i, callee) in callees.into_iter().enumerate() {
            let child = self.visit(callee, t + self.gap_us);
            let client_end = child.end_us + self.gap_us;
            calls.push((t, client_end, child));
            t = client_end + (cuts[i + 1] - cuts[i]);
        }
        let error = service == "postgres" && self.rng.random::<f64>() < 0.02;
        *self.truth.visits.entry(service).or_default() += 1;
        *self.truth.errors.entry(service).or_default() += u64::from(error);
        let samples = self.truth.self_times_s.entry(service).or_default();
        samples.push(self_us as f64 * 1e-6);
        Visit {
            service,
            start_us,
            end_us: t,
            error,
            calls,
        }
    }
}

/// Distinct, random-looking hex span ids (an odd multiplier is a bijection).
fn span_id(counter: &mut u64) -> String {
    *counter += 1;
    format!("{:016x}", counter.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// OTLP/JSON spans of a visit: its SERVER span (the api's work under an
/// INTERNAL span too), a CLIENT span per call, the callee's SERVER span
/// under it.
fn otlp_spans(
    visit: &Visit,
    trace_id: &str,
    parent: Option<&str>,
    ids: &mut u64,
    out: &mut Vec<(&'static str, Value)>,
) {
    let span = |id: &str, parent: Option<&str>, name: &str, kind: u8, from: u64, to: u64| {
        let mut span = json!({
            "traceId": trace_id, "spanId": id, "name": name, "kind": kind,
            "startTimeUnixNano": (from * 1000).to_string(),
            "endTimeUnixNano": (to * 1000).to_string(),
            "status": {},
        });
        if let Some(parent) = parent {
            span["parentSpanId"] = json!(parent);
        }
        span
    };
    let server = span_id(ids);
    let mut server_span = span(&server, parent, "handle", 2, visit.start_us, visit.end_us);
    if visit.error {
        server_span["status"] = json!({"code": 2, "message": "failed"});
    }
    out.push((visit.service, server_span));
    let mut caller = server;
    if visit.service == "api" {
        let internal = span_id(ids);
        let s = span(
            &internal,
            Some(&caller),
            "work",
            1,
            visit.start_us,
            visit.end_us,
        );
        out.push((visit.service, s));
        caller = internal;
    }
    for (from, to, callee) in &visit.calls {
        let client = span_id(ids);
        let name = format!("call {}", callee.service);
        out.push((
            visit.service,
            span(&client, Some(&caller), &name, 3, *from, *to),
        ));
        otlp_spans(callee, trace_id, Some(&client), ids, out);
    }
}

/// The Collector file exporter's output: JSON lines, each an export request
/// of up to 1000 spans grouped by service (a trace may straddle lines).
fn otlp_json_lines(roots: &[Visit], seed: u64) -> String {
    let mut spans = Vec::new();
    let mut ids = 0;
    for (i, root) in roots.iter().enumerate() {
        let trace_id = format!("{:032x}", (i as u128 + 1) * 0x1234_5678_9abc_def1);
        otlp_spans(root, &trace_id, None, &mut ids, &mut spans);
    }
    // Exporters send spans as they end, not trace by trace.
    spans.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut lines = String::new();
    for chunk in spans.chunks(1000) {
        let mut by_service: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for (service, span) in chunk {
            by_service.entry(service).or_default().push(span);
        }
        let resource_spans: Vec<Value> = by_service
            .into_iter()
            .map(|(service, spans)| {
                json!({
                    "resource": {"attributes": [
                        {"key": "telemetry.sdk.language", "value": {"stringValue": "rust"}},
                        {"key": "service.name", "value": {"stringValue": service}},
                    ]},
                    "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
                })
            })
            .collect();
        lines += &json!({ "resourceSpans": resource_spans }).to_string();
        lines.push('\n');
    }
    lines
}

/// Jaeger's JSON: each service's span a child of its caller's (no CLIENT
/// spans), times in microseconds, services through `processes`.
fn jaeger_json(roots: &[Visit]) -> String {
    fn spans(visit: &Visit, trace_id: &str, parent: Option<&str>, ids: &mut u64) -> Vec<Value> {
        let id = span_id(ids);
        let references: Vec<Value> = parent
            .map(|p| json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": p}))
            .into_iter()
            .collect();
        let mut tags = vec![json!({"key": "span.kind", "type": "string", "value": "server"})];
        if visit.error {
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        let mut all = vec![json!({
            "traceID": trace_id, "spanID": id, "operationName": "handle",
            "references": references, "startTime": visit.start_us,
            "duration": visit.end_us - visit.start_us,
            "processID": format!("p-{}", visit.service), "tags": tags, "logs": [],
        })];
        for (_, _, callee) in &visit.calls {
            all.extend(spans(callee, trace_id, Some(&id), ids));
        }
        all
    }
    let mut ids = 0;
    let processes: BTreeMap<String, Value> = SERVICES
        .iter()
        .map(|s| (format!("p-{s}"), json!({"serviceName": s, "tags": []})))
        .collect();
    let data: Vec<Value> = (roots.iter().enumerate())
        .map(|(i, root)| {
            let trace_id = format!(
                "{:016x}",
                (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1)
            );
            let spans = spans(root, &trace_id, None, &mut ids);
            json!({"traceID": trace_id, "spans": spans, "processes": processes, "warnings": null})
        })
        .collect();
    json!({"data": data, "total": 0, "limit": 0, "offset": 0, "errors": null}).to_string()
}

fn graph(field: &str, text: &str) -> CallGraph {
    let set = read_spans(field, text).expect("readable");
    assert!(set.findings.is_empty(), "{:?}", set.findings);
    call_graph(&set.spans)
}

/// Nearest-rank percentile (the library interpolates: close enough).
fn percentile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// The derived graph against what the generator drew (exact counts) and
/// against its laws (statistical tolerance).
fn check(format: &str, graph: &CallGraph, truth: &Truth) {
    assert_eq!(graph.traces, TRACES as u64, "{format}");
    assert_eq!(
        graph
            .services
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        SERVICES,
        "{format}"
    );
    // Complete traces: the only findings are the per-service ones.
    for finding in &graph.findings {
        assert!(finding.object.starts_with("Traced service "), "{finding:?}");
    }
    let assumed: Vec<&str> = (graph.findings.iter())
        .filter(|f| f.support == Support::Assumed)
        .map(|f| f.object.as_str())
        .collect();
    assert_eq!(assumed, ["Traced service api", "Traced service gateway"]);
    for (name, service) in &graph.services {
        let name = name.as_str();
        assert_eq!(service.visits, truth.visits[name], "{format} {name} visits");
        assert_eq!(service.errors, truth.errors[name], "{format} {name} errors");
        // Calls: exactly the drawn shares, within 3 % of the graph's, in
        // the order visits make them.
        let drawn = truth.at_least.get(name).cloned().unwrap_or_default();
        let expected: Vec<(&str, f64)> = match name {
            "gateway" => vec![("api", 1.0)],
            "api" => vec![("redis", 0.9), ("postgres", 0.8), ("postgres", 0.3)],
            _ => vec![],
        };
        let names: Vec<&str> = service.calls.iter().map(|c| c.to.as_str()).collect();
        let expected_names: Vec<&str> = expected.iter().map(|e| e.0).collect();
        assert_eq!(names, expected_names, "{format} {name}'s calls, in order");
        let mut k_of: BTreeMap<&str, usize> = BTreeMap::new();
        for (call, (to, law)) in service.calls.iter().zip(&expected) {
            let k = k_of.entry(to).or_default();
            let share = drawn[to][*k] as f64 / truth.visits[name] as f64;
            *k += 1;
            println!(
                "{format}: {name} → {to}: p {:.4} (drawn {share:.4}, law {law})",
                call.probability
            );
            assert!(
                (call.probability - share).abs() < 1e-12,
                "{format} {name}→{to}"
            );
            assert!(
                (call.probability - law).abs() < 0.03,
                "{format} {name}→{to}"
            );
            assert_eq!(call.timeout_s, None);
            assert_eq!(call.retries, 0);
            assert!(call.required);
        }
        // Self times: the drawn samples' percentiles (within 1 %: the
        // methods differ), the law's within 10 %.
        let samples = &truth.self_times_s[name];
        let (median, p99) = self_time_law(name);
        println!(
            "{format}: {name} self time: median {:.4} ms (drawn {:.4}, law {:.4}), p99 {:.4} ms (drawn {:.4}, law {:.4})",
            service.self_time_median_s * 1e3,
            percentile(samples, 0.5) * 1e3,
            median * 1e3,
            service.self_time_p99_s * 1e3,
            percentile(samples, 0.99) * 1e3,
            p99 * 1e3
        );
        let near = |a: f64, b: f64, tolerance: f64| (a - b).abs() <= tolerance * b;
        assert!(
            near(service.self_time_median_s, percentile(samples, 0.5), 0.01),
            "{name}"
        );
        assert!(
            near(service.self_time_p99_s, percentile(samples, 0.99), 0.01),
            "{name}"
        );
        assert!(
            near(service.self_time_median_s, median, 0.1),
            "{format} {name} median"
        );
        assert!(
            near(service.self_time_p99_s, p99, 0.1),
            "{format} {name} p99"
        );
        match service.service_time {
            Distribution::Constant { s } => {
                assert_eq!(name, "redis");
                assert!(near(s, 0.0005, 1e-9), "{s}");
            }
            Distribution::LogNormal { median_s, p99_s } => {
                assert_ne!(name, "redis");
                assert_eq!(median_s, service.self_time_median_s);
                assert_eq!(p99_s, service.self_time_p99_s);
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let entries: Vec<(&str, u64)> = (graph.entries.iter())
        .map(|(s, e)| (s.as_str(), e.visits))
        .collect();
    let drawn: Vec<(&str, u64)> = truth.entries.iter().map(|(s, n)| (*s, *n)).collect();
    assert_eq!(entries, drawn, "{format} entries");
    assert!((graph.entries["gateway"].share - 0.9).abs() < 0.03);
    assert!((graph.entries["api"].share - 0.1).abs() < 0.03);
    println!(
        "{format}: entries gateway {:.4}, api {:.4}; postgres errors {}",
        graph.entries["gateway"].share,
        graph.entries["api"].share,
        graph.services["postgres"].errors
    );
}

#[test]
fn otlp_json_lines_with_client_spans_give_back_the_graph() {
    let (roots, truth) = Generator::generate(1, 50, TRACES);
    let text = otlp_json_lines(&roots, 2);
    assert!(text.lines().count() > 10, "several export requests");
    check("OTLP", &graph("traces.paths[0]", &text), &truth);
}

#[test]
fn jaeger_json_without_client_spans_gives_back_the_graph() {
    let (roots, truth) = Generator::generate(3, 0, TRACES);
    check(
        "Jaeger",
        &graph("traces.paths[0]", &jaeger_json(&roots)),
        &truth,
    );
}

#[test]
fn both_formats_of_the_same_traces_give_the_same_graph() {
    // No network time, so a CLIENT span covers exactly its callee's span.
    let (roots, _) = Generator::generate(4, 0, 300);
    let otlp = graph("otlp", &otlp_json_lines(&roots, 5));
    let jaeger = graph("jaeger", &jaeger_json(&roots));
    assert_eq!(otlp, jaeger);
    // Reading the same spans in another order changes nothing.
    let mut spans = read_spans("otlp", &otlp_json_lines(&roots, 6))
        .expect("readable")
        .spans;
    spans.reverse();
    assert_eq!(call_graph(&spans), otlp);
}

fn refusal(text: &str) -> String {
    match read_spans("topology.traces.paths[0]", text) {
        Err(InfraError::Invalid { field, message }) => {
            assert_eq!(field, "topology.traces.paths[0]");
            message
        }
        Ok(set) => panic!("read {} spans from {text:?}", set.spans.len()),
    }
}

#[test]
fn bad_inputs_are_refused_naming_the_field() {
    let message = refusal("service,latency\napi,3\n");
    assert!(message.starts_with("line 1: not JSON"), "{message}");
    let message = refusal(r#"{"traces": []}"#);
    assert_eq!(
        message,
        "line 1: neither OTLP JSON (resourceSpans) nor Jaeger JSON (data): an object with keys traces"
    );
    let message = refusal("[1, 2]");
    assert!(message.ends_with("(data): an array"), "{message}");
    assert_eq!(refusal(""), "no spans in it");
    assert_eq!(refusal(r#"{"resourceSpans": []}"#), "no spans in it");
    assert_eq!(refusal(r#"{"data": []}"#), "no spans in it");
    // The third of the Collector's lines is broken: named by line and path.
    let good = r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "a1", "spanId": "b2", "startTimeUnixNano": "5", "endTimeUnixNano": "9"}]}]}]}"#;
    let bad = good.replace("\"5\"", "\"5 ns\"");
    let message = refusal(&format!("{good}\n\n{bad}\n{good}\n"));
    assert!(
        message.starts_with(
            "line 3: OTLP JSON: resourceSpans[0].scopeSpans[0].spans[0].startTimeUnixNano: invalid value"
        ),
        "{message}"
    );
    let message = refusal(&format!("{good}\n{{\"resourceSpans\": [\n"));
    assert!(message.starts_with("line 2: not JSON"), "{message}");
    let message =
        refusal(r#"{"data": [{"spans": [{"spanID": "1", "startTime": 1, "duration": 2}]}]}"#);
    assert!(
        message.starts_with("line 1: Jaeger JSON: data[0].spans[0]: missing field `traceID`"),
        "{message}"
    );
}

/// An OTLP span in JSON, with its times in nanoseconds as numbers.
fn span(trace: &str, id: &str, parent: &str, kind: Value, from: u64, to: u64) -> Value {
    json!({"traceId": trace, "spanId": id, "parentSpanId": parent, "kind": kind,
           "startTimeUnixNano": from, "endTimeUnixNano": to})
}

fn resource(service: Option<&str>, spans: Vec<Value>) -> Value {
    let attributes: Vec<Value> = service
        .map(|s| json!({"key": "service.name", "value": {"stringValue": s}}))
        .into_iter()
        .collect();
    // An older exporter's key for the spans' scope.
    json!({"resource": {"attributes": attributes}, "instrumentationLibrarySpans": [{"spans": spans}]})
}

#[test]
fn skipped_spans_and_incomplete_traces_are_findings() {
    let document = json!({"resourceSpans": [
        resource(Some("front"), vec![
            span("t1", "f1", "", json!("SPAN_KIND_SERVER"), 0, 10_000_000),
            // Ends before it starts: skipped.
            span("t1", "f2", "f1", json!(3), 5_000_000, 4_000_000),
            // Its parent was never exported: the trace is incomplete.
            span("t2", "f3", "lost", json!("SPAN_KIND_SERVER"), 0, 4_000_000),
        ]),
        resource(None, vec![span("t1", "x1", "f1", json!(2), 1_000_000, 2_000_000)]),
        // `back`'s span hangs straight under front's SERVER span (no CLIENT
        // span), and under a span with no service (skipped).
        resource(Some("back"), vec![
            span("t1", "b1", "f1", json!("SPAN_KIND_SERVER"), 2_000_000, 6_000_000),
            span("t1", "b2", "x1", json!("SPAN_KIND_SERVER"), 1_200_000, 1_500_000),
        ]),
    ]});
    let set = read_spans("traces", &document.to_string()).expect("readable");
    assert_eq!(set.spans.len(), 4);
    let messages: Vec<&str> = set.findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "1 spans have no service name (service.name, or a process's serviceName): skipped; their children count as roots",
            "1 spans end before they start: skipped; their children count as roots",
        ]
    );
    assert!(set.findings.iter().all(|f| f.object == "traces"));
    let graph = call_graph(&set.spans);
    let orphans: Vec<&str> = (graph.findings.iter())
        .filter(|f| f.object == "Traces")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        orphans,
        [
            "2 spans in 2 of 2 traces name a parent not among the spans read (incomplete traces): each is taken as where its request entered"
        ]
    );
    let entries: Vec<(&str, u64)> = (graph.entries.iter())
        .map(|(s, e)| (s.as_str(), e.visits))
        .collect();
    assert_eq!(entries, [("back", 1), ("front", 2)]);
    let front = &graph.services["front"];
    assert_eq!(front.visits, 2);
    assert_eq!(front.calls.len(), 1);
    assert_eq!(
        (front.calls[0].to.as_str(), front.calls[0].probability),
        ("back", 0.5)
    );
    // Self times 10 − 4 ms and 4 ms: the median interpolates to 5 ms.
    assert!((front.self_time_median_s - 0.005).abs() < 1e-12);
    // Its self times 4 ms (b1) and 0.3 ms (b2, an orphan).
    let Distribution::LogNormal { median_s, p99_s } = graph.services["back"].service_time else {
        panic!("{:?}", graph.services["back"]);
    };
    assert!((median_s - 0.00215).abs() < 1e-12, "{median_s}");
    assert!((p99_s - (0.0003 + 0.0037 * 0.99)).abs() < 1e-12, "{p99_s}");
}

#[test]
fn repeated_and_cyclic_span_ids_are_findings() {
    let span = |trace: &str, id: &str, parent: Option<&str>, service: &str| Span {
        trace_id: trace.into(),
        span_id: id.into(),
        parent_span_id: parent.map(Into::into),
        service: service.into(),
        name: "op".into(),
        kind: hanzo_twin_infra::traces::SpanKind::Server,
        start_ns: 0,
        end_ns: 1_000,
        error: false,
    };
    let spans = [
        span("t1", "a", None, "front"),
        // Exported twice.
        span("t1", "a", None, "front"),
        span("t1", "b", Some("a"), "back"),
        // Each the other's parent; and one its own.
        span("t2", "c", Some("d"), "front"),
        span("t2", "d", Some("c"), "back"),
        span("t3", "e", Some("e"), "back"),
    ];
    let graph = call_graph(&spans);
    let messages: Vec<&str> = (graph.findings.iter())
        .filter(|f| f.object == "Traces")
        .map(|f| f.message.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "1 spans repeat a span id already read in their trace: the first of each is kept",
            "2 spans are their own ancestors (a cycle of parent ids): each is taken as a root",
        ]
    );
    // t2's cycle is cut where the walk up from c closes it: at d, a root
    // visit of back, which then calls front (c).
    assert_eq!(graph.services["front"].visits, 2);
    assert_eq!(graph.services["back"].visits, 3);
    assert_eq!(graph.entries["front"].visits, 1);
    assert_eq!(graph.entries["back"].visits, 2);
    let calls = |service: &str| -> Vec<(String, f64)> {
        (graph.services[service].calls.iter())
            .map(|c| (c.to.clone(), c.probability))
            .collect()
    };
    assert_eq!(calls("front"), [("back".to_string(), 0.5)]);
    assert_eq!(calls("back"), [("front".to_string(), 1.0 / 3.0)]);
}

#[test]
fn protobuf_json_mapping_and_jaeger_quirks_read() {
    // Base64 ids, enums by name, an error status by name, no parent field
    // for a root; Jaeger's error tag as a string, an embedded process.
    let otlp = json!({"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "web"}}]},
        "scopeSpans": [{"spans": [
            {"traceId": "+8GviX1p6TjE9xj9JQxn8w==", "spanId": "SsjqRIFOPl0=", "kind": "SPAN_KIND_SERVER",
             "startTimeUnixNano": "1750000000000000000", "endTimeUnixNano": "1750000000007600000",
             "status": {"code": "STATUS_CODE_ERROR"}, "flags": 256}]}]}]});
    let set = read_spans("t", &otlp.to_string()).expect("readable");
    let expected = Span {
        trace_id: "+8GviX1p6TjE9xj9JQxn8w==".into(),
        span_id: "SsjqRIFOPl0=".into(),
        parent_span_id: None,
        service: "web".into(),
        name: String::new(),
        kind: hanzo_twin_infra::traces::SpanKind::Server,
        start_ns: 1_750_000_000_000_000_000,
        end_ns: 1_750_000_000_007_600_000,
        error: true,
    };
    assert_eq!(set.spans, [expected]);
    let jaeger = json!({"data": [{"traceID": "ab", "spans": [
        {"traceID": "ab", "spanID": "01", "operationName": "GET", "references": null,
         "startTime": 10, "duration": 5, "process": {"serviceName": "web"},
         "tags": [{"key": "error", "type": "string", "value": "true"}]}]}]});
    let set = read_spans("t", &jaeger.to_string()).expect("readable");
    assert_eq!(
        (set.spans[0].start_ns, set.spans[0].end_ns),
        (10_000, 15_000)
    );
    assert!(set.spans[0].error);
    assert_eq!(set.spans[0].service, "web");
}

/// The OpenTelemetry Python SDK's own spans (tests/python/otel_traces.py),
/// encoded by its OTLP encoder and protobuf's JSON mapping.
#[test]
fn spans_from_the_opentelemetry_python_sdk_give_back_its_graph() {
    let Ok(python) = std::env::var("HANZO_TWIN_TEST_PYTHON") else {
        eprintln!(
            "\n*** SKIPPED spans_from_the_opentelemetry_python_sdk_give_back_its_graph: \
             HANZO_TWIN_TEST_PYTHON is not set; run scripts/test.sh, which installs \
             opentelemetry-sdk into ./.venv and sets it. ***\n"
        );
        return;
    };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("otel_traces.json");
    let run = std::process::Command::new(&python)
        .arg(repo.join("tests/python/otel_traces.py"))
        .arg(&out)
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "otel_traces.py failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let truth: Value = serde_json::from_slice(&run.stdout).expect("the script's truth");
    let text = std::fs::read_to_string(&out).expect("the script's spans");
    let graph = graph("traces.paths[0]", &text);
    assert_eq!(graph.traces, truth["requests"].as_u64().expect("requests"));
    for (name, service) in &graph.services {
        let visits = truth["visits"][name].as_u64().expect("visits");
        assert_eq!(service.visits, visits, "{name}");
        assert_eq!(
            service.errors,
            truth["errors"][name].as_u64().expect("errors")
        );
        let self_s = truth["self_time_s"][name].as_f64().expect("self time");
        assert_eq!(
            service.service_time,
            Distribution::Constant { s: self_s },
            "{name}"
        );
        let mut expected = Vec::new();
        if let Some(callees) = truth["calls"][name].as_object() {
            for (callee, counts) in callees {
                for count in counts.as_array().expect("counts") {
                    let share = count.as_f64().expect("count") / visits as f64;
                    expected.push((callee.clone(), share));
                }
            }
        }
        let derived: Vec<(String, f64)> = (service.calls.iter())
            .map(|c| (c.to.clone(), c.probability))
            .collect();
        println!("Python SDK: {name}: {visits} visits, calls {derived:?}, self time {self_s} s");
        assert_eq!(derived, expected, "{name}");
    }
    let names: Vec<&String> = graph.services.keys().collect();
    assert_eq!(names, ["orders", "stock", "web"]);
    for (name, entry) in &graph.entries {
        assert_eq!(
            Some(entry.visits),
            truth["entries"][name].as_u64(),
            "{name}"
        );
    }
    assert_eq!(graph.entries.len(), 2, "web and orders");
}

/// A definition that gives no calls or service times for most services
/// takes them from its traces: the shop's manifests, traces of the same
/// services (redis and postgres by their Service names), and a gateway
/// whose calls the definition writes itself (those win).
#[test]
fn a_definition_takes_its_call_graph_and_service_times_from_traces() {
    let (roots, truth) = Generator::generate(5, 50, 2000);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("traces.json"), otlp_json_lines(&roots, 6)).expect("write");
    let shop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/infra/shop");
    // A service the topology lacks, seen in a trace of its own.
    let billing = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "billing"}}]},
        "scopeSpans": [{"spans": [span("b1", "01", "", json!(2), 1_000, 2_000_000)]}]
    }]});
    let definition = format!(
        r#"
name: shop-traced
type: infrastructure
topology:
  source: manifests
  paths: ["{}"]
  namespaces: [shop]
  traces:
    paths: [traces.json]
    spans: '{}'
  services:
    gateway:
      workers: 32
      calls: [{{ to: api, timeout_s: 3, retries: 1 }}]
    api: {{ workers: 8 }}
traffic:
  source: constant
  entries: [{{ service: gateway, rps: 100 }}]
simulation: {{ duration: 2m, seed: 3 }}
"#,
        shop.display(),
        billing
    );
    let spec = hanzo_twin_infra::spec::InfraTwinSpec::parse(&definition).expect("valid");
    let mut p = spec
        .prepare(dir.path(), spec.traffic().expect("traffic"), None, |_| {
            Ok(())
        })
        .expect("prepared");
    let model = p.sim.model().clone();
    let api = model.service("api").expect("api");
    let calls: Vec<(&str, f64)> = api
        .calls
        .iter()
        .map(|c| (c.to.as_str(), c.probability))
        .collect();
    let at_least =
        |k: usize| truth.at_least["api"]["postgres"][k] as f64 / truth.visits["api"] as f64;
    assert_eq!(
        calls.iter().map(|c| c.0).collect::<Vec<_>>(),
        ["redis", "postgres", "postgres"]
    );
    assert!((calls[1].1 - at_least(0)).abs() < 1e-9 && (calls[2].1 - at_least(1)).abs() < 1e-9);
    match api.service_time {
        Distribution::LogNormal { median_s, p99_s } => {
            assert!((median_s - 0.005).abs() < 0.0005 && (p99_s - 0.020).abs() < 0.002)
        }
        other => panic!("api's traced time is log-normal: {other:?}"),
    }
    assert!(matches!(
        model
            .service("cache")
            .expect("redis's workload")
            .service_time,
        Distribution::Constant { .. }
    ));
    // The definition's own calls win over the traced ones.
    let gateway = model.service("gateway").expect("gateway");
    assert_eq!(gateway.calls.len(), 1);
    assert_eq!(gateway.calls[0].timeout_s, Some(3.0));
    // The traced service the topology lacks is listed, not modelled.
    assert!(
        p.findings
            .iter()
            .any(|f| f.object == "Traced service billing" && f.support == Support::NotSimulated),
        "{:#?}",
        p.findings
    );
    // It runs: the database sees about 1.1 calls per API request.
    p.sim.run_until(p.duration_s);
    let report = p.sim.report();
    let ratio = report.service("postgres").expect("postgres").arrivals as f64
        / report.service("api").expect("api").arrivals as f64;
    assert!(
        (ratio - (at_least(0) + at_least(1))).abs() < 0.05,
        "{ratio}"
    );

    // Traces that cannot be read are refused naming the file's field.
    let broken = definition.replace("paths: [traces.json]", "paths: [missing.json]");
    let spec = hanzo_twin_infra::spec::InfraTwinSpec::parse(&broken).expect("valid");
    let e = spec
        .prepare(dir.path(), spec.traffic().expect("traffic"), None, |_| {
            Ok(())
        })
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.starts_with("topology.traces.paths[0]"), "{e}");
}
