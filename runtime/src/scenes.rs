//! The scene library: versioned USD packages in the scenes bucket.
//!
//! Layout, per organization and scene name:
//! - `<org>/<name>/files/<upload id>/<path>`: the files of one upload;
//! - `<org>/<name>/versions/<version>.json`: a version's manifest.
//!
//! An upload writes its files under a fresh upload id, then the manifest; a
//! version exists once its manifest does, so a failed upload stores no version,
//! and its files are removed. Versions are immutable; twins read them through a
//! local cache that is filled once per version.

use hanzo_twin_actors::{Name, SceneFetcher, SceneReader, TwinError};
use hanzo_twin_api::scenes::{
    SceneCatalog, SceneContents, SceneError, SceneFile, SceneSummary, SceneVersion,
    UnsupportedPrim, ValidationReport,
};
use hanzo_twin_engines::findings::{Finding, Support};
use hanzo_twin_engines::{EngineConfig, EngineError, EngineKind, EngineRegistry};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// One lock per (organization, scene name).
type NumberingLocks = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

pub struct SceneLibrary {
    objects: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    reader: SceneReader,
    engines: EngineRegistry,
    /// Scratch space for unpacking uploads, and the cache of fetched versions.
    work_dir: PathBuf,
    /// Serializes version numbering per scene on this node.
    numbering: tokio::sync::Mutex<NumberingLocks>,
}

fn storage(e: impl std::fmt::Display) -> SceneError {
    SceneError::Storage(e.to_string())
}

fn invalid(field: &str, message: impl Into<String>) -> SceneError {
    SceneError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn is_urdf(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".urdf")
}

fn is_usd(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".usda") || lower.ends_with(".usdc") || lower.ends_with(".usd")
}

/// A safe relative path inside a package: no absolute paths, no `..`.
fn package_path(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl SceneLibrary {
    pub fn new(
        objects: Arc<dyn ObjectStore>,
        signer: Option<Arc<dyn object_store::signer::Signer>>,
        reader: SceneReader,
        engines: EngineRegistry,
        work_dir: PathBuf,
    ) -> SceneLibrary {
        SceneLibrary {
            objects,
            signer,
            reader,
            engines,
            work_dir,
            numbering: Default::default(),
        }
    }

    fn check_name(name: &str) -> Result<(), SceneError> {
        Name::new(name).map(|_| ()).map_err(|m| invalid("name", m))
    }

    async fn read_object(&self, path: &ObjectPath) -> Result<bytes::Bytes, SceneError> {
        self.objects
            .get(path)
            .await
            .map_err(storage)?
            .bytes()
            .await
            .map_err(storage)
    }

    async fn manifest(&self, path: &ObjectPath) -> Result<SceneVersion, SceneError> {
        let bytes = self.read_object(path).await?;
        serde_json::from_slice(&bytes).map_err(|e| storage(format!("manifest {path}: {e}")))
    }

    /// Where a version's manifest lives.
    fn manifest_path(org: &str, name: &str, version: u32) -> ObjectPath {
        ObjectPath::from(format!("{org}/{name}/versions/{version:010}.json"))
    }

    /// The version numbers of a scene, ascending, from the manifest names
    /// alone (no manifest is read).
    async fn version_numbers(&self, org: &str, name: &str) -> Result<Vec<u32>, SceneError> {
        Self::check_name(name)?;
        use futures_util::StreamExt;
        let prefix = ObjectPath::from(format!("{org}/{name}/versions"));
        let mut listing = self.objects.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(item) = listing.next().await {
            let meta = item.map_err(storage)?;
            if let Some(v) = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .and_then(|v| v.parse::<u32>().ok())
            {
                out.push(v);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// One version's manifest (the latest when `version` is `None`).
    async fn version(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<SceneVersion, SceneError> {
        let numbers = self.version_numbers(org, name).await?;
        let found = match version {
            None => numbers.last().copied(),
            Some(v) => numbers.contains(&v).then_some(v),
        };
        let Some(v) = found else {
            return Err(match version {
                Some(v) => SceneError::NotFound(format!("{name} version {v}")),
                None => SceneError::NotFound(name.to_string()),
            });
        };
        self.manifest(&Self::manifest_path(org, name, v)).await
    }

    /// Unpacks a tar archive into `dir`, refusing anything but plain files and
    /// folders at safe relative paths.
    pub fn unpack(archive: &[u8], dir: &Path) -> Result<Vec<(String, PathBuf)>, SceneError> {
        let mut files = Vec::new();
        let mut tar = tar::Archive::new(archive);
        let entries = tar
            .entries()
            .map_err(|e| invalid("archive", format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| invalid("archive", format!("the tar archive is damaged: {e}")))?;
            let raw = entry
                .path()
                .map_err(|e| invalid("archive", format!("a file name is unreadable: {e}")))?
                .into_owned();
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                continue;
            }
            let Some(rel) = package_path(&raw) else {
                return Err(invalid(
                    "archive",
                    format!(
                        "`{}` is not a relative path inside the package",
                        raw.display()
                    ),
                ));
            };
            if !kind.is_file() {
                return Err(invalid(
                    "archive",
                    format!("`{rel}` is not a regular file (links and devices are not accepted)"),
                ));
            }
            let target = dir.join(&rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(storage)?;
            }
            entry
                .unpack(&target)
                .map_err(|e| invalid("archive", format!("cannot unpack `{rel}`: {e}")))?;
            files.push((rel, target));
        }
        if files.is_empty() {
            return Err(invalid("archive", "the archive holds no files"));
        }
        files.sort();
        Ok(files)
    }

    async fn delete_prefix(&self, prefix: &ObjectPath) {
        use futures_util::StreamExt;
        let mut listing = self.objects.list(Some(prefix));
        while let Some(item) = listing.next().await {
            if let Ok(meta) = item {
                let _ = self.objects.delete(&meta.location).await;
            }
        }
    }

    /// The local folder holding `manifest`'s files, filled on first use.
    async fn materialize(&self, manifest: &SceneVersion) -> Result<PathBuf, SceneError> {
        let dir = self
            .work_dir
            .join("cache")
            .join(&manifest.organization)
            .join(&manifest.name)
            .join(manifest.version.to_string());
        if dir.join(&manifest.root).exists() {
            return Ok(dir);
        }
        let staging = self
            .work_dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        for file in &manifest.files {
            let object = ObjectPath::from(format!("{}/{}", manifest.storage_prefix, file.path));
            let bytes = self.read_object(&object).await?;
            let target = staging.join(&file.path);
            if let Some(parent) = target.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(storage)?;
            }
            tokio::fs::write(&target, &bytes).await.map_err(storage)?;
        }
        if let Some(parent) = dir.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(storage)?;
        }
        // Another fetch may have won the race; its copy is as good.
        if tokio::fs::rename(&staging, &dir).await.is_err() {
            let _ = tokio::fs::remove_dir_all(&staging).await;
        }
        Ok(dir)
    }

    /// What twins use to open `scene://` URIs.
    pub fn fetcher(self: &Arc<Self>) -> SceneFetcher {
        let library = self.clone();
        Arc::new(move |org: String, name: String, version: Option<u32>| {
            let library = library.clone();
            Box::pin(async move {
                let field = |e: SceneError| match e {
                    SceneError::NotFound(what) => TwinError::invalid(
                        "scene.uri",
                        format!("scene {what} is not in your organization's scene library"),
                    ),
                    other => TwinError::invalid("scene.uri", other.to_string()),
                };
                let manifest = library.version(&org, &name, version).await.map_err(field)?;
                let dir = library.materialize(&manifest).await.map_err(field)?;
                Ok(dir.join(&manifest.root))
            })
        })
    }
}

#[async_trait::async_trait]
impl SceneCatalog for SceneLibrary {
    async fn list(&self, org: &str) -> Result<Vec<SceneSummary>, SceneError> {
        let listing = self
            .objects
            .list_with_delimiter(Some(&ObjectPath::from(org)))
            .await
            .map_err(storage)?;
        let mut out = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            // A scene whose versions were all deleted is gone. Only the
            // latest manifest is read.
            let Ok(numbers) = self.version_numbers(org, name).await else {
                continue;
            };
            if let Some(&v) = numbers.last()
                && let Ok(latest) = self.manifest(&Self::manifest_path(org, name, v)).await
            {
                out.push(SceneSummary {
                    name: name.to_string(),
                    latest_version: latest.version,
                    versions: numbers.len(),
                    updated_at: latest.uploaded_at,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn versions(&self, org: &str, name: &str) -> Result<Vec<SceneVersion>, SceneError> {
        let numbers = self.version_numbers(org, name).await?;
        if numbers.is_empty() {
            return Err(SceneError::NotFound(name.to_string()));
        }
        let mut out = Vec::with_capacity(numbers.len());
        for v in numbers {
            out.push(self.manifest(&Self::manifest_path(org, name, v)).await?);
        }
        Ok(out)
    }

    async fn upload(
        &self,
        org: &str,
        name: &str,
        root: Option<&str>,
        archive: bytes::Bytes,
        uploaded_by: &str,
    ) -> Result<SceneVersion, SceneError> {
        Self::check_name(name)?;
        let scratch = self
            .work_dir
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&scratch).map_err(storage)?;
        let result = self
            .upload_from(org, name, root, archive, uploaded_by, &scratch)
            .await;
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        result
    }

    async fn archive(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<(SceneVersion, Vec<u8>), SceneError> {
        let manifest = self.version(org, name, version).await?;
        let mut builder = tar::Builder::new(Vec::new());
        for file in &manifest.files {
            let object = ObjectPath::from(format!("{}/{}", manifest.storage_prefix, file.path));
            let bytes = self.read_object(&object).await?;
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(manifest.uploaded_at.timestamp().max(0) as u64);
            builder
                .append_data(&mut header, &file.path, bytes.as_ref())
                .map_err(storage)?;
        }
        let archive = builder.into_inner().map_err(storage)?;
        Ok((manifest, archive))
    }

    async fn validate(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
        engine: EngineKind,
    ) -> Result<ValidationReport, SceneError> {
        let manifest = self.version(org, name, version).await?;
        let mut report = ValidationReport {
            scene: manifest.name.clone(),
            version: manifest.version,
            engine,
            available: false,
            ok: false,
            bodies: manifest.contents.bodies,
            joints: manifest.contents.joints,
            error: None,
            findings: Vec::new(),
            supported: 0,
            approximated: 0,
            unsupported: 0,
        };
        let engine_impl = match self.engines.get(engine) {
            Ok(e) => e,
            Err(e) => {
                report.error = Some(e.to_string());
                return Ok(report);
            }
        };
        report.available = true;
        let dir = self.materialize(&manifest).await?;
        let unsupported = |prim: &str, message: String| Finding {
            prim: prim.to_string(),
            feature: "scene".into(),
            support: Support::Unsupported,
            note: Some(message),
        };
        match (self.reader)(dir.join(&manifest.root)).await {
            Ok(scene) => {
                report.findings = engine_impl.findings(&scene);
                let loaded = engine_impl
                    .load_scene(&scene, &EngineConfig::default())
                    .and_then(|mut sim| sim.step());
                if let Err(e) = loaded {
                    let prim = match &e {
                        EngineError::ScenePrim { prim, .. } => prim.clone(),
                        _ => manifest.root.clone(),
                    };
                    report.findings.push(unsupported(&prim, e.to_string()));
                    report.error = Some(e.to_string());
                }
            }
            Err(e) => {
                let prim = match &e {
                    EngineError::ScenePrim { prim, .. } => prim.clone(),
                    _ => manifest.root.clone(),
                };
                report.findings.push(unsupported(&prim, e.to_string()));
                report.error = Some(e.to_string());
            }
        }
        let count = |s: Support| report.findings.iter().filter(|f| f.support == s).count();
        report.supported = count(Support::Supported);
        report.approximated = count(Support::Approximated);
        report.unsupported = count(Support::Unsupported);
        report.ok = report.error.is_none() && report.unsupported == 0;
        Ok(report)
    }

    async fn presigned(
        &self,
        org: &str,
        name: &str,
        version: Option<u32>,
        expires_in: std::time::Duration,
    ) -> Result<(SceneVersion, Vec<(String, String)>), SceneError> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            invalid(
                "presign",
                "this node's object storage cannot sign URLs (set storage.backend: s3); download the archive instead",
            )
        })?;
        let manifest = self.version(org, name, version).await?;
        let mut urls = Vec::with_capacity(manifest.files.len());
        for file in &manifest.files {
            let object = ObjectPath::from(format!("{}/{}", manifest.storage_prefix, file.path));
            let url = signer
                .signed_url(axum::http::Method::GET, &object, expires_in)
                .await
                .map_err(storage)?;
            urls.push((file.path.clone(), url.to_string()));
        }
        Ok((manifest, urls))
    }

    async fn delete(&self, org: &str, name: &str, version: Option<u32>) -> Result<(), SceneError> {
        let doomed: Vec<SceneVersion> = match version {
            Some(_) => vec![self.version(org, name, version).await?],
            None => self.versions(org, name).await?,
        };
        for manifest in doomed {
            // The manifest first: the version is gone the moment it is.
            let path = Self::manifest_path(org, name, manifest.version);
            self.objects.delete(&path).await.map_err(storage)?;
            self.delete_prefix(&ObjectPath::from(manifest.storage_prefix.as_str()))
                .await;
        }
        Ok(())
    }
}

impl SceneLibrary {
    async fn upload_from(
        &self,
        org: &str,
        name: &str,
        root: Option<&str>,
        archive: bytes::Bytes,
        uploaded_by: &str,
        scratch: &Path,
    ) -> Result<SceneVersion, SceneError> {
        let dir = scratch.to_path_buf();
        let files = tokio::task::spawn_blocking(move || Self::unpack(&archive, &dir))
            .await
            .map_err(storage)??;
        let is_root_file = |p: &str| is_usd(p) || is_urdf(p);
        let root = match root {
            Some(r) => {
                let r = package_path(Path::new(r)).ok_or_else(|| {
                    invalid("root", format!("`{r}` is not a path inside the package"))
                })?;
                if !files.iter().any(|(p, _)| *p == r) {
                    return Err(invalid("root", format!("the archive has no file `{r}`")));
                }
                // An MJCF model is a root only when named: packages hold other XML.
                if !is_root_file(&r) && !hanzo_twin_engines::scene::is_mjcf(&r) {
                    return Err(invalid(
                        "root",
                        format!("`{r}` is not a USD, URDF or MJCF (.xml, .mjcf) file"),
                    ));
                }
                r
            }
            None => {
                let top: Vec<&String> = files
                    .iter()
                    .map(|(p, _)| p)
                    .filter(|p| !p.contains('/') && is_root_file(p))
                    .collect();
                match top.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(invalid(
                            "root",
                            "the archive has no USD file at its top level; name the root file with root=",
                        ));
                    }
                    _ => {
                        return Err(invalid(
                            "root",
                            "the archive has several USD files at its top level; name the root file with root=",
                        ));
                    }
                }
            }
        };
        let mut files = files;
        // A robot description becomes a USD stage beside it, which is the root.
        let root = if is_urdf(&root) {
            let source = scratch.join(&root);
            let converted = tokio::task::spawn_blocking(move || {
                hanzo_twin_engines::urdf::urdf_to_usda(&source, &Default::default())
            })
            .await
            .map_err(|e| invalid("archive", format!("the URDF converter failed: {e}")))?
            .map_err(|e| {
                invalid(
                    "archive",
                    e.to_string()
                        .replace(&format!("{}/", scratch.display()), ""),
                )
            })?;
            let usd = format!(
                "{}.usda",
                root.trim_end_matches(".urdf").trim_end_matches(".URDF")
            );
            if files.iter().any(|(p, _)| *p == usd) {
                return Err(invalid(
                    "root",
                    format!("the archive already has `{usd}`, where the converted URDF would go"),
                ));
            }
            let target = scratch.join(&usd);
            tokio::fs::write(&target, converted)
                .await
                .map_err(storage)?;
            files.push((usd.clone(), target));
            files.sort();
            usd
        } else {
            root
        };
        // A package that does not parse or compose is refused; physics the
        // scene model cannot represent is stored and reported by validation.
        let scratch_prefix = format!("{}/", scratch.display());
        let contents = match (self.reader)(scratch.join(&root)).await {
            Ok(scene) => SceneContents {
                bodies: scene.bodies.len(),
                joints: scene.joints.len(),
                fingerprint: format!("{:016x}", scene.fingerprint()),
                unsupported: None,
            },
            Err(EngineError::ScenePrim { prim, message }) => SceneContents {
                bodies: 0,
                joints: 0,
                fingerprint: String::new(),
                unsupported: Some(UnsupportedPrim { prim, message }),
            },
            Err(e) => {
                return Err(invalid(
                    "archive",
                    e.to_string().replace(&scratch_prefix, ""),
                ));
            }
        };
        let upload_id = uuid::Uuid::new_v4().simple().to_string();
        let storage_prefix = format!("{org}/{name}/files/{upload_id}");
        let mut manifest_files = Vec::new();
        let mut size_bytes = 0;
        let stored = async {
            for (rel, path) in &files {
                let bytes = tokio::fs::read(path).await.map_err(storage)?;
                size_bytes += bytes.len() as u64;
                manifest_files.push(SceneFile {
                    path: rel.clone(),
                    size: bytes.len() as u64,
                    sha256: format!("{:x}", Sha256::digest(&bytes)),
                });
                self.objects
                    .put(
                        &ObjectPath::from(format!("{storage_prefix}/{rel}")),
                        PutPayload::from(bytes),
                    )
                    .await
                    .map_err(storage)?;
            }
            self.commit(org, name, |version| SceneVersion {
                name: name.to_string(),
                organization: org.to_string(),
                version,
                root: root.clone(),
                files: manifest_files.clone(),
                size_bytes,
                uploaded_at: chrono::Utc::now(),
                uploaded_by: uploaded_by.to_string(),
                contents: contents.clone(),
                storage_prefix: storage_prefix.clone(),
            })
            .await
        }
        .await;
        if stored.is_err() {
            self.delete_prefix(&ObjectPath::from(storage_prefix.as_str()))
                .await;
        }
        stored
    }

    /// Writes the manifest under the next version number.
    async fn commit(
        &self,
        org: &str,
        name: &str,
        make: impl Fn(u32) -> SceneVersion,
    ) -> Result<SceneVersion, SceneError> {
        let lock = self
            .numbering
            .lock()
            .await
            .entry((org.to_string(), name.to_string()))
            .or_default()
            .clone();
        let _held = lock.lock().await;
        let next = self
            .version_numbers(org, name)
            .await?
            .last()
            .map_or(1, |v| v + 1);
        let manifest = make(next);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(storage)?;
        let path = Self::manifest_path(org, name, next);
        let create = PutOptions::from(PutMode::Create);
        match self
            .objects
            .put_opts(&path, PutPayload::from(bytes.clone()), create)
            .await
        {
            Ok(_) => Ok(manifest),
            Err(object_store::Error::AlreadyExists { .. }) => Err(SceneError::Conflict(format!(
                "another upload took version {next} of {name}; upload again"
            ))),
            // Stores without conditional writes rely on the lock above.
            Err(object_store::Error::NotImplemented) => {
                self.objects
                    .put(&path, PutPayload::from(bytes))
                    .await
                    .map_err(storage)?;
                Ok(manifest)
            }
            Err(e) => Err(storage(e)),
        }
    }
}
