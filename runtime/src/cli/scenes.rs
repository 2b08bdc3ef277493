//! `hanzo-twin scene upload|list|show|validate|download|delete`: the node's
//! scene library (`/v1/scenes`), versioned USD packages sent as tar archives.

use super::{Client, ClientOpts, print_value, s, table};
use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum SceneCommand {
    /// Upload a folder (the root USD file and everything it references) as the
    /// scene's next version.
    Upload {
        #[arg(long)]
        name: String,
        #[arg(long)]
        path: PathBuf,
        /// The root USD file inside the folder; needed only when the folder
        /// holds several USD files at its top level.
        #[arg(long)]
        root: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List your organization's scenes.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a scene's versions.
    Show {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Check that a scene loads and steps in an engine.
    Validate {
        #[arg(long)]
        name: String,
        #[arg(long)]
        engine: String,
        /// Latest when absent.
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Download a version as a tar archive.
    Download {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: Option<u32>,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete one version, or the whole scene.
    Delete {
        name: String,
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// A tar archive of every file under `dir`, paths relative to it.
fn pack_scene(dir: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    if !dir.is_dir() {
        anyhow::bail!("--path {} is not a folder", dir.display());
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(true);
    builder
        .append_dir_all(".", dir)
        .with_context(|| format!("cannot pack {}", dir.display()))?;
    builder
        .into_inner()
        .with_context(|| format!("cannot pack {}", dir.display()))
}

/// A request body that advances a progress bar as it is sent.
fn with_progress(bytes: Vec<u8>, what: &str) -> reqwest::Body {
    let bar = indicatif::ProgressBar::new(bytes.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    let bytes = bytes::Bytes::from(bytes);
    let chunks: Vec<bytes::Bytes> = (0..bytes.len())
        .step_by(64 * 1024)
        .map(|start| bytes.slice(start..(start + 64 * 1024).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |chunk| {
        bar.inc(chunk.len() as u64);
        if bar.position() >= bar.length().unwrap_or(0) {
            bar.finish_and_clear();
        }
        Ok::<_, std::io::Error>(chunk)
    }));
    reqwest::Body::wrap_stream(stream)
}

fn scene_summary(v: &Value) -> String {
    let versions = v["versions"].as_array().cloned().unwrap_or_default();
    let rows: Vec<[String; 6]> = versions
        .iter()
        .map(|m| {
            [
                s(&m["version"]),
                s(&m["root"]),
                s(&m["files"].as_array().map_or(0, Vec::len).into()),
                s(&m["size_bytes"]),
                s(&m["uploaded_by"]),
                s(&m["uploaded_at"]),
            ]
        })
        .collect();
    format!(
        "scene {} (latest version {})\n{}",
        s(&v["name"]),
        s(&v["latest_version"]),
        table(["VERSION", "ROOT", "FILES", "BYTES", "BY", "AT"], rows)
    )
}

pub(super) async fn scene_command(command: SceneCommand) -> anyhow::Result<()> {
    match command {
        SceneCommand::Upload {
            name,
            path,
            root,
            client,
        } => {
            let c = Client::new(&client)?;
            let archive = pack_scene(&path)?;
            let mut query = vec![("name", name.clone())];
            if let Some(r) = root {
                query.push(("root", r));
            }
            let url = reqwest::Url::parse_with_params(&c.url("/v1/scenes"), &query)
                .context("bad --api address")?;
            let size = archive.len();
            let v = c
                .json(
                    c.http
                        .post(url)
                        .header("content-type", "application/x-tar")
                        .header("content-length", size)
                        .body(with_progress(archive, &format!("uploading {name}"))),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            print_value(c.output, &v, |m| {
                format!(
                    "uploaded {} version {} ({} files, {} bytes, root {}; {} bodies, {} joints)",
                    s(&m["name"]),
                    s(&m["version"]),
                    m["files"].as_array().map_or(0, Vec::len),
                    s(&m["size_bytes"]),
                    s(&m["root"]),
                    s(&m["contents"]["bodies"]),
                    s(&m["contents"]["joints"]),
                )
            });
        }
        SceneCommand::List { client } => {
            let c = Client::new(&client)?;
            let v = c.json(c.http.get(c.url("/v1/scenes"))).await?;
            print_value(c.output, &v, |v| {
                let rows: Vec<[String; 4]> = v["scenes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        [
                            s(&m["name"]),
                            s(&m["latest_version"]),
                            s(&m["versions"]),
                            s(&m["updated_at"]),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    "no scenes".into()
                } else {
                    table(["NAME", "LATEST", "VERSIONS", "UPDATED"], rows)
                }
            });
        }
        SceneCommand::Show { name, client } => {
            let c = Client::new(&client)?;
            let v = c
                .json(
                    c.http
                        .get(c.url(&format!("/v1/scenes/{}", Client::encode(&name)))),
                )
                .await?;
            print_value(c.output, &v, scene_summary);
        }
        SceneCommand::Validate {
            name,
            engine,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let body = serde_json::json!({ "engine": engine, "version": version });
            let v = c
                .json(
                    c.http
                        .post(c.url(&format!("/v1/scenes/{}/validate", Client::encode(&name))))
                        .json(&body),
                )
                .await?;
            let ok = v["ok"].as_bool() == Some(true);
            print_value(c.output, &v, |r| {
                if ok {
                    format!(
                        "{} version {} loads and steps on {} ({} bodies, {} joints)",
                        s(&r["scene"]),
                        s(&r["version"]),
                        s(&r["engine"]),
                        s(&r["bodies"]),
                        s(&r["joints"])
                    )
                } else {
                    format!(
                        "{} version {} does not run on {}: {}",
                        s(&r["scene"]),
                        s(&r["version"]),
                        s(&r["engine"]),
                        s(&r["error"])
                    )
                }
            });
            if !ok {
                anyhow::bail!("validation failed");
            }
        }
        SceneCommand::Download {
            name,
            version,
            out,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut url = c.url(&format!("/v1/scenes/{}/download", Client::encode(&name)));
            if let Some(v) = version {
                url.push_str(&format!("?version={v}"));
            }
            let bytes = c
                .send(c.http.get(url))
                .await?
                .bytes()
                .await
                .context("the download broke off")?;
            std::fs::write(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("saved {} bytes to {}", bytes.len(), out.display());
        }
        SceneCommand::Delete {
            name,
            version,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut url = c.url(&format!("/v1/scenes/{}", Client::encode(&name)));
            if let Some(v) = version {
                url.push_str(&format!("?version={v}"));
            }
            c.json(c.http.delete(url)).await?;
            println!("deleted {name}");
        }
    }
    Ok(())
}
