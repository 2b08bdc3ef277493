//! A connection to a broker or server, as sources and publishers keep it:
//! its state in the status, its outages in the history, the backoff between
//! attempts, and the secrets it logs in with.

use super::SourceStats;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One connection's bookkeeping.
pub(super) struct Link {
    pub name: String,
    /// Where it connects: a broker's or server's URL.
    pub broker: String,
    /// What is at the other end, for people: "the MQTT broker".
    pub peer: &'static str,
    pub stats: Arc<SourceStats>,
    pub history: super::SyncHistory,
    pub backoff_ms: Vec<u64>,
    failures: usize,
    was_connected: bool,
    /// Since when the link has been without its peer, after having had it.
    down_since: Option<Instant>,
}

impl Link {
    pub fn new(
        name: String,
        broker: String,
        peer: &'static str,
        stats: Arc<SourceStats>,
        history: super::SyncHistory,
        backoff_ms: Vec<u64>,
    ) -> Link {
        Link {
            name,
            broker,
            peer,
            stats,
            history,
            backoff_ms,
            failures: 0,
            was_connected: false,
            down_since: None,
        }
    }

    /// The peer accepted the connection.
    pub fn connected(&mut self) {
        self.failures = 0;
        let reconnected = std::mem::replace(&mut self.was_connected, true);
        self.stats.update(|s| {
            s.state = "connected".into();
            s.connected_since = Some(chrono::Utc::now());
            if reconnected {
                s.reconnects += 1;
            }
        });
        match self.down_since.take() {
            Some(since) => {
                let seconds = since.elapsed().as_secs_f64();
                self.history.record(
                    Some(&self.name),
                    "gap",
                    format!("reconnected after {seconds:.2} s without {}", self.peer),
                    Some(seconds),
                );
            }
            None => self
                .history
                .record(Some(&self.name), "connected", self.broker.clone(), None),
        }
        tracing::info!(sync = %self.name, peer = self.peer, reconnected, "connected");
    }

    /// The connection failed or broke, leaving it in `connection` state
    /// (`disconnected` or `refused`) for `reason`: how long to wait before
    /// trying again.
    pub fn lost(&mut self, connection: &'static str, reason: String) -> Duration {
        self.failures += 1;
        let i = self
            .failures
            .saturating_sub(1)
            .min(self.backoff_ms.len().saturating_sub(1));
        let wait = Duration::from_millis(self.backoff_ms.get(i).copied().unwrap_or(1000));
        if self.was_connected && self.down_since.is_none() {
            self.down_since = Some(Instant::now());
        }
        self.history
            .record(Some(&self.name), connection, reason.clone(), None);
        tracing::warn!(sync = %self.name, peer = self.peer, %reason, retry_in_ms = wait.as_millis() as u64, "connection lost or refused");
        self.stats.update(|s| {
            s.state = connection.into();
            s.connected_since = None;
            s.last_error = Some(reason);
        });
        wait
    }

    pub fn stopped(&self) {
        self.stats.update(|s| {
            s.state = "disconnected".into();
            s.connected_since = None;
        });
    }
}

/// A password, from the node's environment or a file on the node; never
/// from the definition, so it is in no store, response or log.
pub(super) fn password(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(var) = env {
        return std::env::var(var)
            .map(Some)
            .map_err(|_| format!("password_env: the node has no environment variable {var}"));
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\r', '\n']).to_string()))
            .map_err(|e| format!("cannot read password_file {}: {e}", path.display()));
    }
    Ok(None)
}
