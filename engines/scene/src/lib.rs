//! The scene model of Hanzo Twin, independent of any engine.
//!
//! USD stages are read by [`usd`] into the engine-neutral [`scene::SceneModel`];
//! [`urdf`] converts robot descriptions to USD; [`tree`] plans a scene's
//! kinematic tree; [`geometry`] holds the quaternion and frame maths every
//! layer shares; [`look`] is how a scene looks (surfaces, classes,
//! lights) for rendering; [`recording`] is a twin's recorded run, exported back to USD.
//! Engine adapters (`hanzo-twin-engines`) build simulations from this model;
//! nothing here knows an engine.

pub mod geometry;
pub mod look;
pub mod recording;
pub mod scene;
pub mod tree;
pub mod urdf;
pub mod usd;

pub use scene::SceneModel;

/// What reading or checking a scene can report.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum SceneError {
    /// The scene file could not be read or parsed.
    #[error("scene {file}: {message}")]
    Read { file: String, message: String },

    /// A prim in the scene is malformed or uses a feature that would change the
    /// physics if dropped.
    #[error("scene prim {prim}: {message}")]
    Prim { prim: String, message: String },
}

/// FNV-1a over `bytes`: the checksum in front of scene fingerprints and engine
/// states, so that corruption is refused instead of restored.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What a caught panic said (its payload, when it is text). The USD reader
/// catches the parser's panics; engines catch their native libraries'.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
