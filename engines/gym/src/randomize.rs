//! Domain randomization (HIP-0082's `domain_randomization.parameters`): the
//! ranges, and one episode's draw from them.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize};

/// The spec's parameters; each is optional.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Randomization {
    /// Sliding friction coefficient of every collider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friction: Option<Range>,
    /// Factor on every body's mass (and inertia).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass_scale: Option<Range>,
    /// Factor on the light falling on camera observations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lighting_intensity: Option<Range>,
    /// Standard deviation of Gaussian noise on camera observations, as a
    /// fraction of each pixel's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub camera_noise_stddev: Option<Range>,
    /// Delay between an action and the actuators, in milliseconds (applied in
    /// whole physics substeps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actuator_delay_ms: Option<Range>,
    /// Gravity tilted by up to this angle, about a random horizontal axis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gravity_perturbation: Option<GravityPerturbation>,
}

/// The names of the parameters, as the spec writes them.
pub const PARAMETERS: [&str; 6] = [
    "friction",
    "mass_scale",
    "lighting_intensity",
    "camera_noise_stddev",
    "actuator_delay_ms",
    "gravity_perturbation",
];

impl Randomization {
    /// The parameters that are set.
    pub fn names(&self) -> Vec<&'static str> {
        let set = [
            self.friction.is_some(),
            self.mass_scale.is_some(),
            self.lighting_intensity.is_some(),
            self.camera_noise_stddev.is_some(),
            self.actuator_delay_ms.is_some(),
            self.gravity_perturbation.is_some(),
        ];
        PARAMETERS
            .iter()
            .zip(set)
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Refuses parameters a task cannot apply, naming them: a randomization
    /// that silently does nothing would make a policy look robust when it is not.
    pub fn check_for(
        &self,
        task: &str,
        supported: &[String],
    ) -> Result<(), hanzo_twin_engines::EngineError> {
        for name in self.names() {
            if !supported.iter().any(|s| s == name) {
                return Err(hanzo_twin_engines::EngineError::Invalid {
                    field: format!("domain_randomization.parameters.{name}"),
                    message: format!(
                        "task {task} cannot apply {name}; it randomizes {}",
                        if supported.is_empty() {
                            "nothing".to_string()
                        } else {
                            supported.join(", ")
                        }
                    ),
                });
            }
        }
        Ok(())
    }

    /// One episode's values, drawn from `rng` in a fixed order.
    pub fn sample(&self, rng: &mut ChaCha8Rng, nominal_gravity: [f64; 3]) -> EpisodeParams {
        let mut draw = |r: &Option<Range>| r.map(|r| r.sample(rng));
        let friction = draw(&self.friction);
        let mass_scale = draw(&self.mass_scale);
        let lighting_intensity = draw(&self.lighting_intensity);
        let camera_noise_stddev = draw(&self.camera_noise_stddev);
        let actuator_delay_ms = draw(&self.actuator_delay_ms);
        let gravity = self.gravity_perturbation.map(|g| {
            let angle = rng.random_range(0.0..=g.max_angle_deg).to_radians();
            let azimuth = rng.random_range(0.0..std::f64::consts::TAU);
            tilt(nominal_gravity, angle, azimuth)
        });
        EpisodeParams {
            friction,
            mass_scale,
            lighting_intensity,
            camera_noise_stddev,
            actuator_delay_ms,
            gravity,
        }
    }
}

/// Tilts `g` by `angle` about the horizontal axis at `azimuth` (horizontal
/// meaning perpendicular to `g`).
fn tilt(g: [f64; 3], angle: f64, azimuth: f64) -> [f64; 3] {
    let m = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
    if m == 0.0 || angle == 0.0 {
        return g;
    }
    let d = [g[0] / m, g[1] / m, g[2] / m];
    // Two unit vectors perpendicular to d.
    let helper = if d[0].abs() < 0.9 {
        [1.0, 0.0, 0.0]
    } else {
        [0.0, 1.0, 0.0]
    };
    let u = normalized(cross(d, helper));
    let v = cross(d, u);
    let axis = [
        u[0] * azimuth.cos() + v[0] * azimuth.sin(),
        u[1] * azimuth.cos() + v[1] * azimuth.sin(),
        u[2] * azimuth.cos() + v[2] * azimuth.sin(),
    ];
    // Rodrigues: d is perpendicular to the axis.
    let w = cross(axis, d);
    let (s, c) = angle.sin_cos();
    [
        m * (d[0] * c + w[0] * s),
        m * (d[1] * c + w[1] * s),
        m * (d[2] * c + w[2] * s),
    ]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn normalized(a: [f64; 3]) -> [f64; 3] {
    let n = (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt();
    [a[0] / n, a[1] / n, a[2] / n]
}

/// One episode's randomization, reported in `info` so a result can be tied
/// to the conditions it met.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EpisodeParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mass_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lighting_intensity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_noise_stddev: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actuator_delay_ms: Option<f64>,
    /// The gravity vector of this episode, m/s².
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gravity: Option<[f64; 3]>,
}

impl EpisodeParams {
    /// The delay in whole substeps of `timestep` seconds.
    pub fn delay_substeps(&self, timestep: f64) -> usize {
        self.actuator_delay_ms
            .map_or(0, |ms| (ms / 1000.0 / timestep).round() as usize)
    }

    /// Whether the physical model itself changes (not only what is observed).
    pub fn changes_model(&self) -> bool {
        self.friction.is_some() || self.mass_scale.is_some() || self.gravity.is_some()
    }
}

/// A closed interval `min <= max` of finite, non-negative numbers.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

impl Range {
    fn sample(self, rng: &mut ChaCha8Rng) -> f64 {
        if self.min == self.max {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

impl<'de> Deserialize<'de> for Range {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            min: f64,
            max: f64,
        }
        let r = Raw::deserialize(d)?;
        if !r.min.is_finite() || !r.max.is_finite() || r.min < 0.0 || r.min > r.max {
            return Err(serde::de::Error::custom(format!(
                "range needs finite 0 <= min <= max, got min {} max {}",
                r.min, r.max
            )));
        }
        Ok(Range {
            min: r.min,
            max: r.max,
        })
    }
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GravityPerturbation {
    pub max_angle_deg: f64,
}

impl<'de> Deserialize<'de> for GravityPerturbation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            max_angle_deg: f64,
        }
        let r = Raw::deserialize(d)?;
        if !(0.0..=90.0).contains(&r.max_angle_deg) {
            return Err(serde::de::Error::custom(format!(
                "max_angle_deg must be between 0 and 90, got {}",
                r.max_angle_deg
            )));
        }
        Ok(GravityPerturbation {
            max_angle_deg: r.max_angle_deg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tilted_gravity_keeps_its_magnitude_and_stays_within_the_angle() {
        let r = Randomization {
            gravity_perturbation: Some(GravityPerturbation { max_angle_deg: 2.0 }),
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let g = r
                .sample(&mut rng, [0.0, 0.0, -9.81])
                .gravity
                .unwrap_or_default();
            let m = (g[0] * g[0] + g[1] * g[1] + g[2] * g[2]).sqrt();
            assert!((m - 9.81).abs() < 1e-9);
            let angle = (-g[2] / m).acos().to_degrees();
            assert!(angle <= 2.0 + 1e-9, "{angle}");
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_episode() {
        let r = Randomization {
            friction: Some(Range { min: 0.3, max: 0.9 }),
            mass_scale: Some(Range { min: 0.8, max: 1.2 }),
            actuator_delay_ms: Some(Range {
                min: 0.0,
                max: 20.0,
            }),
            ..Default::default()
        };
        let a = r.sample(&mut ChaCha8Rng::seed_from_u64(3), [0.0, 0.0, -9.81]);
        let b = r.sample(&mut ChaCha8Rng::seed_from_u64(3), [0.0, 0.0, -9.81]);
        assert_eq!(a, b);
        let f = a.friction.unwrap_or_default();
        assert!((0.3..=0.9).contains(&f));
        let c = r.sample(&mut ChaCha8Rng::seed_from_u64(4), [0.0, 0.0, -9.81]);
        assert_ne!(a, c);
    }
}
