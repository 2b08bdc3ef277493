//! Live sync, end to end, beside the broker alone.
//!
//! * `bare`: a client publishes at 1,000 messages/s (QoS 1) to a loopback
//!   mosquitto and another client receives them: the round trip that any
//!   twin pays, the floor.
//! * `twin`: the same stream goes to a running twin's MQTT source; the twin
//!   applies each reading, and its MQTT publisher sends a prediction (which
//!   carries the latest reading) at `rate_hz` 1000. Latency is from the
//!   reading's publish to the first prediction that carries it; loss is
//!   readings sent that the source never counted.
//! * `capacity`: twins of the sample arm, each with its own source at
//!   100 Hz, in growing numbers; a count holds while no reading is lost or
//!   dropped and none waits past the spec's 50 ms budget before its twin
//!   applies it.
//!
//!   cargo bench --bench sync_latency                 (20 s per stream)
//!   HANZO_TWIN_SYNC_S=60 cargo bench --bench sync_latency
//!
//! Run as a test (`cargo test --benches`) each phase lasts about a second.
//! Needs mosquitto (scripts/test.sh installs it).

mod common;

use hanzo_twin::Node;
use hanzo_twin::actors::{Clock, Format, TwinDefinition, TwinNode};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";
/// The spec's latency budget for a reading.
const BUDGET_MS: u64 = 50;

fn main() {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let seconds = std::env::var("HANZO_TWIN_SYNC_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benchmarking { 20.0 } else { 1.0 });
    if !Path::new(MOSQUITTO).exists() {
        // Loud: scripts/test.sh installs mosquitto, so this only happens
        // where the test script was not run.
        eprintln!("sync_latency: SKIPPED, no {MOSQUITTO} (scripts/test.sh installs mosquitto)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::start(dir.path());
    let rt = common::runtime();
    rt.block_on(async {
        let run = Duration::from_secs_f64(seconds);
        println!(
            "sync_latency: QoS 1 on loopback mosquitto, 1000 messages/s for {:.0} s",
            run.as_secs_f64()
        );
        let bare = bare_round_trip(broker.port, run).await;
        bare.print("bare mosquitto round trip");

        let data = tempfile::tempdir().expect("tempdir");
        let mut config = common::node_config(data.path());
        config.logging.level = "warn".into();
        let node = Node::start(config).await.expect("node");
        let twins = node.twins();
        let twin = through_a_twin(&twins, broker.port, run).await;
        twin.print("sensor → twin → prediction");
        println!(
            "  p50 ratio twin/bare {:.1}×, p99 ratio {:.1}×",
            twin.p50_ms() / bare.p50_ms().max(1e-6),
            twin.p99_ms() / bare.p99_ms().max(1e-6)
        );

        let counts: &[usize] = if benchmarking {
            &[25, 50, 100, 200, 400]
        } else {
            &[2]
        };
        let per_count = if benchmarking {
            run.min(Duration::from_secs(10))
        } else {
            run
        };
        let mut kept = 0;
        for &count in counts {
            let held = in_sync_at_100_hz(&twins, broker.port, count, per_count).await;
            if !held {
                break;
            }
            kept = count;
        }
        println!("  twins kept in sync at 100 Hz each: {kept} (of the counts tried: {counts:?})");
        node.shutdown().await;
    });
}

/// Latencies and loss of one stream.
struct Stream {
    latencies_us: Vec<u64>,
    sent: u64,
    lost: u64,
}

impl Stream {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i] as f64 / 1000.0
    }

    fn p50_ms(&self) -> f64 {
        self.percentile_ms(0.5)
    }

    fn p99_ms(&self) -> f64 {
        self.percentile_ms(0.99)
    }

    fn print(&self, what: &str) {
        println!(
            "  {what:<28} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  ({} samples; {} sent, {} lost)",
            self.p50_ms(),
            self.p99_ms(),
            self.percentile_ms(1.0),
            self.latencies_us.len(),
            self.sent,
            self.lost
        );
    }
}

/// Microseconds since the bench started: what a reading carries, so the
/// receiver knows when it was sent.
fn now_us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

fn client(port: u16, id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(1000);
    AsyncClient::new(options, 10_000)
}

/// Polls `eventloop` until its connection is acknowledged, then in a task
/// of its own, handing each publish to `on_publish`.
async fn drive(
    mut eventloop: EventLoop,
    mut on_publish: impl FnMut(&str, &[u8]) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("cannot connect to mosquitto: {e}"),
        }
    }
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => on_publish(&p.topic, &p.payload),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
}

/// Publishes `payload()` to `topics` in turn at `rate` messages/s for `run`;
/// the number sent.
async fn paced(
    client: &AsyncClient,
    topics: &[String],
    rate: f64,
    run: Duration,
    payload: impl Fn() -> String,
) -> u64 {
    // Ticks of at least a millisecond (tokio's timer resolution), each
    // sending what is due by then.
    let tick = Duration::from_secs_f64((1.0 / rate).max(0.001));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < run {
        interval.tick().await;
        let due = (rate * started.elapsed().as_secs_f64()).ceil() as u64;
        while sent < due {
            let topic = &topics[(sent % topics.len() as u64) as usize];
            client
                .publish(topic, QoS::AtLeastOnce, false, payload())
                .await
                .expect("publish");
            sent += 1;
        }
    }
    sent
}

/// Waits (at most `limit`) until `done` holds.
async fn until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn bare_round_trip(port: u16, run: Duration) -> Stream {
    let epoch = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let received = Arc::new(AtomicU64::new(0));
    let (subscriber, events) = client(port, "bench-bare-sub");
    let task = {
        let (latencies, received) = (latencies.clone(), received.clone());
        drive(events, move |_, payload| {
            if let Some(sent) = std::str::from_utf8(payload)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
            {
                latencies
                    .lock()
                    .expect("latencies")
                    .push(now_us(epoch) - sent);
                received.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    };
    subscriber
        .subscribe("bench/echo", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (publisher, events) = client(port, "bench-bare-pub");
    let publishing = drive(events, |_, _| {}).await;
    // The subscription is in place once a probe comes back.
    let probe = received.load(Ordering::Relaxed);
    let _ = until(Duration::from_secs(10), async || {
        let _ = publisher
            .publish("bench/echo", QoS::AtLeastOnce, false, "probe")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        received.load(Ordering::Relaxed) > probe
    })
    .await;
    latencies.lock().expect("latencies").clear();
    received.store(0, Ordering::Relaxed);
    let sent = paced(&publisher, &["bench/echo".to_string()], 1000.0, run, || {
        now_us(epoch).to_string()
    })
    .await;
    until(Duration::from_secs(10), async || {
        received.load(Ordering::Relaxed) >= sent
    })
    .await;
    task.abort();
    publishing.abort();
    let latencies_us = std::mem::take(&mut *latencies.lock().expect("latencies"));
    Stream {
        lost: sent.saturating_sub(received.load(Ordering::Relaxed)),
        sent,
        latencies_us,
    }
}

/// The sample arm with an MQTT source on `plant` (a number per message,
/// mapped to a link's temperature) and, with `publish_to`, an MQTT
/// publisher of predictions at 1000 Hz.
fn synced_arm(name: &str, port: u16, plant: &str, publish_to: Option<&str>) -> TwinDefinition {
    let mut definition = json!({
        "name": name,
        "scene": { "uri": "robot-arm/scene.usda" },
        "engine": { "type": "rapier3d", "config": { "step_hz": 240, "substeps": 2 } },
        "sync": {
            "mode": "realtime",
            "rate_hz": 1000,
            "latency_budget_ms": BUDGET_MS,
            "sources": [{
                "type": "mqtt",
                "name": "plant",
                "broker": format!("mqtt://127.0.0.1:{port}"),
                "topic": format!("{plant}/#"),
                "qos": 1,
                "payload": "number",
                "mapping": { "temp": "/World/Arm/Link1.temperature" }
            }]
        }
    });
    if let Some(topic) = publish_to {
        definition["sync"]["publish"] = json!([{
            "type": "mqtt",
            "broker": format!("mqtt://127.0.0.1:{port}"),
            "topic": topic,
            "qos": 1
        }]);
    }
    TwinDefinition::parse(&definition.to_string(), Format::Json).expect("valid definition")
}

/// Creates and starts twins, waiting until each source is connected.
async fn start_synced(twins: &TwinNode, definitions: Vec<TwinDefinition>) -> Vec<String> {
    let mut ids = Vec::new();
    for definition in definitions {
        ids.push(common::create_started(twins, definition, Clock::Realtime).await);
    }
    for id in &ids {
        let connected = until(Duration::from_secs(30), async || {
            twins.sync_status(id).await.is_ok_and(|s| {
                s.sources.iter().all(|x| x.state == "connected")
                    && s.publishers.iter().all(|x| x.state == "connected")
            })
        })
        .await;
        assert!(connected, "twin {id}'s source never connected");
    }
    ids
}

/// Readings the twin's source counted, and readings dropped or late.
async fn counted(twins: &TwinNode, id: &str) -> (u64, u64, u64) {
    let status = twins.sync_status(id).await.expect("sync status");
    let messages = status.sources.iter().map(|s| s.messages).sum();
    (messages, status.buffer.dropped, status.buffer.late)
}

async fn through_a_twin(twins: &TwinNode, port: u16, run: Duration) -> Stream {
    let definition = synced_arm("sync-bench", port, "bench/plant", Some("bench/twin/out"));
    let ids = start_synced(twins, vec![definition]).await;
    let id = &ids[0];
    let epoch = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let newest = Arc::new(AtomicU64::new(0));
    let (subscriber, events) = client(port, "bench-twin-sub");
    let task = {
        let (latencies, newest) = (latencies.clone(), newest.clone());
        drive(events, move |_, payload| {
            let Ok(prediction) = serde_json::from_slice::<serde_json::Value>(payload) else {
                return;
            };
            let carried = prediction["predictions"]
                .as_array()
                .and_then(|p| {
                    p.iter()
                        .find(|r| r["target"] == "/World/Arm/Link1.temperature")
                })
                .and_then(|r| r["value"].as_f64());
            // Each reading counts once: when a prediction first carries it.
            if let Some(sent) = carried.map(|v| v as u64)
                && newest.fetch_max(sent, Ordering::Relaxed) < sent
            {
                latencies
                    .lock()
                    .expect("latencies")
                    .push(now_us(epoch).saturating_sub(sent));
            }
        })
        .await
    };
    subscriber
        .subscribe("bench/twin/out", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (publisher, events) = client(port, "bench-twin-pub");
    let publishing = drive(events, |_, _| {}).await;
    // Predictions flow once a first reading has been carried.
    let primed = until(Duration::from_secs(10), async || {
        let _ = publisher
            .publish("bench/plant/temp", QoS::AtLeastOnce, false, "1")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        newest.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(primed, "no prediction ever carried a reading");
    latencies.lock().expect("latencies").clear();
    let (before, _, _) = counted(twins, id).await;
    let sent = paced(
        &publisher,
        &["bench/plant/temp".to_string()],
        1000.0,
        run,
        || now_us(epoch).to_string(),
    )
    .await;
    let _ = until(Duration::from_secs(10), async || {
        counted(twins, id).await.0 >= before + sent
    })
    .await;
    let (after, dropped, _) = counted(twins, id).await;
    let status = twins.sync_status(id).await.expect("sync status");
    let predictions: u64 = status.publishers.iter().map(|p| p.messages).sum();
    println!(
        "  the twin published {predictions} predictions ({:.0}/s of 1000/s asked)",
        predictions as f64 / run.as_secs_f64()
    );
    task.abort();
    publishing.abort();
    twins.delete(id).await.expect("delete");
    let latencies_us = std::mem::take(&mut *latencies.lock().expect("latencies"));
    Stream {
        lost: sent.saturating_sub(after - before) + dropped,
        sent,
        latencies_us,
    }
}

/// Whether `count` twins each fed at 100 Hz keep up: every reading counted,
/// none dropped, none past the budget.
async fn in_sync_at_100_hz(twins: &TwinNode, port: u16, count: usize, run: Duration) -> bool {
    let definitions = (0..count)
        .map(|i| {
            synced_arm(
                &format!("sync-capacity-{i}"),
                port,
                &format!("fleet/{i}"),
                None,
            )
        })
        .collect();
    let ids = start_synced(twins, definitions).await;
    let topics: Vec<String> = (0..count).map(|i| format!("fleet/{i}/temp")).collect();
    let (publisher, events) = client(port, &format!("bench-fleet-{count}"));
    let publishing = drive(events, |_, _| {}).await;
    let sent = paced(&publisher, &topics, 100.0 * count as f64, run, || {
        "21.5".to_string()
    })
    .await;
    let _ = until(Duration::from_secs(10), async || {
        let mut all = 0;
        for id in &ids {
            all += counted(twins, id).await.0;
        }
        all >= sent
    })
    .await;
    let (mut messages, mut dropped, mut late) = (0, 0, 0);
    for id in &ids {
        let (m, d, l) = counted(twins, id).await;
        messages += m;
        dropped += d;
        late += l;
    }
    publishing.abort();
    for id in &ids {
        twins.delete(id).await.expect("delete");
    }
    let lost = sent.saturating_sub(messages);
    let held = lost == 0 && dropped == 0 && late == 0;
    println!(
        "  {count:>4} twins at 100 Hz: {sent} readings, {lost} lost, {dropped} dropped, {late} past {BUDGET_MS} ms: {}",
        if held { "in sync" } else { "falling behind" }
    );
    held
}

/// mosquitto on a free loopback port; killed when dropped.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(dir: &Path) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let conf: PathBuf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n"
            ),
        )
        .expect("write config");
        {
            // mosquitto started as root drops to its own user, which must
            // read the configuration.
            use std::os::unix::fs::PermissionsExt;
            for (path, mode) in [(dir, 0o755), (conf.as_path(), 0o644)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
        }
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto never listened on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Broker { child, port }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
