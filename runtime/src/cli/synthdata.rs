//! `hanzo-twin synthdata generate --config synthdata-config.yaml`: the
//! spec's job configuration submitted to `/v1/synthdata`, followed with a
//! progress bar, and (with `--out`) the finished dataset unpacked.

use super::{Client, ClientOpts, Output, print_value, s};
use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(super) enum SynthdataCommand {
    /// Draw a labelled dataset from a twin, as the configuration says, and
    /// follow it to its end.
    Generate {
        /// The job configuration (YAML or JSON), as the spec writes it;
        /// under its heading or not.
        #[arg(long)]
        config: PathBuf,
        /// Unpack the finished dataset into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Submit and return.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// A generation's progress and result.
    Status {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Download a finished dataset and unpack it.
    Download {
        id: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// The configuration: the fields themselves, or one heading (the spec's
/// "Synthetic Data Job Configuration:") holding them.
fn read_config(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not YAML or JSON", path.display()))?;
    match value.as_object() {
        Some(map) if map.contains_key("twin_id") => Ok(value),
        Some(map) if map.len() == 1 => {
            let inner = map.values().next().cloned().unwrap_or_default();
            if inner.get("twin_id").is_some() {
                Ok(inner)
            } else {
                anyhow::bail!("{}: no twin_id under its heading", path.display())
            }
        }
        _ => anyhow::bail!(
            "{}: expected the job configuration (twin_id, cameras, labels, ...)",
            path.display()
        ),
    }
}

async fn download(c: &Client, id: &str, out: &PathBuf) -> anyhow::Result<()> {
    let resp = c
        .send(c.http.get(c.url(&format!("/v1/synthdata/{id}/dataset"))))
        .await?;
    let bytes = resp.bytes().await.context("the download broke off")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    tar::Archive::new(bytes.as_ref())
        .unpack(out)
        .with_context(|| format!("cannot unpack the dataset into {}", out.display()))?;
    eprintln!("dataset unpacked into {}", out.display());
    Ok(())
}

pub(super) async fn command(command: SynthdataCommand) -> anyhow::Result<()> {
    match command {
        SynthdataCommand::Generate {
            config,
            out,
            detach,
            client,
        } => {
            let c = Client::new(&client)?;
            let spec = read_config(&config)?;
            let id =
                super::jobs::submit_to(&c, "/v1/synthdata", &spec, "synthdata", detach).await?;
            if let Some(out) = out
                && !detach
                && c.output == Output::Text
            {
                download(&c, &id, &out).await?;
            }
            Ok(())
        }
        SynthdataCommand::Status { id, client } => {
            let c = Client::new(&client)?;
            let v = c
                .json(c.http.get(c.url(&format!("/v1/synthdata/{id}"))))
                .await?;
            print_value(c.output, &v, |v| {
                format!(
                    "{} {}: {} of {} frames ({} frames/s){}",
                    s(&v["dataset"]),
                    s(&v["state"]),
                    s(&v["frames_done"]),
                    s(&v["num_frames"]),
                    v["frames_per_second"]
                        .as_f64()
                        .map_or("-".into(), |r| format!("{r:.1}")),
                    if v["result"].is_null() {
                        String::new()
                    } else {
                        format!("\nresult {}", v["result"])
                    }
                )
            });
            Ok(())
        }
        SynthdataCommand::Download { id, out, client } => {
            let c = Client::new(&client)?;
            download(&c, &id, &out).await
        }
    }
}
