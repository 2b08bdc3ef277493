//! The node side of the command line: `hanzo-twin serve` runs a node until
//! SIGINT or SIGTERM; `hanzo-twin check-config` reads its configuration as
//! `serve` would, without starting anything.

use super::format_of;
use crate::config::NodeConfig;
use crate::node::Node;
use anyhow::Context;
use hanzo_twin_actors::TwinDefinition;
use std::path::PathBuf;
use std::time::Duration;

/// `hanzo-twin check-config`: the configuration `serve` would run with.
pub(super) fn check_config(
    config_path: Option<PathBuf>,
    deny_warnings: bool,
) -> anyhow::Result<()> {
    let config = NodeConfig::load(config_path.as_deref(), std::env::vars())?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let metadata = match config.metadata.backend {
        crate::config::MetadataBackend::Postgres => "postgres",
        crate::config::MetadataBackend::Sled => "sled",
    };
    let storage = match config.storage.backend {
        crate::config::StorageBackend::S3 => format!(
            "s3 {}",
            config.storage.endpoint.as_deref().unwrap_or("(AWS)")
        ),
        crate::config::StorageBackend::Local => "local".into(),
    };
    println!(
        "ok: node {}, API on {}:{}, metadata {metadata}, storage {storage}, auth {}{}",
        config
            .node
            .id
            .as_deref()
            .unwrap_or("(kept in the data folder)"),
        config.server.host,
        config.server.port,
        format!("{:?}", config.auth.mode).to_lowercase(),
        config
            .cluster
            .listen
            .as_deref()
            .map(|l| format!(", cluster on {l}"))
            .unwrap_or_default()
    );
    if deny_warnings && !config.warnings.is_empty() {
        anyhow::bail!(
            "{} warning(s), and --deny-warnings was given",
            config.warnings.len()
        );
    }
    Ok(())
}

pub(super) fn serve(
    config_path: Option<PathBuf>,
    twin_files: Vec<PathBuf>,
    join: Vec<String>,
) -> anyhow::Result<()> {
    let mut config = NodeConfig::load(config_path.as_deref(), std::env::vars())?;
    if !join.is_empty() {
        config.cluster.seeds.extend(join);
        config.validate()?;
    }
    crate::telemetry::init_logging(&config.logging);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Read the boot twins before anything starts, so a typo fails fast.
    let mut definitions = Vec::new();
    for path in &twin_files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read twin definition {}", path.display()))?;
        let definition = TwinDefinition::parse(&text, format_of(path))
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        definitions.push(definition);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.workers > 0 {
        builder.worker_threads(config.server.workers);
    }
    let rt = builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    let served = rt.block_on(async move {
        let reader =
            crate::scene_reader::isolated_scene_reader(exe, config.scenes.reader_memory_bytes);
        let node = Node::start_with(config, reader).await?;
        // Keys and the dev token before boot twins, so a bad auth setup fails
        // before anything runs.
        let api = node.api().await?;
        for definition in definitions {
            let name = definition.name.to_string();
            let id = node
                .ensure_running(definition)
                .await
                .with_context(|| format!("cannot start twin {name}"))?;
            tracing::info!(twin = %id, %name, "twin running");
        }
        node.serve_api(api, shutdown_signal()).await
    });
    // The node has stopped within its shutdown time; a blocking task still
    // running (a scene read, an engine call) does not hold the process.
    rt.shutdown_timeout(Duration::from_secs(1));
    served
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: checkpointing twins");
}
