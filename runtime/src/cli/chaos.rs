//! `hanzo-twin chaos inject <twin> --scenario … --target …`: a chaos
//! scenario in a running infrastructure twin on a node, now in its
//! simulated time (`POST /v1/infra/twins/{id}/inject`; admins only, and
//! audited).

use super::{Client, ClientOpts, print_value};
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub(super) enum ChaosCommand {
    /// Start a chaos scenario in an infrastructure twin now: one its
    /// definition declares (by name; the options here override it), or a
    /// new one with a target (its action read from its name, such as
    /// pod-kill or network-partition, or given).
    Inject {
        /// The twin's id or name.
        twin: String,
        /// pod-kill, network-partition, cpu-stress, disk-full,
        /// network-delay, packet-loss, or a scenario of the definition.
        #[arg(long)]
        scenario: String,
        /// deployment/<name>, statefulset/<name>, service/<name>, or
        /// node/<name> (stop_node).
        #[arg(long)]
        target: Option<String>,
        /// kill_pod, block_traffic, stress_cpu, fill_disk, delay,
        /// packet_loss or stop_node.
        #[arg(long)]
        action: Option<String>,
        /// How long it lasts (30s, 5m); a kill is instant.
        #[arg(long)]
        duration: Option<String>,
        /// kill_pod: pods killed.
        #[arg(long)]
        count: Option<u32>,
        /// stress_cpu: the CPU taken.
        #[arg(long)]
        load_percent: Option<f64>,
        /// fill_disk: how full; packet_loss: the share lost.
        #[arg(long)]
        percent: Option<f64>,
        /// delay: added one way (200ms).
        #[arg(long)]
        latency: Option<String>,
        #[arg(long)]
        jitter: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub(super) async fn command(command: ChaosCommand) -> anyhow::Result<()> {
    match command {
        ChaosCommand::Inject {
            twin,
            scenario,
            target,
            action,
            duration,
            count,
            load_percent,
            percent,
            latency,
            jitter,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "scenario": scenario });
            for (key, value) in [
                ("target", target.map(Value::from)),
                ("action", action.map(Value::from)),
                ("duration", duration.map(Value::from)),
                ("count", count.map(Value::from)),
                ("load_percent", load_percent.map(Value::from)),
                ("percent", percent.map(Value::from)),
                ("latency", latency.map(Value::from)),
                ("jitter", jitter.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let path = format!("/v1/infra/twins/{}/inject", Client::encode(&twin));
            let v = c.json(c.http.post(c.url(&path)).json(&body)).await?;
            print_value(c.output, &v, |status| injected(&twin, status));
        }
    }
    Ok(())
}

/// The fault just started, and the twin's assertions as they stand.
fn injected(twin: &str, status: &Value) -> String {
    let fault = status["faults"]
        .as_array()
        .and_then(|f| f.last())
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = format!(
        "injected {} into {twin} at {:.0} s (simulated): {} on {}",
        fault["name"].as_str().unwrap_or("?"),
        fault["at_s"].as_f64().unwrap_or(0.0),
        fault["action"]
            .as_object()
            .and_then(|a| a.keys().next().cloned())
            .or_else(|| fault["action"].as_str().map(String::from))
            .unwrap_or_default(),
        fault["target"].as_str().unwrap_or("?"),
    );
    if let Some(d) = fault["duration_s"].as_f64() {
        out += &format!(" for {d} s");
    }
    for line in super::infra::verdict_lines(&status["verdicts"], "  ") {
        out += "\n";
        out += &line;
    }
    out
}
