//! Reading scenes in a child process. The USD library can abort the whole process
//! on a corrupt binary file (it trusts counts in the file and asks for absurd
//! allocations); a daemon must survive any file it is pointed at, so `serve`
//! reads every scene by running its own binary as `hanzo-twin internal-read-scene`.

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

/// The child's side: read `path` and write the outcome to stdout.
pub fn child_main(path: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let outcome = hanzo_twin_engines::scene::read_scene_file(path);
    let mut out = std::io::stdout().lock();
    out.write_all(&encode(&outcome))?;
    out.flush()
}

/// A reader that runs `exe internal-read-scene PATH` for every scene.
pub fn isolated_scene_reader(exe: PathBuf) -> SceneReader {
    Arc::new(move |path: PathBuf| {
        let exe = exe.clone();
        Box::pin(async move { read_in_child(&exe, &path).await })
    })
}

async fn read_in_child(exe: &Path, path: &Path) -> Result<SceneModel, EngineError> {
    let file = path.display().to_string();
    let fail = |message: String| EngineError::SceneRead {
        file: file.clone(),
        message,
    };
    let child = tokio::process::Command::new(exe)
        .arg("internal-read-scene")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(READ_TIMEOUT, child).await {
        Err(_) => {
            return Err(fail(format!(
                "reading took longer than {} s; the file is too large or malformed",
                READ_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => return Err(fail(format!("cannot start the scene reader: {e}"))),
        Ok(Ok(output)) => output,
    };
    if !output.status.success() {
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
