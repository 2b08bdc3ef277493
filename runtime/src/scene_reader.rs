//! Reading scenes in a child process. The USD library can abort the whole process
//! on a corrupt binary file (it trusts counts in the file and asks for absurd
//! allocations); a daemon must survive any file it is pointed at, so `serve`
//! reads every scene by running its own binary as `hanzo-twin internal-read-scene`.
//! The child caps its own address space first (RLIMIT_AS), so a file that
//! asks for absurd allocations costs that child, never the node's memory.

use hanzo_twin_actors::SceneReader;
use hanzo_twin_engines::{EngineError, SceneError, SceneModel};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest a scene may take to read.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// What the child reports: the scene, or the reader's error.
type Outcome = Result<SceneModel, SceneError>;

fn encode(outcome: &Outcome) -> Vec<u8> {
    // Plain owned data encodes into a Vec without failure.
    bincode::serde::encode_to_vec(outcome, bincode::config::standard()).unwrap_or_default()
}

/// The child's side: read `path` and write the outcome to stdout, after
/// capping its address space at what it has now plus `max_memory_bytes`.
pub fn child_main(path: &Path, max_memory_bytes: Option<u64>) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(extra) = max_memory_bytes {
        limit_address_space(extra)?;
    }
    let outcome = hanzo_twin_engines::scene::read_scene_file(path);
    let mut out = std::io::stdout().lock();
    out.write_all(&encode(&outcome))?;
    out.flush()
}

/// Caps this process's address space at its current size plus `extra`.
fn limit_address_space(extra: u64) -> std::io::Result<()> {
    // VmSize: the address space mapped now (the binary, its libraries).
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mapped_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let limit = mapped_kib.saturating_mul(1024).saturating_add(extra);
    rustix::process::setrlimit(
        rustix::process::Resource::As,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .map_err(std::io::Error::from)
}

/// A reader that runs `exe internal-read-scene PATH` for every scene, each
/// child allowed `max_memory_bytes` of address space beyond its start.
pub fn isolated_scene_reader(exe: PathBuf, max_memory_bytes: u64) -> SceneReader {
    isolated_scene_reader_within(exe, max_memory_bytes, READ_TIMEOUT)
}

/// [`isolated_scene_reader`] whose children are killed after `timeout` (a
/// file that makes the USD library loop costs one child that long).
pub fn isolated_scene_reader_within(
    exe: PathBuf,
    max_memory_bytes: u64,
    timeout: Duration,
) -> SceneReader {
    Arc::new(move |path: PathBuf| {
        let exe = exe.clone();
        Box::pin(async move { read_in_child(&exe, &path, max_memory_bytes, timeout).await })
    })
}

async fn read_in_child(
    exe: &Path,
    path: &Path,
    max_memory_bytes: u64,
    timeout: Duration,
) -> Result<SceneModel, EngineError> {
    let file = path.display().to_string();
    let fail = |message: String| EngineError::SceneRead {
        file: file.clone(),
        message,
    };
    let child = tokio::process::Command::new(exe)
        .arg("internal-read-scene")
        .arg(path)
        .arg("--max-memory-bytes")
        .arg(max_memory_bytes.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, child).await {
        Err(_) => {
            return Err(fail(format!(
                "reading took longer than {} s; the file is too large or malformed",
                timeout.as_secs_f64()
            )));
        }
        Ok(Err(e)) => return Err(fail(format!("cannot start the scene reader: {e}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
        // Rust's allocator names a refused allocation before it aborts.
        let stderr = String::from_utf8_lossy(&output.stderr);
        if let Some(bytes) = stderr
            .split_once("memory allocation of ")
            .and_then(|(_, rest)| rest.split_once(" bytes failed"))
            .map(|(n, _)| n)
        {
            return Err(fail(format!(
                "the USD reader crashed on this file: it asked for {bytes} bytes at once, past the {} MiB a scene reader may use (scenes.reader_memory_bytes); the file is corrupt or too large",
                max_memory_bytes >> 20
            )));
        }
        let how = match output.status.code() {
            Some(code) => format!("exit code {code}"),
            None => "killed by a signal".to_string(),
        };
        return Err(fail(format!(
            "the USD reader crashed on this file ({how}): it is corrupt or uses something the reader cannot handle"
        )));
    }
    let decoded: Result<(Outcome, usize), _> =
        bincode::serde::decode_from_slice(&output.stdout, bincode::config::standard());
    match decoded {
        Ok((outcome, _)) => outcome.map_err(EngineError::from),
        Err(e) => Err(fail(format!(
            "the scene reader's answer was unreadable: {e}"
        ))),
    }
}
