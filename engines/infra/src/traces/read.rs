//! Reading spans: OTLP/JSON and Jaeger's JSON into [`Span`]s, told apart by
//! content. Only the fields the call graph needs are read; others are
//! ignored.

use super::{Span, SpanKind, SpanSet};
use crate::InfraError;
use crate::kubernetes::{Finding, Support};
use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// Reads OTLP/JSON or Jaeger JSON (see the module's documentation); errors
/// name `field` (the caller's name for this input) and the line where the
/// offending document starts. Spans without a service name, or ending
/// before they start, are skipped and reported as findings.
pub fn read_spans(field: &str, text: &str) -> Result<SpanSet, InfraError> {
    // Files saved on Windows may start with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut read = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let newlines = |from: usize, to: usize| {
        let between = text.as_bytes().get(from..to).unwrap_or_default();
        between.iter().filter(|&&b| b == b'\n').count()
    };
    let (mut counted_to, mut line) = (0, 1);
    loop {
        // The document starts at the first non-blank byte after the last.
        let rest = text.get(counted_to..).unwrap_or_default();
        let start = text.len() - rest.trim_start_matches([' ', '\t', '\r', '\n']).len();
        line += newlines(counted_to, start);
        let Some(document) = stream.next() else { break };
        let document = document
            .map_err(|e| InfraError::invalid(field, format!("line {line}: not JSON: {e}")))?;
        read_document(document, &mut read)
            .map_err(|message| InfraError::invalid(field, format!("line {line}: {message}")))?;
        line += newlines(start, stream.byte_offset());
        counted_to = stream.byte_offset();
    }
    if read.is_empty() {
        return Err(InfraError::invalid(field, "no spans in it"));
    }
    let (mut no_service, mut backwards) = (0, 0);
    let mut set = SpanSet::default();
    for (service, span) in read {
        match service.filter(|s| !s.is_empty()) {
            None => no_service += 1,
            Some(_) if span.end_ns < span.start_ns => backwards += 1,
            Some(service) => set.spans.push(Span { service, ..span }),
        }
    }
    for (count, why) in [
        (
            no_service,
            "have no service name (service.name, or a process's serviceName)",
        ),
        (backwards, "end before they start"),
    ] {
        if count > 0 {
            set.findings.push(Finding {
                object: field.to_string(),
                support: Support::Approximated,
                message: format!("{count} spans {why}: skipped; their children count as roots"),
            });
        }
    }
    Ok(set)
}

/// Spans as read, each with its service name if it has one.
type ReadSpans = Vec<(Option<String>, Span)>;

/// One JSON document's spans.
fn read_document(document: Value, read: &mut ReadSpans) -> Result<(), String> {
    if document.get("resourceSpans").is_some() {
        let otlp = serde_path_to_error::deserialize(document)
            .map_err(|e| format!("OTLP JSON: {}: {}", e.path(), e.inner()))?;
        read_otlp(otlp, read);
    } else if document.get("data").is_some() {
        let jaeger = serde_path_to_error::deserialize(document)
            .map_err(|e| format!("Jaeger JSON: {}: {}", e.path(), e.inner()))?;
        read_jaeger(jaeger, read);
    } else {
        let what = match &document {
            Value::Object(map) => {
                let keys: Vec<&str> = map.keys().take(5).map(String::as_str).collect();
                format!("an object with keys {}", keys.join(", "))
            }
            Value::Array(_) => "an array".to_string(),
            Value::String(_) => "a string".to_string(),
            other => format!("`{other}`"),
        };
        return Err(format!(
            "neither OTLP JSON (resourceSpans) nor Jaeger JSON (data): {what}"
        ));
    }
    Ok(())
}

fn read_otlp(otlp: OtlpDocument, read: &mut ReadSpans) {
    for resource in otlp.resource_spans {
        let service = resource.resource.and_then(|r| {
            let attribute = r.attributes.into_iter().find(|a| a.key == "service.name");
            attribute.and_then(|a| a.value).and_then(|v| v.string_value)
        });
        let scopes = resource.scope_spans.into_iter();
        for s in scopes
            .chain(resource.instrumentation_library_spans)
            .flat_map(|s| s.spans)
        {
            let error = s.status.and_then(|s| s.code).is_some_and(|c| match c {
                ProtoEnum::Number(n) => n == 2,
                ProtoEnum::Name(n) => n == "STATUS_CODE_ERROR",
            });
            let span = Span {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: s.parent_span_id.filter(|p| !p.is_empty()),
                service: String::new(),
                name: s.name,
                kind: match s.kind {
                    Some(ProtoEnum::Number(n)) => SpanKind::from_number(n),
                    Some(ProtoEnum::Name(n)) => SpanKind::from_name(&n),
                    None => SpanKind::Unspecified,
                },
                start_ns: s.start_time_unix_nano.0,
                end_ns: s.end_time_unix_nano.0,
                error,
            };
            read.push((service.clone(), span));
        }
    }
}

fn read_jaeger(jaeger: JaegerDocument, read: &mut ReadSpans) {
    for trace in jaeger.data {
        for s in trace.spans {
            let process = s.process.or_else(|| {
                let id = s.process_id.as_deref()?;
                trace.processes.get(id).cloned()
            });
            let tag = |key: &str| s.tags.iter().find(|t| t.key == key).map(|t| &t.value);
            let error = matches!(tag("error"), Some(Value::Bool(true)))
                || tag("error").and_then(Value::as_str) == Some("true")
                || tag("otel.status_code").and_then(Value::as_str) == Some("ERROR");
            // A span's parent is its first CHILD_OF reference (else its
            // first reference, as Jaeger's UI reads them).
            let parent = s.references.iter().find(|r| r.ref_type == "CHILD_OF");
            let parent = parent.or(s.references.first()).map(|r| r.span_id.clone());
            let start_ns = s.start_time.0.saturating_mul(1000);
            let span = Span {
                trace_id: s.trace_id,
                span_id: s.span_id,
                parent_span_id: parent.or(s.parent_span_id).filter(|p| !p.is_empty()),
                service: String::new(),
                name: s.operation_name,
                kind: tag("span.kind")
                    .and_then(Value::as_str)
                    .map_or(SpanKind::Unspecified, SpanKind::from_name),
                start_ns,
                end_ns: start_ns.saturating_add(s.duration.0.saturating_mul(1000)),
                error,
            };
            read.push((process.and_then(|p| p.service_name), span));
        }
    }
}

/// A list that may also be written `null`.
fn list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpDocument {
    #[serde(default, deserialize_with = "list")]
    resource_spans: Vec<OtlpResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpResourceSpans {
    resource: Option<OtlpResource>,
    #[serde(default, deserialize_with = "list")]
    scope_spans: Vec<OtlpScopeSpans>,
    #[serde(default, deserialize_with = "list")]
    instrumentation_library_spans: Vec<OtlpScopeSpans>,
}

#[derive(Deserialize)]
struct OtlpResource {
    #[serde(default, deserialize_with = "list")]
    attributes: Vec<OtlpAttribute>,
}

#[derive(Deserialize)]
struct OtlpAttribute {
    key: String,
    value: Option<OtlpValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpValue {
    string_value: Option<String>,
}

#[derive(Deserialize)]
struct OtlpScopeSpans {
    #[serde(default, deserialize_with = "list")]
    spans: Vec<OtlpSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: Option<String>,
    #[serde(default)]
    name: String,
    kind: Option<ProtoEnum>,
    // Protobuf's JSON mapping leaves out zeros, so absent is 0.
    #[serde(default)]
    start_time_unix_nano: Count,
    #[serde(default)]
    end_time_unix_nano: Count,
    status: Option<OtlpStatus>,
}

#[derive(Deserialize)]
struct OtlpStatus {
    code: Option<ProtoEnum>,
}

/// A protobuf enum in JSON: by number or by name.
#[derive(Deserialize)]
#[serde(untagged)]
enum ProtoEnum {
    Number(i64),
    Name(String),
}

/// A count (of nanoseconds, microseconds) as a number or, as OTLP/JSON
/// writes 64-bit integers, a decimal string.
#[derive(Default, Clone, Copy)]
struct Count(u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Count, D::Error> {
        struct CountVisitor;
        impl Visitor<'_> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number, 0 or more, or one as a decimal string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Count, E> {
                if v.is_finite() && (0.0..1.8e19).contains(&v) {
                    Ok(Count(v.round() as u64))
                } else {
                    Err(E::invalid_value(Unexpected::Float(v), &self))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                v.parse()
                    .map(Count)
                    .map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(CountVisitor)
    }
}

#[derive(Deserialize)]
struct JaegerDocument {
    #[serde(default, deserialize_with = "list")]
    data: Vec<JaegerTrace>,
}

#[derive(Deserialize)]
struct JaegerTrace {
    #[serde(default, deserialize_with = "list")]
    spans: Vec<JaegerSpan>,
    #[serde(default)]
    processes: BTreeMap<String, JaegerProcess>,
}

#[derive(Deserialize, Clone)]
struct JaegerProcess {
    #[serde(rename = "serviceName")]
    service_name: Option<String>,
}

#[derive(Deserialize)]
struct JaegerSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    #[serde(rename = "operationName", default)]
    operation_name: String,
    #[serde(default, deserialize_with = "list")]
    references: Vec<JaegerReference>,
    /// Older exports name the parent here instead of in `references`.
    #[serde(rename = "parentSpanID")]
    parent_span_id: Option<String>,
    #[serde(rename = "startTime")]
    start_time: Count,
    duration: Count,
    #[serde(rename = "processID")]
    process_id: Option<String>,
    /// Some exports embed the process in each span.
    process: Option<JaegerProcess>,
    #[serde(default, deserialize_with = "list")]
    tags: Vec<JaegerTag>,
}

#[derive(Deserialize)]
struct JaegerReference {
    #[serde(rename = "refType", default)]
    ref_type: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Deserialize)]
struct JaegerTag {
    key: String,
    #[serde(default)]
    value: Value,
}

impl SpanKind {
    fn from_number(number: i64) -> SpanKind {
        match number {
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }

    /// `SPAN_KIND_SERVER` (OTLP) or `server` (Jaeger's tag).
    fn from_name(name: &str) -> SpanKind {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("span_kind_").unwrap_or(&name) {
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => SpanKind::Unspecified,
        }
    }
}
