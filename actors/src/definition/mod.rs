//! The twin definition (the spec's Twin Schema): parsed from YAML or JSON and
//! validated while parsing, so every error names the field and, for YAML and JSON
//! text, the line it came from.

use hanzo_twin_engines::{EngineConfig, EngineKind};
use serde::{Deserialize, Deserializer, Serialize};

/// A twin as its owner declares it: a physical system (a scene on a physics
/// engine) or, with `type: infrastructure`, a service topology simulated as
/// events (the spec's Infrastructure Twin Schema).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DefinitionFields")]
pub struct TwinDefinition {
    /// Human-readable name, unique within the organization.
    pub name: Name,
    /// Owning organization. Left out, the node fills in the caller's
    /// organization at creation (or [`DEFAULT_ORGANIZATION`] for the node itself),
    /// so a stored twin always has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<Name>,
    /// `physical` (the default) or `infrastructure`.
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "TwinType::is_physical"
    )]
    pub kind: TwinType,
    /// The scene of a physical twin; an infrastructure twin has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<SceneSpec>,
    /// For an infrastructure twin, `infrastructure` (the default there):
    /// `config.step_hz` steps a simulated second (1 by default).
    pub engine: EngineSpec,
    #[serde(default)]
    pub sync: SyncSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_randomization: Option<DomainRandomization>,
    /// An infrastructure twin's topology, traffic, failure injection,
    /// assertions and simulation settings, at the top level as the spec
    /// writes them (docs/infra.md).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = InfrastructureFields)]
    pub infrastructure: Option<InfrastructureSpec>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub tags: Vec<Name>,
}

/// The OpenAPI description of [`InfrastructureSpec`] flattened into a
/// definition: its blocks are there when `type: infrastructure`, absent
/// otherwise (an optional flattened struct has no other faithful schema).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct InfrastructureFields {
    /// Infrastructure twins: where the services come from (`source:
    /// manifests` with `paths` under the node's scene folder and/or inline
    /// `manifests`), and what each does with a request (`services`).
    #[schema(value_type = Option<Object>)]
    topology: Option<serde_json::Value>,
    /// Infrastructure twins: the outside requests, `constant` or `steps`.
    #[schema(value_type = Option<Object>)]
    traffic: Option<serde_json::Value>,
    /// Infrastructure twins: chaos `scenarios` on schedule.
    #[schema(value_type = Option<Object>)]
    failure_injection: Option<serde_json::Value>,
    /// Infrastructure twins: sentences such as "api responds within 5s
    /// during pod-kill".
    assertions: Option<Vec<String>>,
    /// Infrastructure twins: `duration` and `seed`.
    #[schema(value_type = Option<Object>)]
    simulation: Option<serde_json::Value>,
}

/// What a twin twins.
#[derive(
    utoipa::ToSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TwinType {
    /// A physical system: a scene on a physics engine.
    #[default]
    Physical,
    /// Services, replicas and requests, simulated as discrete events.
    Infrastructure,
}

impl TwinType {
    pub fn is_physical(&self) -> bool {
        *self == TwinType::Physical
    }
}

/// The spec's infrastructure twin blocks (docs/infra.md has the grammar).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfrastructureSpec {
    /// Where the services come from (`manifests`: `paths` under the node's
    /// scene folder and/or inline `manifests`; `kubernetes`: a live
    /// cluster), the nodes they run on (`nodes`, `include_nodes`), and what
    /// each does with a request (`services`, or `traces` that show it).
    #[schema(value_type = Object)]
    pub topology: hanzo_twin_engines::infra::spec::TopologySpec,
    /// The outside requests: `constant` or `steps` per entry service.
    #[schema(value_type = Object)]
    pub traffic: hanzo_twin_engines::infra::spec::TrafficSpec,
    #[serde(default, skip_serializing_if = "FailureInjection::is_empty")]
    #[schema(value_type = Object)]
    pub failure_injection: FailureInjection,
    /// Sentences such as "api responds within 5s during pod-kill".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assertions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub simulation: Option<hanzo_twin_engines::infra::spec::SimulationSpec>,
}

use hanzo_twin_engines::infra::spec::FailureInjection;

impl InfrastructureSpec {
    /// The definition as the infrastructure simulator reads it.
    pub fn to_infra_spec(&self, name: &str) -> hanzo_twin_engines::infra::spec::InfraTwinSpec {
        hanzo_twin_engines::infra::spec::InfraTwinSpec {
            name: name.to_string(),
            kind: hanzo_twin_engines::infra::spec::TwinType::Infrastructure,
            topology: self.topology.clone(),
            traffic: self.traffic.clone(),
            failure_injection: self.failure_injection.clone(),
            assertions: self.assertions.clone(),
            simulation: self.simulation.clone().unwrap_or_default(),
        }
    }
}

/// A definition as written, before the rules between its fields are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefinitionFields {
    name: Name,
    #[serde(default)]
    organization: Option<Name>,
    #[serde(rename = "type", default)]
    kind: TwinType,
    #[serde(default)]
    scene: Option<SceneSpec>,
    #[serde(default)]
    engine: Option<EngineSpec>,
    #[serde(default)]
    sync: SyncSpec,
    #[serde(default)]
    domain_randomization: Option<DomainRandomization>,
    #[serde(default)]
    topology: Option<hanzo_twin_engines::infra::spec::TopologySpec>,
    #[serde(default)]
    traffic: Option<hanzo_twin_engines::infra::spec::TrafficSpec>,
    #[serde(default)]
    failure_injection: Option<FailureInjection>,
    #[serde(default)]
    assertions: Option<Vec<String>>,
    #[serde(default)]
    simulation: Option<hanzo_twin_engines::infra::spec::SimulationSpec>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    tags: Vec<Name>,
}

/// A rule between fields broken: `field` names the one to change.
fn field_error(field: &str, message: &str) -> String {
    format!("{FIELD_MARK}{field}`: {message}")
}
const FIELD_MARK: &str = "invalid field `";

impl TryFrom<DefinitionFields> for TwinDefinition {
    type Error = String;

    fn try_from(f: DefinitionFields) -> Result<TwinDefinition, String> {
        let infrastructure = match f.kind {
            TwinType::Physical => {
                for (field, given) in [
                    ("topology", f.topology.is_some()),
                    ("traffic", f.traffic.is_some()),
                    ("failure_injection", f.failure_injection.is_some()),
                    ("assertions", f.assertions.is_some()),
                    ("simulation", f.simulation.is_some()),
                ] {
                    if given {
                        return Err(field_error(
                            field,
                            "only an infrastructure twin has this; add `type: infrastructure`",
                        ));
                    }
                }
                if f.scene.is_none() {
                    return Err("missing field `scene`".into());
                }
                match &f.engine {
                    None => return Err("missing field `engine`".into()),
                    Some(e) if e.kind == EngineKind::Infrastructure => {
                        return Err(field_error(
                            "engine.type",
                            "the infrastructure engine runs infrastructure twins: add `type: infrastructure` with a topology and traffic",
                        ));
                    }
                    Some(_) => {}
                }
                None
            }
            TwinType::Infrastructure => {
                for (field, given, why) in [
                    (
                        "scene",
                        f.scene.is_some(),
                        "an infrastructure twin has no scene: its topology says what it simulates",
                    ),
                    (
                        "sync",
                        !f.sync.sources.is_empty(),
                        "an infrastructure twin follows no physical sources",
                    ),
                    (
                        "domain_randomization",
                        f.domain_randomization.is_some(),
                        "domain randomization varies physics",
                    ),
                ] {
                    if given {
                        return Err(field_error(field, why));
                    }
                }
                if let Some(e) = &f.engine
                    && e.kind != EngineKind::Infrastructure
                {
                    return Err(field_error(
                        "engine.type",
                        &format!(
                            "an infrastructure twin runs on the `infrastructure` engine, not {}",
                            e.kind
                        ),
                    ));
                }
                let spec = InfrastructureSpec {
                    topology: f.topology.ok_or("missing field `topology`")?,
                    traffic: f.traffic.ok_or("missing field `traffic`")?,
                    failure_injection: f.failure_injection.unwrap_or_default(),
                    assertions: f.assertions.unwrap_or_default(),
                    simulation: f.simulation,
                };
                // What can be checked without the manifests: the sentences,
                // the scenarios' settings, the traffic's numbers.
                let infra = spec.to_infra_spec(f.name.as_str());
                let check = |r: Result<(), hanzo_twin_engines::infra::InfraError>| {
                    r.map_err(
                        |hanzo_twin_engines::infra::InfraError::Invalid { field, message }| {
                            field_error(&field, &message)
                        },
                    )
                };
                check(infra.assertions().map(drop))?;
                check(infra.faults(|_| None).map(drop))?;
                if infra.traffic.source
                    != hanzo_twin_engines::infra::spec::TrafficSource::Timeseries
                {
                    check(infra.traffic().map(drop))?;
                }
                Some(spec)
            }
        };
        let engine = f.engine.unwrap_or(EngineSpec {
            kind: EngineKind::Infrastructure,
            config: EngineConfigSpec {
                step_hz: StepHz(1.0),
                ..EngineConfigSpec::default()
            },
        });
        Ok(TwinDefinition {
            name: f.name,
            organization: f.organization,
            kind: f.kind,
            scene: f.scene,
            engine,
            sync: f.sync,
            domain_randomization: f.domain_randomization,
            infrastructure,
            metadata: f.metadata,
            tags: f.tags,
        })
    }
}

/// The organization of twins created without one by the node itself (boot
/// twins, embedded agents, the development token).
pub const DEFAULT_ORGANIZATION: &str = "default";

impl TwinDefinition {
    /// The owning organization, [`DEFAULT_ORGANIZATION`] when none is declared.
    pub fn organization(&self) -> &str {
        self.organization
            .as_ref()
            .map_or(DEFAULT_ORGANIZATION, Name::as_str)
    }
}

/// A name, organization or tag: 1–63 characters of letters, digits, `.`, `_`, `-`,
/// starting with a letter or digit. Kept strict so names are safe in paths, URLs
/// and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// [`Name::new`]'s rule, for the API's description.
const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(NAME_PATTERN))
            .min_length(Some(1))
            .max_length(Some(63))
            .description(Some(
                "1-63 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Name {}

/// `s` as an error message quotes it: whole when short, else its start and
/// its length, so a huge input never comes back whole.
pub fn shortened(s: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 64;
    match s.char_indices().nth(SHOWN) {
        None => s.into(),
        Some((end, _)) => format!("{}… ({} characters)", &s[..end], s.chars().count()).into(),
    }
}

impl Name {
    pub fn new(s: &str) -> Result<Name, String> {
        let ok_len = (1..=63).contains(&s.len());
        let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let ok_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok_len && ok_first && ok_chars {
            Ok(Name(s.to_string()))
        } else {
            Err(format!(
                "`{}` is not a valid name: use 1-63 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
                shortened(s)
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SceneSpec {
    /// The root USD file: a path relative to the node's scene folder, an absolute
    /// path, or a `file://` URI.
    pub uri: SceneUri,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Component USD files attached at prim paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub composition: Vec<CompositionRef>,
}

/// A scene location this node can open. Object-storage URIs (`s3://`) are refused
/// with a clear message until scenes live in object storage.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SceneUri(String);

impl SceneUri {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scene library name and pinned version of a `scene://<name>[@<version>]` URI.
    pub fn library_ref(&self) -> Option<(&str, Option<u32>)> {
        let rest = self.0.strip_prefix(SCENE_SCHEME)?;
        match rest.split_once('@') {
            Some((name, v)) => Some((name, v.parse().ok())),
            None => Some((rest, None)),
        }
    }
}

/// URIs of scenes in the node's scene library: `scene://<name>`, or
/// `scene://<name>@<version>` to pin a version (a twin's root scene may also
/// pin it in `scene.version`; the latest is used otherwise).
pub const SCENE_SCHEME: &str = "scene://";

impl<'de> Deserialize<'de> for SceneUri {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.trim().is_empty() {
            return Err(serde::de::Error::custom("scene uri is empty"));
        }
        if let Some(rest) = s.strip_prefix(SCENE_SCHEME) {
            let (name, version) = match rest.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (rest, None),
            };
            Name::new(name).map_err(serde::de::Error::custom)?;
            if let Some(v) = version
                && v.parse::<u32>().map_or(true, |v| v == 0)
            {
                return Err(serde::de::Error::custom(format!(
                    "`{s}`: the version after @ must be a whole number from 1"
                )));
            }
            return Ok(SceneUri(s));
        }
        if let Some((scheme, _)) = s.split_once("://")
            && scheme != "file"
        {
            return Err(serde::de::Error::custom(format!(
                "scene uri scheme `{scheme}://` is not readable by this node; give scene://<name> for a scene in the node's library, a path under the node's scene folder, an absolute path or a file:// URI"
            )));
        }
        let lower = s.to_ascii_lowercase();
        let usd = lower.ends_with(".usda") || lower.ends_with(".usdc") || lower.ends_with(".usd");
        if !(usd || hanzo_twin_engines::scene::is_mjcf(&lower)) {
            return Err(serde::de::Error::custom(format!(
                "scene uri `{s}` is neither a USD file (.usda, .usdc or .usd) nor an MJCF model for mujoco (.xml, .mjcf)"
            )));
        }
        Ok(SceneUri(s))
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositionRef {
    #[serde(rename = "ref")]
    pub reference: SceneUri,
    /// The prim path the component is attached at, e.g. `/World/Robot_01`.
    pub path: PrimPath,
}

/// An absolute USD prim path.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PrimPath(String);

impl PrimPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The names from the root down: `/World/Robot_01` gives `World`, `Robot_01`.
    pub fn names(&self) -> Vec<&str> {
        self.0.split('/').filter(|p| !p.is_empty()).collect()
    }
}

impl<'de> Deserialize<'de> for PrimPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let valid = s.starts_with('/')
            && s[1..].split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            });
        if valid {
            Ok(PrimPath(s))
        } else {
            Err(serde::de::Error::custom(format!(
                "`{s}` is not an absolute prim path like /World/Robot_01"
            )))
        }
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSpec {
    #[serde(rename = "type")]
    pub kind: EngineKind,
    #[serde(default)]
    pub config: EngineConfigSpec,
}

/// `engine.config` of a definition, validated field by field.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfigSpec {
    #[serde(default = "default_step_hz")]
    #[schema(value_type = f64, minimum = 0.01, maximum = 100000, default = 240)]
    pub step_hz: StepHz,
    #[serde(default = "default_substeps")]
    pub substeps: Substeps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gravity: Option<Gravity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver_iterations: Option<SolverIterations>,
    /// GPU selection for GPU engines: `auto` or a device index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_id: Option<GpuId>,
    /// Engine-specific settings, passed to the engine as they are.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Default for EngineConfigSpec {
    fn default() -> Self {
        EngineConfigSpec {
            step_hz: default_step_hz(),
            substeps: default_substeps(),
            gravity: None,
            solver_iterations: None,
            gpu_id: None,
            extensions: Default::default(),
        }
    }
}

impl EngineConfigSpec {
    pub fn to_engine_config(&self) -> EngineConfig {
        EngineConfig {
            step_hz: self.step_hz.0,
            substeps: self.substeps.0,
            gravity: self.gravity.as_ref().map(|g| g.0),
            solver_iterations: self.solver_iterations.as_ref().map(|s| s.0),
            extensions: self.extensions.clone(),
        }
    }
}

fn default_step_hz() -> StepHz {
    StepHz(240.0)
}
fn default_substeps() -> Substeps {
    Substeps(1)
}

/// Physics steps per second: from 0.01 (one step per 100 s) to 100 kHz.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct StepHz(pub f64);

/// The slowest step rate a definition may ask for.
pub const MIN_STEP_HZ: f64 = 0.01;

impl<'de> Deserialize<'de> for StepHz {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        if !v.is_finite() || v <= 0.0 {
            return Err(serde::de::Error::custom(format!(
                "step_hz must be a finite number above 0, got {v:?}"
            )));
        }
        // Engines step in f32 (rapier3d) or f64 time: a step longer than
        // 100 s is no simulation anyone runs, and far slower rates overflow.
        if v < MIN_STEP_HZ {
            return Err(serde::de::Error::custom(format!(
                "step_hz must be at least {MIN_STEP_HZ} (one step per 100 s), got {v:?}"
            )));
        }
        if v > 100_000.0 {
            return Err(serde::de::Error::custom(format!(
                "step_hz must be at most 100000, got {v:?}"
            )));
        }
        Ok(StepHz(v))
    }
}

/// Substeps per step: 1 to 1000.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Substeps(pub u32);

impl<'de> Deserialize<'de> for Substeps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=1000).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "substeps must be between 1 and 1000, got {v}"
            )));
        }
        Ok(Substeps(v as u32))
    }
}

/// Solver iterations: 1 to 10000.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct SolverIterations(pub u32);

impl<'de> Deserialize<'de> for SolverIterations {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        if !(1..=10_000).contains(&v) {
            return Err(serde::de::Error::custom(format!(
                "solver_iterations must be between 1 and 10000, got {v}"
            )));
        }
        Ok(SolverIterations(v as u32))
    }
}

/// Gravity: exactly three finite numbers, m/s².
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Gravity(pub [f64; 3]);

impl<'de> Deserialize<'de> for Gravity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Checked inside the sequence visitor, so YAML errors point at the
        // sequence itself rather than its parent mapping.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Gravity;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("gravity as three finite numbers, e.g. [0.0, 0.0, -9.81]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Gravity, A::Error> {
                let mut v = Vec::with_capacity(3);
                while let Some(x) = seq.next_element::<f64>()? {
                    if !x.is_finite() {
                        return Err(serde::de::Error::custom(format!(
                            "gravity must be three finite numbers, got {x} in it"
                        )));
                    }
                    v.push(x);
                    if v.len() > 3 {
                        break;
                    }
                }
                if v.len() != 3 {
                    return Err(serde::de::Error::custom(format!(
                        "gravity must be exactly three finite numbers, got {}{}",
                        v.len(),
                        if v.len() > 3 { " or more" } else { "" }
                    )));
                }
                Ok(Gravity([v[0], v[1], v[2]]))
            }
        }
        d.deserialize_seq(V)
    }
}

/// `auto` or a GPU index.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpuId {
    Index(u32),
    Auto(AutoToken),
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoToken {
    Auto,
}

mod sync;

pub use sync::{
    Bounds, BrokerAddress, DriftDetection, DriftResponse, ENCLAVE_FILES, KafkaPublishSpec,
    KafkaReplay, MqttConnection, MqttPublishSpec, MqttSourceSpec, OpcuaSecurity, OpcuaSourceSpec,
    PayloadFormat, PublishSpec, Recalibrate, ReplaySpec, Ros2Security, Ros2SourceSpec, Ros2Topic,
    SecurityMode, SecurityPolicy, SourceSpec, SyncMode, SyncSpec, Target, TlsFiles,
    check_kafka_broker_list, check_kafka_brokers, check_kafka_topic,
};

/// The spec's domain randomization block; RL environments sample it per episode.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainRandomization {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub parameters: RandomizationParameters,
}

/// The parameters and their ranges are the RL environments' own.
pub use hanzo_twin_gym::{GravityPerturbation, Randomization as RandomizationParameters, Range};

/// A definition that failed to parse or validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.describe())]
pub struct DefinitionError {
    /// Dotted path of the offending field, e.g. `engine.config.step_hz`; empty for
    /// errors of the document as a whole.
    pub field: String,
    /// 1-based line in the submitted text, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl DefinitionError {
    fn describe(&self) -> String {
        let mut out = String::new();
        if !self.field.is_empty() {
            out.push_str(&format!("field `{}`", self.field));
        }
        if let Some(line) = self.line {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(&format!("line {line}"));
            if let Some(col) = self.column {
                out.push_str(&format!(" column {col}"));
            }
        }
        if out.is_empty() {
            self.message.clone()
        } else {
            format!("{out}: {}", self.message)
        }
    }
}

fn json_error(field: String, inner: serde_json::Error) -> DefinitionError {
    DefinitionError::from_json(field, inner)
}

impl DefinitionError {
    /// A JSON parse or shape error at `field` (serde_path_to_error's rendering,
    /// where `.` is the root), with the line and column JSON gives. Any JSON
    /// request body, not only definitions, reports its problems this way.
    pub fn from_json(field: String, inner: serde_json::Error) -> DefinitionError {
        let field = if field == "." { String::new() } else { field };
        let (field, message) = locate(field, strip_location(&inner.to_string()));
        DefinitionError {
            field,
            line: (inner.line() > 0).then_some(inner.line()),
            column: (inner.column() > 0).then_some(inner.column()),
            message,
        }
    }
}

/// The text format of a submitted definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// serde's own messages end in " at line N column M" (YAML) or the same (JSON);
/// the location is reported separately, so strip it from the message.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// serde_path_to_error renders the root as "." and sequence indices as `[i]`.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." { String::new() } else { s }
}

/// For errors like "unknown field `x`" serde reports the parent's path; the field
/// itself is more useful to a person.
/// The field a message is about and the message itself: a rule between
/// fields names its own field ([`field_error`]).
fn locate(field: String, message: String) -> (String, String) {
    let field = refine_field(field, &message);
    let message = match message
        .strip_prefix(FIELD_MARK)
        .and_then(|r| r.split_once("`: "))
    {
        Some((_, rest)) => rest.to_string(),
        None => message,
    };
    (field, message)
}

fn refine_field(field: String, message: &str) -> String {
    if let Some(rest) = message.strip_prefix(FIELD_MARK)
        && let Some(end) = rest.find('`')
    {
        let name = &rest[..end];
        return if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        };
    }
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            let name = &rest[..end];
            return if field.is_empty() {
                name.to_string()
            } else if field == name || field.ends_with(&format!(".{name}")) {
                field
            } else {
                format!("{field}.{name}")
            };
        }
    }
    field
}

impl TwinDefinition {
    /// Parses and validates a definition.
    pub fn parse(text: &str, format: Format) -> Result<TwinDefinition, DefinitionError> {
        match format {
            Format::Yaml => {
                let de = serde_yaml_ng::Deserializer::from_str(text);
                serde_path_to_error::deserialize::<_, TwinDefinition>(de).map_err(|e| {
                    let field = field_path(e.path());
                    let inner = e.into_inner();
                    let location = inner.location();
                    // serde_yaml_ng prefixes its messages with the path; the
                    // field is reported on its own.
                    let text = inner.to_string();
                    let text = match text.split_once(": ") {
                        Some((path, rest)) if !path.contains(' ') && field.starts_with(path) => {
                            rest.to_string()
                        }
                        _ => text,
                    };
                    let (field, message) = locate(field, strip_location(&text));
                    DefinitionError {
                        field,
                        line: location.as_ref().map(|l| l.line()),
                        column: location.as_ref().map(|l| l.column()),
                        message,
                    }
                })
            }
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(text);
                let parsed = serde_path_to_error::deserialize::<_, TwinDefinition>(&mut de)
                    .map_err(|e| {
                        let field = field_path(e.path());
                        json_error(field, e.into_inner())
                    })?;
                de.end().map_err(|e| json_error(String::new(), e))?;
                Ok(parsed)
            }
        }
    }

    /// Validates a definition held as a JSON value (after a merge patch, say).
    pub fn from_value(value: serde_json::Value) -> Result<TwinDefinition, DefinitionError> {
        serde_path_to_error::deserialize::<_, TwinDefinition>(value).map_err(|e| {
            let field = field_path(e.path());
            let (field, message) = locate(field, e.into_inner().to_string());
            DefinitionError {
                field,
                line: None,
                column: None,
                message,
            }
        })
    }

    pub fn to_value(&self) -> serde_json::Value {
        // A definition is plain data with string keys: always representable.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: arm-cell
organization: acme
scene:
  uri: robot-arm/scene.usda
engine:
  type: rapier3d
  config:
    step_hz: 240
    substeps: 2
    gravity: [0.0, 0.0, -9.81]
tags: [robot, cell-1]
";

    #[test]
    fn parses_a_good_yaml_definition() {
        let d = TwinDefinition::parse(GOOD, Format::Yaml).expect("valid");
        assert_eq!(d.name.as_str(), "arm-cell");
        assert_eq!(d.engine.kind, EngineKind::Rapier3d);
        assert_eq!(d.engine.config.step_hz.0, 240.0);
        assert_eq!(d.engine.config.gravity, Some(Gravity([0.0, 0.0, -9.81])));
        assert_eq!(d.sync.mode, SyncMode::Standalone);
    }

    #[test]
    fn json_round_trip_is_identity() {
        let d = TwinDefinition::parse(GOOD, Format::Yaml).expect("valid");
        let again = TwinDefinition::from_value(d.to_value()).expect("round trip");
        assert_eq!(d, again);
    }

    fn yaml_err(text: &str) -> DefinitionError {
        TwinDefinition::parse(text, Format::Yaml).expect_err("must be refused")
    }

    #[test]
    fn unknown_engine_names_field_and_line() {
        let e = yaml_err(&GOOD.replace("type: rapier3d", "type: havok"));
        assert_eq!(e.field, "engine.type");
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("havok"), "{e}");
    }

    #[test]
    fn nonpositive_step_hz_names_field_and_line() {
        for bad in ["0", "-5", ".nan", ".inf", "1e-300", "0.001"] {
            let e = yaml_err(&GOOD.replace("step_hz: 240", &format!("step_hz: {bad}")));
            assert_eq!(e.field, "engine.config.step_hz", "{bad}: {e}");
            assert_eq!(e.line, Some(8), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_gravity_names_field_and_line() {
        for bad in ["[0, 0]", "[0, 0, .nan]", "[0, 0, -9.81, 1]", "down"] {
            let e = yaml_err(&GOOD.replace("[0.0, 0.0, -9.81]", bad));
            assert_eq!(e.field, "engine.config.gravity", "{bad}: {e}");
            assert_eq!(e.line, Some(10), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_names_itself_and_line() {
        let e = yaml_err(&GOOD.replace("    substeps: 2\n", "    substeps: 2\n    stepz: 3\n"));
        assert_eq!(e.field, "engine.config.stepz");
        assert_eq!(e.line, Some(10));
        let e = yaml_err(&format!("{GOOD}colour: red\n"));
        assert_eq!(e.field, "colour");
    }

    #[test]
    fn missing_field_is_named() {
        let e = yaml_err("name: x\nengine:\n  type: rapier3d\n");
        assert_eq!(e.field, "scene");
    }

    #[test]
    fn json_errors_carry_lines_too() {
        let text = "{\n  \"name\": \"a\",\n  \"scene\": {\"uri\": \"a.usda\"},\n  \"engine\": {\"type\": \"rapier3d\", \"config\": {\"step_hz\": -1}}\n}";
        let e = TwinDefinition::parse(text, Format::Json).expect_err("refused");
        assert_eq!(e.field, "engine.config.step_hz");
        assert_eq!(e.line, Some(4));
    }

    #[test]
    fn sync_modes_that_need_sources_are_refused_clearly() {
        let e = yaml_err(&format!("{GOOD}sync:\n  mode: realtime\n"));
        assert_eq!(e.field, "sync");
        assert!(e.message.contains("at least one entry in sources"), "{e}");
        let e = yaml_err(&format!("{GOOD}sync:\n  mode: batch\n"));
        assert_eq!(e.field, "sync");
        assert!(
            e.message.contains("`batch` needs at least one entry"),
            "{e}"
        );
        let e = yaml_err(&format!("{GOOD}sync:\n  mode: replay\n"));
        assert_eq!(e.field, "sync");
        assert!(e.message.contains("needs replay.recording"), "{e}");
        for (block, says) in [
            (
                "  mode: replay\n  replay: { recording: ../etc/passwd }\n",
                "file name",
            ),
            (
                "  mode: replay\n  replay: { recording: a.jsonl, speed: 0 }\n",
                "replay.speed",
            ),
            (
                "  mode: standalone\n  replay: { recording: a.jsonl }\n",
                "applies to mode `replay`",
            ),
            ("  mode: standalone\n  record: true\n", "record keeps"),
        ] {
            let e = yaml_err(&format!("{GOOD}sync:\n{block}"));
            assert!(e.message.contains(says), "{block}: {e}");
        }
        let d = TwinDefinition::parse(
            &format!(
                "{GOOD}sync:\n  mode: replay\n  replay: {{ recording: arm-1.jsonl, speed: 4 }}\n"
            ),
            Format::Yaml,
        )
        .expect("a replay");
        assert_eq!(d.sync.mode, SyncMode::Replay);
        assert_eq!(d.sync.replay.as_ref().map(|r| r.speed), Some(4.0));
        for (block, says) in [
            (
                "  mode: replay\n  replay: { recording: a.jsonl, kafka: { topic: t } }\n",
                "one of recording",
            ),
            (
                "  mode: replay\n  replay: { kafka: { topic: 'a/b' } }\n",
                "replay.kafka.topic",
            ),
            (
                "  mode: replay\n  replay: { kafka: { topic: t, brokers: 'kafka.example.com:9092' } }\n",
                "replay.kafka.brokers",
            ),
        ] {
            let e = yaml_err(&format!("{GOOD}sync:\n{block}"));
            assert!(e.message.contains(says), "{block}: {e}");
        }
    }

    #[test]
    fn bad_names_and_uris_are_refused() {
        assert_eq!(yaml_err(&GOOD.replace("arm-cell", "'a b'")).field, "name");
        assert_eq!(
            yaml_err(&GOOD.replace("robot-arm/scene.usda", "s3://b/x.usda")).field,
            "scene.uri"
        );
        assert_eq!(
            yaml_err(&GOOD.replace("robot-arm/scene.usda", "scene.obj")).field,
            "scene.uri"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for text in ["", "[", ":::", "- a\n- b", "name: [", "\u{0}"] {
            let _ = TwinDefinition::parse(text, Format::Yaml);
            let _ = TwinDefinition::parse(text, Format::Json);
        }
    }
}
