//! `hanzo-twin train` (the spec's command) and `hanzo-twin jobs
//! list|status|cancel|logs`: jobs through the node's `/v1/jobs`.

use super::{Client, ClientOpts, Output, print_value, s};
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A count written as the spec writes it: `10_000_000` (or `10000000`).
fn count(text: &str) -> Result<u64, String> {
    text.replace('_', "").parse::<u64>().map_err(|_| {
        format!("`{text}` is not a whole number (underscores may group digits: 10_000_000)")
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum AlgoArg {
    Ppo,
    Sac,
}

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum BackendArg {
    /// Stable-Baselines3 on the node.
    Sb3,
    /// RLlib PPO on the node's Ray cluster (scheduler.ray_address).
    Rllib,
}

#[derive(Args)]
pub(super) struct TrainArgs {
    /// Train on this twin's own control task (every moving joint observed
    /// and driven), through the node as you.
    #[arg(long, conflicts_with = "task", required_unless_present = "task")]
    twin: Option<String>,
    /// Or a built-in task: cartpole-v0, ant-v5.
    #[arg(long)]
    task: Option<String>,
    /// The engine the environments run on (default: the task's or twin's).
    #[arg(long)]
    engine: Option<String>,
    #[arg(long, value_enum, default_value = "ppo")]
    algo: AlgoArg,
    /// The trainer.
    #[arg(long, value_enum, default_value = "sb3")]
    backend: BackendArg,
    /// Environments stepped at once (over all env runners).
    #[arg(long, default_value = "8")]
    num_envs: u32,
    /// With --backend rllib: RLlib env runners, each stepping its share of
    /// the environments as one batch on the node (default 2).
    #[arg(long)]
    env_runners: Option<u32>,
    /// Environment steps to train for, e.g. 10_000_000.
    #[arg(long, value_parser = count)]
    total_steps: u64,
    #[arg(long, default_value = "0")]
    seed: u64,
    /// A hyperparameter of the algorithm, e.g. --set learning_rate=0.0003
    /// (the trainer's names: Stable-Baselines3's, or RLlib's such as
    /// --set lr=0.0003). Repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    hyperparameters: Vec<String>,
    /// A policy checkpoint every this many steps (default: a tenth).
    #[arg(long, value_parser = count)]
    checkpoint_every: Option<u64>,
    /// Episodes of the final evaluation.
    #[arg(long)]
    eval_episodes: Option<u32>,
    /// Submit and return; follow later with `hanzo-twin jobs logs <id> --follow`.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    client: ClientOpts,
}

#[derive(Subcommand)]
pub(super) enum JobsCommand {
    /// Your organization's jobs, newest first.
    List {
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// train, evaluate, compare, synthdata or replay.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// A job's state, progress, result and artifacts.
    Status {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Stop a job; what it produced (its latest policy) is kept.
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// A job's log; with --follow, until the job ends, with a progress bar.
    Logs {
        id: String,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Evaluate a training job's policy: its mean return over episodes.
    Evaluate {
        /// The training job.
        policy_job: String,
        #[arg(long, default_value_t = 20)]
        episodes: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

fn job_path(id: &str, rest: &str) -> String {
    format!("/v1/jobs/{}{rest}", Client::encode(id))
}

#[derive(Args)]
pub(super) struct ReplayArgs {
    /// The infrastructure twin, by id or name.
    twin: String,
    /// The recorded load from this time (RFC 3339), e.g. 2026-02-20T00:00:00Z…
    #[arg(long)]
    from: Option<String>,
    /// …to this one, not included.
    #[arg(long)]
    to: Option<String>,
    /// The SQL that reads it (rows of bucket, metric, service, avg_value);
    /// default: the spec's metrics_1m query.
    #[arg(long)]
    query: Option<String>,
    /// Write the run back to the timeseries database's twin_experiments
    /// under this name.
    #[arg(long)]
    experiment: Option<String>,
    /// What-ifs replayed beside the twin on the same load.
    #[command(flatten)]
    variants: super::infra::VariantArgs,
    /// When the job has run, save its plot (every run's latency and
    /// failures over the span) here, as SVG.
    #[arg(long, value_name = "FILE.svg", conflicts_with = "detach")]
    plot: Option<std::path::PathBuf>,
    /// Submit and return; follow later with `hanzo-twin jobs logs <id> --follow`.
    #[arg(long)]
    detach: bool,
    #[command(flatten)]
    client: ClientOpts,
}

/// `hanzo-twin replay`: recorded load through an infrastructure twin on the
/// node, as a job followed to its end.
pub(super) async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client)?;
    let mut body = serde_json::json!({});
    for (key, value) in [
        ("from", args.from),
        ("to", args.to),
        ("query", args.query),
        ("experiment", args.experiment),
    ] {
        if let Some(v) = value {
            body[key] = Value::String(v);
        }
    }
    let variants = args.variants.read()?;
    if !variants.is_empty() {
        body["variants"] = serde_json::to_value(variants)?;
    }
    let path = format!("/v1/infra/twins/{}/replay", Client::encode(&args.twin));
    let id = submit_to(&c, &path, &body, "replay", args.detach).await?;
    if let Some(file) = &args.plot {
        let url = c.url(&job_path(&id, "/artifacts/comparison.svg"));
        let svg = c.send(c.http.get(url)).await?.bytes().await?;
        std::fs::write(file, &svg).with_context(|| format!("cannot write {}", file.display()))?;
        eprintln!("plotted in {}", file.display());
    }
    Ok(())
}

pub(super) async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client)?;
    let mut hyperparameters = serde_json::Map::new();
    for pair in &args.hyperparameters {
        let (name, value) = pair.split_once('=').with_context(|| {
            format!("--set {pair}: write NAME=VALUE, e.g. --set learning_rate=0.0003")
        })?;
        // A number, or text such as lin_0.001 (a schedule); the node checks it.
        let value: Value = serde_json::from_str(value.trim())
            .unwrap_or_else(|_| Value::String(value.trim().to_string()));
        hyperparameters.insert(name.trim().to_string(), value);
    }
    let mut spec = json!({
        "kind": "train",
        "algo": match args.algo { AlgoArg::Ppo => "ppo", AlgoArg::Sac => "sac" },
        "backend": match args.backend { BackendArg::Sb3 => "sb3", BackendArg::Rllib => "rllib" },
        "num_envs": args.num_envs,
        "total_steps": args.total_steps,
        "seed": args.seed,
        "hyperparameters": hyperparameters,
    });
    for (key, value) in [
        ("twin", args.twin.map(Value::from)),
        ("task", args.task.map(Value::from)),
        ("engine", args.engine.map(Value::from)),
        ("env_runners", args.env_runners.map(Value::from)),
        (
            "checkpoint_every_steps",
            args.checkpoint_every.map(Value::from),
        ),
        ("eval_episodes", args.eval_episodes.map(Value::from)),
    ] {
        if let Some(v) = value {
            spec[key] = v;
        }
    }
    submit(&c, spec, args.detach).await
}

/// Submits `spec` and, unless `detach`, follows the job to its end.
pub(super) async fn submit(c: &Client, spec: Value, detach: bool) -> anyhow::Result<()> {
    let kind = s(&spec["kind"]);
    submit_to(c, "/v1/jobs", &spec, &kind, detach)
        .await
        .map(|_| ())
}

/// Posts `body` to `path`, which answers with a job (`kind` names it), and
/// unless `detach` follows the job to its end; the job's id.
pub(super) async fn submit_to(
    c: &Client,
    path: &str,
    body: &Value,
    kind: &str,
    detach: bool,
) -> anyhow::Result<String> {
    let job = c.json(c.http.post(c.url(path)).json(body)).await?;
    let id = s(&job["id"]);
    if detach || c.output == Output::Json {
        print_value(c.output, &job, |j| {
            format!(
                "submitted {kind} job {id} ({})\nfollow it: hanzo-twin jobs logs {id} --follow",
                s(&j["state"])
            )
        });
        return Ok(id);
    }
    eprintln!(
        "submitted {kind} job {id}; Ctrl-C stops watching, not the job (hanzo-twin jobs cancel {id})"
    );
    follow(c, &id, true).await?;
    Ok(id)
}

pub(super) async fn command(command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            state,
            kind,
            limit,
            cursor,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [("state", state), ("kind", kind), ("cursor", cursor)] {
                if let Some(v) = v {
                    query.push((k, v));
                }
            }
            let url = reqwest::Url::parse_with_params(&c.url("/v1/jobs"), &query)
                .context("bad --api address")?;
            let v = c.json(c.http.get(url)).await?;
            print_value(c.output, &v, job_table);
            if let (Output::Text, Some(next)) = (c.output, v["next_cursor"].as_str()) {
                eprintln!("more jobs: hanzo-twin jobs list --limit {limit} --cursor {next}");
            }
        }
        JobsCommand::Status { id, client } => {
            let c = Client::new(&client)?;
            let v = c.json(c.http.get(c.url(&job_path(&id, "")))).await?;
            print_value(c.output, &v, job_summary);
        }
        JobsCommand::Cancel { id, client } => {
            let c = Client::new(&client)?;
            let v = c
                .json(c.http.post(c.url(&job_path(&id, "/cancel"))))
                .await?;
            print_value(c.output, &v, |j| format!("cancelled\n{}", job_summary(j)));
        }
        JobsCommand::Logs {
            id,
            follow: f,
            client,
        } => {
            let c = Client::new(&client)?;
            follow(&c, &id, f).await?;
        }
        JobsCommand::Evaluate {
            policy_job,
            episodes,
            seed,
            detach,
            client,
        } => {
            let c = Client::new(&client)?;
            let spec = json!({"kind": "evaluate", "policy_job": policy_job, "episodes": episodes, "seed": seed});
            submit(&c, spec, detach).await?;
        }
    }
    Ok(())
}

/// Prints the job's log (as JSON lines with `-o json`); with `live`, keeps
/// following until the job ends, drawing its progress as a bar, and fails
/// when the job did not succeed.
async fn follow(c: &Client, id: &str, live: bool) -> anyhow::Result<()> {
    let url = c.url(&job_path(id, &format!("/logs?follow={live}")));
    let resp = c
        .send(
            c.http
                .get(url)
                .header(reqwest::header::ACCEPT, "text/event-stream"),
        )
        .await?;
    let bar = (live && c.output == Output::Text).then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut stream = resp.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut event = SseEvent::default();
    let mut end: Option<Value> = None;
    'read: while let Some(chunk) = stream.next().await {
        let chunk = chunk.context("the log stream broke off")?;
        pending.extend_from_slice(&chunk);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=at).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if !line.is_empty() {
                event.field(line);
                continue;
            }
            let done = std::mem::take(&mut event);
            let data: Value = serde_json::from_str(&done.data).unwrap_or(Value::String(done.data));
            match done.name.as_str() {
                "log" => show_line(c.output, &data, bar.as_ref()),
                "end" => {
                    end = Some(data);
                    break 'read;
                }
                "error" => anyhow::bail!("the node stopped the log: {}", s(&data)),
                _ => {}
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let Some(job) = end else {
        anyhow::bail!(
            "the node closed the log of job {id} before the job ended; follow it again with `hanzo-twin jobs logs {id} --follow`"
        );
    };
    if c.output == Output::Text {
        println!("{}", job_summary(&job));
    }
    match job["state"].as_str() {
        Some("succeeded") | None => Ok(()),
        Some(state) if live => anyhow::bail!("job {id} {state}: {}", s(&job["error"])),
        Some(_) => Ok(()),
    }
}

#[derive(Default)]
struct SseEvent {
    name: String,
    data: String,
}

impl SseEvent {
    fn field(&mut self, line: &str) {
        if let Some(v) = line.strip_prefix("event:") {
            self.name = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            if !self.data.is_empty() {
                self.data.push('\n');
            }
            self.data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
}

fn show_line(output: Output, line: &Value, bar: Option<&indicatif::ProgressBar>) {
    if output == Output::Json {
        println!("{line}");
        return;
    }
    let text = format!(
        "{} [{}] {}",
        s(&line["at"]),
        s(&line["source"]),
        s(&line["message"])
    );
    match bar {
        Some(bar) if line["source"] == "progress" => {
            let data = &line["data"];
            if let (Some(steps), Some(total)) =
                (data["steps"].as_f64(), data["total_steps"].as_f64())
                && total > 0.0
            {
                bar.set_position((steps / total * 1000.0).min(1000.0) as u64);
            }
            bar.set_message(s(&line["message"]));
        }
        Some(bar) => bar.println(text),
        None => println!("{text}"),
    }
}

fn job_summary(j: &Value) -> String {
    let p = &j["progress"];
    let mut out = format!(
        "job      {}\nkind     {}\nstate    {}\nowner    {}\nprogress {} of {} steps ({:.0}%), {} episodes",
        s(&j["id"]),
        s(&j["kind"]),
        s(&j["state"]),
        s(&j["owner"]),
        s(&p["steps"]),
        s(&p["total_steps"]),
        p["fraction"].as_f64().unwrap_or(0.0) * 100.0,
        s(&p["episodes"]),
    );
    if let Some(r) = p["mean_return"].as_f64() {
        out.push_str(&format!(", mean return {r:.1}"));
    }
    if j["kind"] == "replay" && j["result"].is_object() {
        // A replay's result reads as the offline run's does.
        let r = &j["result"];
        out.push_str(&format!(
            "\nreplayed {} recorded buckets ({:.1} h from {}) through {}: {} assertion(s) failed",
            s(&r["replay"]["buckets"]),
            r["replay"]["span_s"].as_f64().unwrap_or(0.0) / 3600.0,
            s(&r["replay"]["start"]),
            s(&r["twin"]),
            s(&r["breaches"]),
        ));
        if let Some(rows) = r["experiment_rows"].as_u64() {
            out.push_str(&format!(
                "\nwrote {rows} rows to twin_experiments (experiment {})",
                s(&r["experiment"])
            ));
        }
        if r["variants"].as_array().is_some_and(|v| !v.is_empty()) {
            // Beside its what-ifs: the comparison, with each run's verdicts.
            let mut rows = r["comparison"].clone();
            let runs = std::iter::once(r).chain(r["variants"].as_array().into_iter().flatten());
            for (row, run) in rows.as_array_mut().into_iter().flatten().zip(runs) {
                row["verdicts"] = run["verdicts"].clone();
            }
            for line in super::infra::comparison_table(&rows) {
                out.push_str(&format!("\n{line}"));
            }
        } else {
            for line in super::infra::verdict_lines(&r["verdicts"], "") {
                out.push_str(&format!("\n{line}"));
            }
        }
    } else if !j["result"].is_null() {
        out.push_str(&format!("\nresult   {}", j["result"]));
    }
    if let Some(e) = j["error"].as_str() {
        out.push_str(&format!("\nerror    {e}"));
    }
    for a in j["artifacts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nartifact {} ({} bytes, {} steps)",
            s(&a["name"]),
            s(&a["bytes"]),
            s(&a["steps"])
        ));
    }
    out
}

fn job_table(v: &Value) -> String {
    let mut out = format!(
        "{:<36}  {:<8}  {:<9}  {:>6}  {:>11}  {}",
        "ID", "KIND", "STATE", "DONE", "MEAN RETURN", "OWNER"
    );
    for j in v["jobs"].as_array().into_iter().flatten() {
        let p = &j["progress"];
        out.push_str(&format!(
            "\n{:<36}  {:<8}  {:<9}  {:>5.0}%  {:>11}  {}",
            s(&j["id"]),
            s(&j["kind"]),
            s(&j["state"]),
            p["fraction"].as_f64().unwrap_or(0.0) * 100.0,
            p["mean_return"]
                .as_f64()
                .map_or("-".to_string(), |r| format!("{r:.1}")),
            s(&j["owner"]),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_take_the_specs_underscores() {
        assert_eq!(super::count("10_000_000"), Ok(10_000_000));
        assert_eq!(super::count("64"), Ok(64));
        assert!(super::count("1e6").is_err());
    }
}
