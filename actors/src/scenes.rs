//! Scene loading for a node: where a definition's scene URI points (the
//! node's scene folder, or its scene library), reading it into a scene model
//! (in a child process on the daemon), composing components, and checking that
//! a definition can run here. A [`SceneLoader`] is cheap to clone, so the host
//! hands scene reads to tasks of their own instead of waiting on them.

use crate::definition::{PrimPath, SceneUri, TwinDefinition};
use crate::error::TwinError;
use hanzo_twin_engines::{EngineError, EngineRegistry, SceneModel, SimState};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Scenes kept for states that came from other nodes.
const REMOTE_SCENES_KEPT: usize = 32;

/// A layer that sublayers `root` and references each component file at its
/// prim path (asset paths absolute, so the layer may live anywhere).
fn composed_layer(root: &Path, parts: &[(PrimPath, PathBuf)]) -> String {
    /// One prim of the layer: a component reference, or a parent of some.
    #[derive(Default)]
    struct Spec {
        reference: Option<PathBuf>,
        children: std::collections::BTreeMap<String, Spec>,
    }
    fn write(out: &mut String, name: &str, spec: &Spec, depth: usize) {
        let indent = "    ".repeat(depth);
        match &spec.reference {
            Some(file) => out.push_str(&format!(
                "{indent}def Xform \"{name}\" (\n{indent}    prepend references = @{}@\n{indent})\n",
                file.display()
            )),
            // Typeless `def`: the root's own opinions keep the prim's type.
            None => out.push_str(&format!("{indent}def \"{name}\"\n")),
        }
        out.push_str(&format!("{indent}{{\n"));
        for (child, child_spec) in &spec.children {
            write(out, child, child_spec, depth + 1);
        }
        out.push_str(&format!("{indent}}}\n"));
    }
    let mut tree = Spec::default();
    for (path, file) in parts {
        let mut node = &mut tree;
        for name in path.names() {
            node = node.children.entry(name.to_string()).or_default();
        }
        node.reference = Some(file.clone());
    }
    let mut out = format!(
        "#usda 1.0\n(\n    subLayers = [@{}@]\n)\n\n",
        root.display()
    );
    for (name, spec) in &tree.children {
        write(&mut out, name, spec, 0);
    }
    out
}

/// Fetches version `version` (latest when `None`) of library scene `name` of
/// organization `org` to a local folder, returning its root USD file.
pub type SceneFetcher = Arc<
    dyn Fn(
            String,
            String,
            Option<u32>,
        ) -> crate::store::BoxFuture<'static, Result<PathBuf, TwinError>>
        + Send
        + Sync,
>;

/// Reads a USD file into a scene model. The node daemon reads scenes in a child
/// process, so a file that makes the USD library abort (it can, on corrupt
/// binary files, by asking for absurd allocations) cannot take the node down;
/// embedded nodes trust their own files and read in-process.
pub type SceneReader = Arc<
    dyn Fn(PathBuf) -> crate::store::BoxFuture<'static, Result<SceneModel, EngineError>>
        + Send
        + Sync,
>;

/// Reads scenes on a blocking thread of this process.
pub fn in_process_scene_reader() -> SceneReader {
    Arc::new(|path: PathBuf| {
        Box::pin(async move {
            let file = path.display().to_string();
            tokio::task::spawn_blocking(move || {
                hanzo_twin_engines::scene::read_scene_file(&path).map_err(EngineError::from)
            })
            .await
            .unwrap_or_else(|e| {
                Err(EngineError::SceneRead {
                    file,
                    message: format!("the scene reader stopped: {e}"),
                })
            })
        })
    })
}

/// Reads the scenes twins run in; cheap to clone.
#[derive(Clone)]
pub struct SceneLoader {
    /// Relative scene URIs resolve here; no scene outside it is opened.
    scenes_root: PathBuf,
    engines: EngineRegistry,
    reader: SceneReader,
    /// Makes library scenes (`scene://<name>`) readable as local files;
    /// without it such scenes are refused.
    fetcher: Option<SceneFetcher>,
    /// Scenes loaded for states that came from other nodes, by fingerprint,
    /// so the next fork from there skips reading the scene again.
    remote: Arc<Mutex<HashMap<u64, Arc<SceneModel>>>>,
}

/// The cache is a plain map: a panic elsewhere leaves it usable.
fn lock(m: &Mutex<HashMap<u64, Arc<SceneModel>>>) -> MutexGuard<'_, HashMap<u64, Arc<SceneModel>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SceneLoader {
    pub fn new(
        scenes_root: PathBuf,
        engines: EngineRegistry,
        reader: SceneReader,
        fetcher: Option<SceneFetcher>,
    ) -> SceneLoader {
        SceneLoader {
            scenes_root,
            engines,
            reader,
            fetcher,
            remote: Arc::default(),
        }
    }

    /// Resolves a scene URI inside the scene folder. Paths that leave it are
    /// refused, so a definition cannot make the node read arbitrary files.
    fn scene_path(&self, uri: &str) -> Result<PathBuf, TwinError> {
        self.node_path(uri, "scene.uri", "scene")
    }

    /// A file or folder under the scene folder; `field` names what gave it.
    fn node_path(&self, uri: &str, field: &str, what: &str) -> Result<PathBuf, TwinError> {
        let raw = uri.strip_prefix("file://").unwrap_or(uri);
        let path = Path::new(raw);
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(TwinError::invalid(
                    field,
                    format!("`{uri}` may not contain `..`"),
                ));
            }
            self.scenes_root.join(path)
        };
        let root = self.scenes_root.canonicalize().map_err(|e| {
            TwinError::Storage(format!(
                "scene folder {} is not readable: {e}",
                self.scenes_root.display()
            ))
        })?;
        let resolved = joined
            .canonicalize()
            .map_err(|e| TwinError::invalid(field, format!("cannot open {what} `{uri}`: {e}")))?;
        if !resolved.starts_with(&root) {
            return Err(TwinError::invalid(
                field,
                format!(
                    "`{uri}` is outside this node's scene folder {}",
                    root.display()
                ),
            ));
        }
        Ok(resolved)
    }

    /// A local file for a scene URI: a path under the scene folder, or a
    /// library scene fetched for `org`. Errors name `field`.
    pub async fn resolve_scene(
        &self,
        org: &str,
        uri: &SceneUri,
        version: Option<u32>,
        field: &str,
    ) -> Result<PathBuf, TwinError> {
        let renamed = |e: TwinError| match e {
            TwinError::Invalid(mut d) => {
                d.field = field.to_string();
                TwinError::Invalid(d)
            }
            other => other,
        };
        match uri.library_ref() {
            Some((name, pinned)) => {
                let fetch = self
                    .fetcher
                    .as_ref()
                    .ok_or_else(|| TwinError::invalid(field, "this node keeps no scene library"))?;
                fetch(org.to_string(), name.to_string(), pinned.or(version))
                    .await
                    .map_err(renamed)
            }
            None => self.scene_path(uri.as_str()).map_err(renamed),
        }
    }

    pub async fn load_scene(
        &self,
        definition: &TwinDefinition,
    ) -> Result<Arc<SceneModel>, TwinError> {
        if let Some(infra) = &definition.infrastructure {
            return self.infrastructure_scene(definition.name.as_str(), infra);
        }
        let scene = definition
            .scene
            .as_ref()
            .ok_or_else(|| TwinError::invalid("scene", "a physical twin needs a scene"))?;
        self.load_scene_spec(definition.organization(), scene).await
    }

    /// An infrastructure twin's "scene": its definition, the Kubernetes
    /// objects its topology names (files under the scene folder, or written
    /// inline) and its traffic.
    fn infrastructure_scene(
        &self,
        name: &str,
        infra: &crate::definition::InfrastructureSpec,
    ) -> Result<Arc<SceneModel>, TwinError> {
        use hanzo_twin_engines::infra::spec::{TopologySource, TrafficSource, TwinSource};
        let mut spec = infra.to_infra_spec(name);
        if spec.topology.source == TopologySource::Kubernetes && spec.topology.snapshot.is_none() {
            // Taken when the twin is created through a node's handle.
            return Err(TwinError::invalid(
                "topology.snapshot",
                "a live cluster's topology runs from the snapshot a node takes when the twin is \
                 created or its topology is written; this definition has none (create the twin \
                 through the API or the node's handle)",
            ));
        }
        if spec.traffic.source == TrafficSource::Timeseries {
            return Err(TwinError::invalid(
                "traffic.source",
                "a running twin takes constant or steps traffic; recorded traffic is replayed over \
                 a time range with `hanzo-twin infra simulate --database-url … --from … --to …`",
            ));
        }
        for (i, path) in spec.topology.paths.iter_mut().enumerate() {
            let resolved = self.node_path(path, &format!("topology.paths[{i}]"), "manifests")?;
            *path = resolved.display().to_string();
        }
        let infra_error = |e: hanzo_twin_engines::infra::InfraError| {
            TwinError::from(hanzo_twin_engines::infrastructure::infra_error(e))
        };
        if let Some(traces) = spec.topology.traces.as_mut() {
            for (i, path) in traces.paths.iter_mut().enumerate() {
                let field = format!("topology.traces.paths[{i}]");
                *path = self
                    .node_path(path, &field, "traces")?
                    .display()
                    .to_string();
            }
        }
        let manifests = spec.manifests(&self.scenes_root).map_err(infra_error)?;
        // Traces become the services' behaviour here, once: the twin's
        // source carries the call graph they showed, not the spans.
        let traces = spec.trace_files(&self.scenes_root).map_err(infra_error)?;
        let mut objects =
            hanzo_twin_engines::infra::kubernetes::Objects::from_manifests(&manifests)
                .map_err(infra_error)?;
        spec.fold_traces(&mut objects, &traces)
            .map_err(infra_error)?;
        let traffic = spec.traffic().map_err(infra_error)?;
        let source = TwinSource {
            spec,
            manifests,
            traffic,
        };
        // The model is built once here, so a topology that cannot run is
        // refused when the twin is created, naming its field.
        source.prepare().map_err(infra_error)?;
        Ok(Arc::new(hanzo_twin_engines::infrastructure::scene_of(
            &source,
        )))
    }

    pub async fn load_scene_spec(
        &self,
        org: &str,
        spec: &crate::definition::SceneSpec,
    ) -> Result<Arc<SceneModel>, TwinError> {
        let root = self
            .resolve_scene(org, &spec.uri, spec.version, "scene.uri")
            .await?;
        if spec.composition.is_empty() {
            return Ok(Arc::new((self.reader)(root).await?));
        }
        if hanzo_twin_engines::scene::is_mjcf(spec.uri.as_str()) {
            return Err(TwinError::invalid(
                "scene.composition",
                "an MJCF model cannot be composed with USD; give a USD root scene",
            ));
        }
        let mut parts = Vec::new();
        for (i, c) in spec.composition.iter().enumerate() {
            let field = format!("scene.composition[{i}]");
            for (j, other) in spec.composition.iter().enumerate().take(i) {
                let (a, b) = (c.path.names(), other.path.names());
                if a.starts_with(&b) || b.starts_with(&a) {
                    return Err(TwinError::invalid(
                        format!("{field}.path"),
                        format!(
                            "{} overlaps composition[{j}] at {}; attach components at separate prims",
                            c.path.as_str(),
                            other.path.as_str()
                        ),
                    ));
                }
            }
            if hanzo_twin_engines::scene::is_mjcf(c.reference.as_str()) {
                return Err(TwinError::invalid(
                    format!("{field}.ref"),
                    "composition attaches USD files; an MJCF model can only be a whole scene",
                ));
            }
            let file = self
                .resolve_scene(org, &c.reference, None, &format!("{field}.ref"))
                .await?;
            parts.push((c.path.clone(), file));
        }
        // The components attach as USD references in a layer over the root, so
        // USD's own composition (and its cycle detection) does the work.
        let wrapper = std::env::temp_dir().join(format!(
            "hanzo-twin-composed-{}.usda",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&wrapper, composed_layer(&root, &parts))
            .map_err(|e| TwinError::Storage(format!("cannot write {}: {e}", wrapper.display())))?;
        let scene = (self.reader)(wrapper.clone()).await;
        let _ = std::fs::remove_file(&wrapper);
        // Errors name the composition, not the node's internal layer.
        let scene = scene.map_err(|e| match TwinError::from(e) {
            TwinError::Engine { kind, message, .. } => TwinError::Engine {
                kind,
                field: Some("scene.composition".into()),
                message: message.replace(
                    &wrapper.display().to_string(),
                    "the composed scene (scene.uri with scene.composition)",
                ),
            },
            other => other,
        })?;
        Ok(Arc::new(scene))
    }

    /// Checks what a definition needs from this node: its engine and a readable scene.
    pub async fn check_runnable(
        &self,
        definition: &TwinDefinition,
    ) -> Result<Arc<SceneModel>, TwinError> {
        let engine = self.engines.get(definition.engine.kind)?;
        engine.check_config(&definition.engine.config.to_engine_config())?;
        let scene = self.load_scene(definition).await?;
        if let Some(native) = &scene.native
            && hanzo_twin_engines::EngineKind::reading(native.format) != definition.engine.kind
        {
            return Err(TwinError::invalid(
                "engine.type",
                format!(
                    "the scene is an {:?} model, which only the {} engine loads; convert it to USD to run it on {}",
                    native.format,
                    hanzo_twin_engines::EngineKind::reading(native.format),
                    definition.engine.kind
                )
                .replace("Mjcf", "MJCF"),
            ));
        }
        Ok(scene)
    }

    /// The scene a state from another node runs in: one loaded for an earlier
    /// state of the same scene, else the definition's, read now.
    pub async fn scene_for_state(
        &self,
        definition: &TwinDefinition,
        state: &SimState,
    ) -> Result<Arc<SceneModel>, TwinError> {
        if let Some(scene) = lock(&self.remote).get(&state.scene_fingerprint).cloned() {
            let engine = self.engines.get(definition.engine.kind)?;
            engine.check_config(&definition.engine.config.to_engine_config())?;
            return Ok(scene);
        }
        let scene = self.check_runnable(definition).await?;
        let mut remote = lock(&self.remote);
        if remote.len() >= REMOTE_SCENES_KEPT {
            remote.clear();
        }
        remote.insert(scene.fingerprint(), scene.clone());
        Ok(scene)
    }
}
