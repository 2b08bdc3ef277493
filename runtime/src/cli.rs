//! The `hanzo-twin` command line: `serve` runs a node; every other command talks
//! to a node's HTTP API.

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hanzo_twin_actors::Format;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

mod chaos;
mod infra;
mod jobs;
mod node;
mod scenes;
mod synthdata;

#[derive(Parser)]
#[command(
    name = "hanzo-twin",
    version,
    about = "Hanzo Twin: live, forkable digital twins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ClientOpts {
    /// The node's API.
    #[arg(
        long,
        env = "HANZO_TWIN_API",
        default_value = "http://127.0.0.1:8082",
        global = true
    )]
    api: String,
    /// Bearer token for the node's API. A development node writes one to
    /// <data_dir>/auth/dev-token at start.
    #[arg(long, env = "HANZO_TWIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Read the bearer token from this file instead.
    #[arg(
        long,
        env = "HANZO_TWIN_TOKEN_FILE",
        global = true,
        conflicts_with = "token"
    )]
    token_file: Option<PathBuf>,
    /// Trust this PEM CA certificate for an https --api (e.g. a node's own
    /// self-signed certificate).
    #[arg(long, env = "HANZO_TWIN_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "text", global = true)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    Realtime,
    Fast,
    Paused,
}

impl ClockArg {
    fn as_str(self) -> &'static str {
        match self {
            ClockArg::Realtime => "realtime",
            ClockArg::Fast => "fast",
            ClockArg::Paused => "paused",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: the twin runtime, its HTTP API and metrics.
    Serve {
        /// Node configuration (YAML); default /etc/hanzo-twin/config.yaml if it
        /// exists, else built-in defaults.
        #[arg(long, env = "HANZO_TWIN_CONFIG")]
        config: Option<PathBuf>,
        /// A twin definition to create (if no twin has its name) and start at boot.
        /// Repeatable.
        #[arg(long = "twin")]
        twins: Vec<PathBuf>,
        /// Join the cluster of the node whose cluster server listens at
        /// HOST:PORT (adds to cluster.seeds; needs cluster.listen and
        /// cluster.cookie). Repeatable.
        #[arg(long = "join", value_name = "HOST:PORT")]
        join: Vec<String>,
    },
    /// Check a node configuration as `serve` would read it (the file, then
    /// the HANZO_TWIN_* environment), without starting anything: exit 0 and
    /// the settings that matter, or the first error, naming the key.
    CheckConfig {
        #[arg(long, env = "HANZO_TWIN_CONFIG")]
        config: Option<PathBuf>,
        /// Fail on warnings too (an unknown HANZO_TWIN_* variable, a setting
        /// this build ignores), as a deployment check should.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Reads one USD file and writes its scene model to stdout (bincode). The node
    /// runs this in a child process so a file that crashes the USD library
    /// cannot crash the node.
    #[command(hide = true)]
    InternalReadScene {
        path: PathBuf,
        /// Bytes of address space the reader may add to what it has at start.
        #[arg(long)]
        max_memory_bytes: Option<u64>,
    },
    /// Create a twin from a YAML or JSON definition.
    Create {
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List twins.
    List {
        #[arg(long)]
        org: Option<String>,
        /// Only twins with this tag (repeatable: all must match).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        engine: Option<String>,
        /// Twins per page (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Start after this cursor (printed under a full page).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a twin's definition and status.
    Status {
        twin: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Start a twin's simulation.
    Start {
        twin: String,
        #[arg(long, value_enum, default_value = "realtime")]
        clock: ClockArg,
        /// Begin from the scene's initial state instead of the last checkpoint.
        #[arg(long)]
        reset: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Stop a twin's simulation (it keeps its last state as a checkpoint).
    Stop {
        twin: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Step a running twin now.
    Step {
        twin: String,
        #[arg(long, default_value_t = 1)]
        steps: u64,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Fork a twin's current state into a new ephemeral twin.
    Fork {
        twin: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value = "paused")]
        clock: ClockArg,
        /// Run the fork on this cluster node (or `least_loaded`); the parent's
        /// node when absent.
        #[arg(long)]
        node: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print a completion script for a shell, e.g.
    /// `hanzo-twin completions bash > /etc/bash_completion.d/hanzo-twin` or
    /// `source <(hanzo-twin completions zsh)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Convert a URDF robot description (with its STL/OBJ/DAE meshes) into a USD
    /// scene, here, without a node.
    UrdfToUsd {
        urdf: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Fix the root link to the world even when it has a mass.
        #[arg(long)]
        fixed_base: bool,
        /// Let the robot's links collide with each other.
        #[arg(long)]
        self_collision: bool,
    },
    /// Write a twin's recorded run as a USD stage with time-sampled poses.
    Export {
        twin: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run one scene and one command sequence on several engines and report how
    /// each body's and joint's trajectory drifts from the first engine's. Exits
    /// with status 3 when the request's tolerances are exceeded.
    Compare {
        /// The comparison: a YAML or JSON file with scene, engines, steps,
        /// commands and tolerances (see docs/engines.md).
        request: PathBuf,
        /// Engines to compare, overriding the file's (repeatable; the first is
        /// the reference).
        #[arg(long = "engine")]
        engines: Vec<String>,
        /// Steps to run, overriding the file's.
        #[arg(long)]
        steps: Option<u64>,
        /// Run it as a job on the node (progress, cancel, a record kept),
        /// following it to its end.
        #[arg(long)]
        job: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Train a policy on a twin or a built-in task, as a job on the node
    /// (Stable-Baselines3 PPO or SAC, or RLlib PPO on a Ray cluster);
    /// follows its progress until it ends.
    Train(jobs::TrainArgs),
    /// Jobs on the node: list, status, cancel, logs, evaluate.
    Jobs {
        #[command(subcommand)]
        command: jobs::JobsCommand,
    },
    /// Infrastructure twins: a Kubernetes topology simulated with traffic
    /// and chaos scenarios, its assertions judged.
    Infra {
        #[command(subcommand)]
        command: infra::InfraCommand,
    },
    /// Replay load the timeseries database recorded through an
    /// infrastructure twin on the node, as a job followed to its end.
    Replay(jobs::ReplayArgs),
    /// Chaos in a running infrastructure twin on a node (admins only).
    Chaos {
        #[command(subcommand)]
        command: chaos::ChaosCommand,
    },
    /// Synthetic data: labelled image datasets drawn from a twin.
    Synthdata {
        #[command(subcommand)]
        command: synthdata::SynthdataCommand,
    },
    /// Scenes in the node's library: versioned USD packages.
    Scene {
        #[command(subcommand)]
        command: scenes::SceneCommand,
    },
    /// Read the audit log of your organization (admins only).
    Audit {
        /// Entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only this token subject.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, e.g. twins.create.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a twin and its checkpoints.
    Delete {
        twin: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Save a twin's state to a checkpoint file.
    Checkpoint {
        twin: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Load a checkpoint file into a twin.
    Restore {
        twin: String,
        #[arg(long)]
        file: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            twins,
            join,
        } => node::serve(config, twins, join),
        Command::UrdfToUsd {
            urdf,
            out,
            fixed_base,
            self_collision,
        } => {
            let options = hanzo_twin_engines::urdf::UrdfOptions {
                fixed_base,
                self_collision,
            };
            let usda = hanzo_twin_engines::urdf::urdf_to_usda(&urdf, &options)?;
            std::fs::write(&out, usda)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Command::Infra { command } => infra::command(command),
        Command::InternalReadScene {
            path,
            max_memory_bytes,
        } => crate::scene_reader::child_main(&path, max_memory_bytes)
            .context("cannot write the scene to stdout"),
        Command::CheckConfig {
            config,
            deny_warnings,
        } => node::check_config(config, deny_warnings),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "hanzo-twin", &mut std::io::stdout());
            Ok(())
        }
        other => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(client_command(other))
        }
    }
}

fn format_of(path: &std::path::Path) -> Format {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Format::Json,
        _ => Format::Yaml,
    }
}

/// A thin HTTP client that turns the API's JSON errors into plain sentences.
struct Client {
    http: reqwest::Client,
    base: String,
    output: Output,
    has_token: bool,
}

impl Client {
    fn new(opts: &ClientOpts) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = match (&opts.token, &opts.token_file) {
            (Some(t), _) => Some(t.trim().to_string()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        }
        .filter(|t| !t.is_empty());
        let mut builder = reqwest::Client::builder();
        if let Some(token) = &token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "the token contains characters that cannot go in an HTTP header; check --token or HANZO_TWIN_TOKEN"
                    )
                })?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(path) = &opts.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().context("cannot set up the HTTP client")?;
        Ok(Client {
            http,
            base: opts.api.trim_end_matches('/').to_string(),
            output: opts.output,
            has_token: token.is_some(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| {
            // The whole chain: TLS failures hide in the sources.
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            let tls = ["certificate", "Certificate", "tls", "TLS", "handshake"]
                .iter()
                .any(|w| chain.contains(w));
            if tls && self.base.starts_with("https") {
                anyhow::anyhow!(
                    "cannot set up TLS with the node at {}: {chain}\nhint: if the node's certificate is not signed by a CA this machine trusts, pass that CA (or the certificate itself) with --ca-cert or HANZO_TWIN_CA_CERT",
                    self.base
                )
            } else if e.is_connect() {
                anyhow::anyhow!(
                    "cannot reach the node at {}: is `hanzo-twin serve` running there? (set --api or HANZO_TWIN_API)",
                    self.base
                )
            } else {
                anyhow::anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let mut message = if status == reqwest::StatusCode::UNAUTHORIZED && !self.has_token {
            "no token was given, and this node requires one for every request.\n\
             hint: pass it with --token, --token-file or HANZO_TWIN_TOKEN; a development node wrote one to <data_dir>/auth/dev-token [HTTP 401]"
                .to_string()
        } else {
            explain_error(status.as_u16(), &body)
        };
        if let Some(wait) = retry_after {
            message.push_str(&format!("\nthe node asks to retry after {wait} s"));
        }
        Err(anyhow::anyhow!(message))
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = self.send(req).await?;
        if resp.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(Value::Null);
        }
        resp.json()
            .await
            .context("the node sent a reply that is not JSON")
    }

    fn twin_path(twin: &str, rest: &str) -> String {
        format!("/v1/twins/{}{rest}", Client::encode(twin))
    }

    /// Percent-encodes one path segment.
    fn encode(segment: &str) -> String {
        segment
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
}

/// Says what went wrong and, where it helps, what to do.
fn explain_error(status: u16, body: &Value) -> String {
    let err = &body["error"];
    let message = err["message"]
        .as_str()
        .unwrap_or("the node refused the request");
    let mut out = message.to_string();
    if let Some(field) = err["field"].as_str().filter(|f| !f.is_empty()) {
        out.push_str(&format!(" (field `{field}`"));
        if let Some(line) = err["line"].as_u64() {
            out.push_str(&format!(", line {line}"));
        }
        out.push(')');
    } else if let Some(line) = err["line"].as_u64() {
        out.push_str(&format!(" (line {line})"));
    }
    let hint = match (status, err["code"].as_str()) {
        (401, _) => Some(
            "the node did not accept your identity. Pass a valid token with --token, --token-file or HANZO_TWIN_TOKEN; \
             get a fresh one from your identity provider, or on a development node use the one it wrote to <data_dir>/auth/dev-token",
        ),
        (403, _) => Some(
            "your token is valid, but its role does not allow this; ask an admin of your organization for a role that does",
        ),
        (429, _) => Some("too many requests with this token; wait and try again"),
        (_, Some("not_running")) => Some("start it with `hanzo-twin start <twin>`"),
        (_, Some("failed")) => {
            Some("it crashed too often; inspect with `hanzo-twin status`, then start it again")
        }
        (404, _) => Some("list twins with `hanzo-twin list`"),
        (503, _) => Some("the twin did not answer in time; retry shortly"),
        _ => None,
    };
    if let Some(h) = hint {
        out.push_str(&format!("\nhint: {h}"));
    }
    format!("{out} [HTTP {status}]")
}

fn print_value(output: Output, value: &Value, text: impl FnOnce(&Value) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        ),
        Output::Text => println!("{}", text(value)),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn twin_summary(t: &Value) -> String {
    let mut lines = vec![
        format!("id:           {}", s(&t["id"])),
        format!("name:         {}", s(&t["name"])),
        format!("organization: {}", s(&t["organization"])),
        format!("engine:       {}", s(&t["engine"]["type"])),
        if t["type"] == "infrastructure" {
            "type:         infrastructure (hanzo-twin infra status)".to_string()
        } else {
            format!("scene:        {}", s(&t["scene"]["uri"]))
        },
        format!("state:        {}", s(&t["status"]["state"])),
        format!("clock:        {}", s(&t["status"]["clock"])),
        format!("node:         {}", s(&t["status"]["node"])),
        format!("restarts:     {}", s(&t["status"]["restarts"])),
    ];
    if !t["parent"].is_null() {
        lines.push(format!("forked from:  {}", s(&t["parent"])));
    }
    if let Some(err) = t["status"]["last_error"].as_str() {
        lines.push(format!("last error:   {err}"));
    }
    if let Some(rt) = t.get("runtime") {
        lines.push(format!(
            "sim time:     {:.3} s ({} steps)",
            rt["time"].as_f64().unwrap_or(0.0),
            s(&rt["step"])
        ));
    }
    if t["status"]["passivated"] == true {
        lines.push("passivated:   yes (its next request brings it back)".into());
    }
    if let Some(tags) = t["tags"].as_array().filter(|a| !a.is_empty()) {
        let tags: Vec<String> = tags.iter().map(s).collect();
        lines.push(format!("tags:         {}", tags.join(", ")));
    }
    lines.push(format!("sync:         {}", s(&t["sync"]["mode"])));
    if let Some(sync) = t.get("sync_status") {
        let links = |key: &str| sync[key].as_array().cloned().unwrap_or_default();
        for (role, link) in links("sources")
            .into_iter()
            .map(|l| ("source", l))
            .chain(links("publishers").into_iter().map(|l| ("publisher", l)))
        {
            lines.push(format!(
                "  {role} {}: {} to {} ({}), {} messages, {:.1}/s, {} unparsed, {} unmapped, {} reconnects",
                s(&link["name"]),
                s(&link["state"]),
                s(&link["endpoint"]),
                s(&link["topic"]),
                s(&link["messages"]),
                link["messages_per_s"].as_f64().unwrap_or(0.0),
                s(&link["unparsed"]),
                s(&link["unmapped"]),
                s(&link["reconnects"]),
            ));
            if let Some(err) = link["last_error"].as_str() {
                lines.push(format!("    last error: {err}"));
            }
        }
        let worst = sync["readings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| Some((r["error"].as_f64()?, s(&r["target"]))))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((error, target)) = worst {
            lines.push(format!("  largest error: {error:.4} at {target}"));
        }
        lines.push(format!(
            "  buffer: {} of {} queued, {} dropped, {} late",
            s(&sync["buffer"]["queued"]),
            s(&sync["buffer"]["capacity"]),
            s(&sync["buffer"]["dropped"]),
            s(&sync["buffer"]["late"]),
        ));
    }
    lines.join("\n")
}

fn twin_table(list: &Value) -> String {
    let rows: Vec<[String; 6]> = list["twins"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    [
                        s(&t["id"]),
                        s(&t["name"]),
                        s(&t["organization"]),
                        s(&t["engine"]["type"]),
                        s(&t["status"]["state"]),
                        s(&t["status"]["clock"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        return "no twins".into();
    }
    table(["ID", "NAME", "ORG", "ENGINE", "STATE", "CLOCK"], rows)
}

/// Left-aligned columns under a header.
fn table<const N: usize>(header: [&str; N], rows: Vec<[String; N]>) -> String {
    let header = header.map(String::from);
    let mut widths = [0usize; N];
    for row in std::iter::once(&header).chain(rows.iter()) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    std::iter::once(&header)
        .chain(rows.iter())
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn comparison_table(v: &Value) -> String {
    let f = |x: &Value| x.as_f64().map_or("-".to_string(), |n| format!("{n:.3e}"));
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let runs: Vec<[String; 3]> = list("runs")
        .iter()
        .map(|r| {
            [
                s(&r["engine"]),
                format!("{:.0}", r["steps_per_second"].as_f64().unwrap_or(0.0)),
                format!("{:.3}", r["seconds"].as_f64().unwrap_or(0.0)),
            ]
        })
        .collect();
    let exceeded = |x: &Value| {
        x["exceeded_at_step"]
            .as_u64()
            .map_or("-".to_string(), |n| n.to_string())
    };
    let bodies: Vec<[String; 6]> = list("bodies")
        .iter()
        .map(|b| {
            [
                s(&b["path"]),
                s(&b["engine"]),
                f(&b["max_position_error_m"]),
                f(&b["final_position_error_m"]),
                f(&b["max_orientation_error_rad"]),
                exceeded(b),
            ]
        })
        .collect();
    let joints: Vec<[String; 5]> = list("joints")
        .iter()
        .map(|j| {
            [
                s(&j["path"]),
                s(&j["engine"]),
                f(&j["max_error"]),
                f(&j["final_error"]),
                exceeded(j),
            ]
        })
        .collect();
    let mut out = format!(
        "reference {}; {} steps of {} s, compared at {} samples\n\n",
        s(&v["reference"]),
        s(&v["steps"]),
        s(&v["step_dt"]),
        s(&v["samples"])
    );
    out += &table(["ENGINE", "STEPS/S", "SECONDS"], runs);
    out += "\n\n";
    out += &table(
        [
            "BODY",
            "ENGINE",
            "MAX POS (m)",
            "FINAL POS (m)",
            "MAX ROT (rad)",
            "EXCEEDED AT",
        ],
        bodies,
    );
    if !joints.is_empty() {
        out += "\n\n";
        out += &table(["JOINT", "ENGINE", "MAX", "FINAL", "EXCEEDED AT"], joints);
    }
    out
}

fn audit_table(v: &Value) -> String {
    let entries = v["entries"].as_array().cloned().unwrap_or_default();
    if entries.is_empty() {
        return "no audit entries match".into();
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            [
                s(&e["time"]),
                s(&e["actor"]),
                s(&e["action"]),
                e["created"]
                    .as_str()
                    .or(e["target"].as_str())
                    .unwrap_or("-")
                    .to_string(),
                s(&e["outcome"]),
                s(&e["status"]),
            ]
        })
        .collect();
    table(
        ["TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "STATUS"],
        rows,
    )
}

async fn client_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. }
        | Command::InternalReadScene { .. }
        | Command::UrdfToUsd { .. }
        | Command::Infra { .. }
        | Command::Completions { .. }
        | Command::CheckConfig { .. } => {
            unreachable!("handled before")
        }
        Command::Create { config, client } => {
            let c = Client::new(&client)?;
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("cannot read {}", config.display()))?;
            let content_type = match format_of(&config) {
                Format::Json => "application/json",
                Format::Yaml => "application/yaml",
            };
            let v = c
                .json(
                    c.http
                        .post(c.url("/v1/twins"))
                        .header("content-type", content_type)
                        .body(text),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
            print_value(c.output, &v, |t| {
                format!("created twin\n{}", twin_summary(t))
            });
        }
        Command::List {
            org,
            tags,
            engine,
            limit,
            cursor,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query: Vec<(&str, String)> = Vec::new();
            if let Some(o) = org {
                query.push(("org", o));
            }
            if !tags.is_empty() {
                query.push(("tags", tags.join(",")));
            }
            if let Some(e) = engine {
                query.push(("engine", e));
            }
            query.push(("limit", limit.to_string()));
            if let Some(cursor) = cursor {
                query.push(("cursor", cursor));
            }
            let url = reqwest::Url::parse_with_params(&c.url("/v1/twins"), &query)
                .context("bad --api address")?;
            let v = c.json(c.http.get(url)).await?;
            print_value(c.output, &v, twin_table);
            if let (Output::Text, Some(next)) = (c.output, v["next_cursor"].as_str()) {
                eprintln!("more twins: hanzo-twin list --limit {limit} --cursor {next}");
            }
        }
        Command::Scene { command } => scenes::scene_command(command).await?,
        Command::Synthdata { command } => synthdata::command(command).await?,
        Command::Train(args) => jobs::train(args).await?,
        Command::Jobs { command } => jobs::command(command).await?,
        Command::Chaos { command } => chaos::command(command).await?,
        Command::Replay(args) => jobs::replay(args).await?,
        Command::Export { twin, out, client } => {
            let c = Client::new(&client)?;
            let text = c
                .send(c.http.get(c.url(&Client::twin_path(&twin, "/export"))))
                .await?
                .text()
                .await
                .context("the export broke off")?;
            std::fs::write(&out, &text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote the run of {twin} to {}", out.display());
        }
        Command::Compare {
            request,
            engines,
            steps,
            job,
            client,
        } => {
            let c = Client::new(&client)?;
            let text = std::fs::read_to_string(&request)
                .with_context(|| format!("cannot read {}", request.display()))?;
            let mut body: Value = serde_yaml_ng::from_str(&text).with_context(|| {
                format!("{} is not a YAML or JSON comparison", request.display())
            })?;
            let Some(fields) = body.as_object_mut() else {
                anyhow::bail!(
                    "{} must hold an object with scene, engines and steps",
                    request.display()
                );
            };
            if !engines.is_empty() {
                fields.insert("engines".into(), serde_json::json!(engines));
            }
            if let Some(steps) = steps {
                fields.insert("steps".into(), serde_json::json!(steps));
            }
            if job {
                fields.insert("kind".into(), serde_json::json!("compare"));
                return jobs::submit(&c, body, false).await;
            }
            let v = c
                .json(c.http.post(c.url("/v1/engines/compare")).json(&body))
                .await?;
            print_value(c.output, &v, comparison_table);
            if v["within_tolerance"] == Value::Bool(false) {
                eprintln!("the engines diverged beyond the request's tolerances");
                std::process::exit(3);
            }
        }
        Command::Audit {
            since,
            until,
            actor,
            action,
            limit,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (key, value) in [
                ("since", since),
                ("until", until),
                ("actor", actor),
                ("action", action),
            ] {
                if let Some(v) = value {
                    query.push((key, v));
                }
            }
            let url = reqwest::Url::parse_with_params(&c.url("/v1/audit"), &query)
                .context("bad --api address")?;
            let v = c.json(c.http.get(url)).await?;
            print_value(c.output, &v, audit_table);
        }
        Command::Status { twin, client } => {
            let c = Client::new(&client)?;
            let mut v = c
                .json(c.http.get(c.url(&Client::twin_path(&twin, ""))))
                .await?;
            // A running twin that follows its counterpart: how its sync fares
            // (asking would reactivate a passivated twin, so it is not asked).
            let live = v["status"]["state"] == "running" && v["status"]["passivated"] != true;
            if live && v["sync"]["mode"] != "standalone" {
                let id = s(&v["id"]);
                let sync = c
                    .json(c.http.get(c.url(&Client::twin_path(&id, "/sync/status"))))
                    .await?;
                v["sync_status"] = sync;
            }
            print_value(c.output, &v, twin_summary);
        }
        Command::Start {
            twin,
            clock,
            reset,
            client,
        } => {
            let c = Client::new(&client)?;
            let body = serde_json::json!({ "clock": clock.as_str(), "reset": reset });
            let v = c
                .json(
                    c.http
                        .post(c.url(&Client::twin_path(&twin, "/start")))
                        .json(&body),
                )
                .await?;
            print_value(c.output, &v, |t| format!("started\n{}", twin_summary(t)));
        }
        Command::Stop { twin, client } => {
            let c = Client::new(&client)?;
            let v = c
                .json(c.http.post(c.url(&Client::twin_path(&twin, "/stop"))))
                .await?;
            print_value(c.output, &v, |t| format!("stopped\n{}", twin_summary(t)));
        }
        Command::Step {
            twin,
            steps,
            client,
        } => {
            let c = Client::new(&client)?;
            let v = c
                .json(
                    c.http
                        .post(c.url(&Client::twin_path(&twin, "/step")))
                        .json(&serde_json::json!({ "steps": steps })),
                )
                .await?;
            print_value(c.output, &v, |r| {
                format!(
                    "stepped {} -> step {} at t = {:.4} s",
                    s(&r["steps_taken"]),
                    s(&r["step"]),
                    r["time"].as_f64().unwrap_or(0.0)
                )
            });
        }
        Command::Fork {
            twin,
            name,
            clock,
            node,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = serde_json::json!({ "name": name, "clock": clock.as_str() });
            if let Some(node) = node {
                body["node"] = serde_json::json!(node);
            }
            let v = c
                .json(
                    c.http
                        .post(c.url(&Client::twin_path(&twin, "/fork")))
                        .json(&body),
                )
                .await?;
            print_value(c.output, &v, |t| format!("forked\n{}", twin_summary(t)));
        }
        Command::Delete { twin, client } => {
            let c = Client::new(&client)?;
            c.json(c.http.delete(c.url(&Client::twin_path(&twin, ""))))
                .await?;
            let v = serde_json::json!({ "deleted": twin });
            print_value(c.output, &v, |_| format!("deleted {twin}"));
        }
        Command::Checkpoint { twin, out, client } => {
            let c = Client::new(&client)?;
            let resp = c
                .send(c.http.get(c.url(&Client::twin_path(&twin, "/checkpoint"))))
                .await?;
            let bytes = resp.bytes().await.context("checkpoint download failed")?;
            std::fs::write(&out, &bytes)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let v = serde_json::json!({ "twin": twin, "file": out, "bytes": bytes.len() });
            print_value(c.output, &v, |_| {
                format!("saved {} bytes to {}", bytes.len(), out.display())
            });
        }
        Command::Restore { twin, file, client } => {
            let c = Client::new(&client)?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let v = c
                .json(
                    c.http
                        .put(c.url(&Client::twin_path(&twin, "/checkpoint")))
                        .header("content-type", "application/octet-stream")
                        .body(bytes),
                )
                .await?;
            print_value(c.output, &v, |t| format!("restored\n{}", twin_summary(t)));
        }
    }
    Ok(())
}
