//! How the stage looks: each collider's `UsdPreviewSurface` (or
//! `primvars:displayColor`), its semantic class, and the UsdLux lights.
//! Nothing here changes the physics; what cannot be drawn yet is noted in
//! [`SceneLook::notes`] rather than refused.

use openusd::schemas::shade::{self, Channel, MaterialBindingAPI};
use openusd::sdf::{self, Value};

use super::{Reader, lineage, values};
use crate::SceneError;
use crate::look::{Light, LightKind, SceneLook, ShapeLook, Surface};
use crate::scene::Body;

/// Material bindings resolve for this purpose first, then for all purposes
/// (a physics-purpose binding never colours a shape).
const RENDER_PURPOSE: &str = "preview";

impl Reader {
    pub(super) fn look(&mut self, bodies: &[Body]) -> Result<SceneLook, SceneError> {
        let mut look = SceneLook::default();
        for collider in bodies.iter().flat_map(|b| &b.colliders) {
            let path = sdf::Path::new(&collider.path)
                .map_err(|e| self.prim_err(&sdf::Path::abs_root(), format!("{e:#}")))?;
            let surface = self.surface(&path, &mut look.notes)?;
            let class = self.class(&path)?;
            if surface.is_some() || class.is_some() {
                look.shapes.push(ShapeLook {
                    collider: collider.path.clone(),
                    surface: surface.unwrap_or_default(),
                    class,
                });
            }
        }
        for i in 0..self.prims.len() {
            let path = self.prims[i].path.clone();
            let kind = match self.prims[i].type_name.as_str() {
                "DistantLight" => LightKind::Distant {
                    angle_deg: self.light_f64(&path, "angle", 0.53)?,
                },
                "SphereLight" => LightKind::Sphere {
                    radius: self.light_f64(&path, "radius", 0.5)? * self.meters_per_unit,
                },
                "RectLight" => LightKind::Rect {
                    width: self.light_f64(&path, "width", 1.0)? * self.meters_per_unit,
                    height: self.light_f64(&path, "height", 1.0)? * self.meters_per_unit,
                },
                "DiskLight" => LightKind::Disk {
                    radius: self.light_f64(&path, "radius", 0.5)? * self.meters_per_unit,
                },
                "DomeLight" | "DomeLight_1" => {
                    if self.value(&path, "inputs:texture:file")?.is_some() {
                        look.notes.push(format!(
                            "{path}: the dome's texture is not drawn; its colour lights the scene evenly"
                        ));
                    }
                    LightKind::Dome
                }
                t @ ("CylinderLight" | "GeometryLight" | "PortalLight") => {
                    look.notes.push(format!("{path}: {t}s are not drawn"));
                    continue;
                }
                _ => continue,
            };
            look.lights.push(self.light(&path, kind)?);
        }
        Ok(look)
    }

    /// A UsdLux input, by its current name (`inputs:x`) or the name before
    /// USD 21 (`x`).
    fn light_f64(&self, path: &sdf::Path, name: &str, fallback: f64) -> Result<f64, SceneError> {
        let v = match self.f64_attr(path, &format!("inputs:{name}"))? {
            Some(v) => v,
            None => self.f64_attr(path, name)?.unwrap_or(fallback),
        };
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(self.prim_err(
                path,
                format!("inputs:{name} must be non-negative, found {v}"),
            ))
        }
    }

    fn light(&mut self, path: &sdf::Path, kind: LightKind) -> Result<Light, SceneError> {
        let intensity = self.light_f64(path, "intensity", 1.0)?;
        let exposure = match self.f64_attr(path, "inputs:exposure")? {
            Some(v) => v,
            None => self.f64_attr(path, "exposure")?.unwrap_or(0.0),
        };
        let exposure = self.finite(path, "inputs:exposure", exposure)?;
        let color = match self.vec3_attr(path, "inputs:color")? {
            Some(c) => c,
            None => self.vec3_attr(path, "color")?.unwrap_or([1.0; 3]),
        };
        let mut color = self.colour(path, "inputs:color", color)?;
        let by_temperature = self.bool_attr(path, "inputs:enableColorTemperature")?;
        if by_temperature == Some(true) {
            let kelvin = self.light_f64(path, "colorTemperature", 6500.0)?;
            let tint = crate::look::blackbody_rgb(kelvin);
            color = [color[0] * tint[0], color[1] * tint[1], color[2] * tint[2]];
        }
        let d = self.decomposed(path)?;
        Ok(Light {
            path: path.as_str().to_string(),
            kind,
            pose: self.pose_of(&d),
            color,
            intensity: intensity * exposure.exp2(),
        })
    }

    fn colour(&self, path: &sdf::Path, name: &str, c: [f64; 3]) -> Result<[f64; 3], SceneError> {
        if c.iter().all(|x| x.is_finite() && *x >= 0.0) {
            Ok(c)
        } else {
            Err(self.prim_err(
                path,
                format!("{name} must be non-negative and finite, found {c:?}"),
            ))
        }
    }

    /// The surface of the material bound to `path` for rendering, or its
    /// `primvars:displayColor`; `None` when neither is authored.
    fn surface(
        &self,
        path: &sdf::Path,
        notes: &mut Vec<String>,
    ) -> Result<Option<Surface>, SceneError> {
        if let Some(material) = self.bound_material(path)? {
            let read = shade::read_preview_surface(&self.stage, &material).map_err(|e| {
                self.prim_err(&material, format!("cannot read the material: {e:#}"))
            })?;
            match read {
                Some(ps) => return Ok(Some(self.preview_surface(&material, &ps, notes)?)),
                None => notes.push(format!(
                    "{material}: not a UsdPreviewSurface material; {path} is drawn with its displayColor or grey"
                )),
            }
        }
        let Some(colors) = self.value(path, "primvars:displayColor")? else {
            return Ok(None);
        };
        let first = values::vec3_array(&colors)
            .and_then(|c| c.first().copied())
            .or_else(|| values::vec3(&colors));
        match first {
            Some(c) => Ok(Some(Surface {
                diffuse_color: self.colour(path, "primvars:displayColor", c)?,
                ..Surface::default()
            })),
            None => Err(self.prim_err(
                path,
                format!(
                    "primvars:displayColor should be colours, found {}",
                    values::type_name(&colors)
                ),
            )),
        }
    }

    /// The material bound for rendering, resolved from the nearest prim up
    /// the namespace that has `MaterialBindingAPI`.
    fn bound_material(&self, path: &sdf::Path) -> Result<Option<sdf::Path>, SceneError> {
        for prim in lineage(path) {
            let api = MaterialBindingAPI::get(&self.stage, prim.clone())
                .map_err(|e| self.prim_err(&prim, format!("cannot read its bindings: {e:#}")))?;
            if let Some(api) = api {
                let bound = api.compute_bound_material(RENDER_PURPOSE).map_err(|e| {
                    self.prim_err(&prim, format!("cannot resolve its material: {e:#}"))
                })?;
                if let Some(material) = bound {
                    return Ok(self
                        .index
                        .contains_key(material.as_str())
                        .then_some(material));
                }
            }
        }
        Ok(None)
    }

    fn preview_surface(
        &self,
        material: &sdf::Path,
        ps: &shade::ReadPreviewSurface,
        notes: &mut Vec<String>,
    ) -> Result<Surface, SceneError> {
        let fallback = Surface::default();
        let mut texture = |input: &str, file: &str| {
            notes.push(format!(
                "{material}: the {input} texture {file} is not drawn; the input's fallback is used"
            ));
        };
        let colour = |input: &str, c: &Channel<openusd::gf::Vec3f>, fallback: [f64; 3]| match c {
            Channel::Value(v) => self.colour(material, input, [v.x, v.y, v.z].map(f64::from)),
            _ => Ok(fallback),
        };
        let unit = |input: &str, c: &Channel<f32>, fallback: f64| match c {
            Channel::Value(v) if v.is_finite() && (0.0..=1.0).contains(v) => Ok(f64::from(*v)),
            Channel::Value(v) => Err(self.prim_err(
                material,
                format!("inputs:{input} must be between 0 and 1, found {v}"),
            )),
            _ => Ok(fallback),
        };
        for (input, file) in [
            ("diffuseColor", ps.diffuse_color.texture()),
            ("roughness", ps.roughness.texture()),
            ("metallic", ps.metallic.texture()),
            ("emissiveColor", ps.emissive_color.texture()),
        ] {
            if let Some(file) = file {
                texture(input, file);
            }
        }
        Ok(Surface {
            diffuse_color: colour(
                "inputs:diffuseColor",
                &ps.diffuse_color,
                fallback.diffuse_color,
            )?,
            emissive_color: colour(
                "inputs:emissiveColor",
                &ps.emissive_color,
                fallback.emissive_color,
            )?,
            roughness: unit("roughness", &ps.roughness, fallback.roughness)?,
            metallic: unit("metallic", &ps.metallic, fallback.metallic)?,
        })
    }

    /// The semantic class of `path` or its nearest labelled ancestor.
    fn class(&self, path: &sdf::Path) -> Result<Option<String>, SceneError> {
        for prim in lineage(path) {
            if let Some(label) = self
                .value(&prim, "semantics:labels:class")?
                .as_ref()
                .and_then(first_label)
            {
                return Ok(Some(label));
            }
            // Isaac Sim's older SemanticsAPI: `semantic:<name>:params:semanticType`
            // says which taxonomy `semanticData` is in.
            let names = self
                .stage
                .prim(prim.clone())
                .property_names()
                .map_err(|e| self.prim_err(&prim, format!("cannot list its properties: {e:#}")))?;
            for name in names {
                let Some(instance) = name
                    .as_str()
                    .strip_prefix("semantic:")
                    .and_then(|n| n.strip_suffix(":params:semanticType"))
                else {
                    continue;
                };
                if self.token_attr(&prim, name.as_str())?.as_deref() != Some("class") {
                    continue;
                }
                let data = format!("semantic:{instance}:params:semanticData");
                if let Some(label) = self.value(&prim, &data)?.as_ref().and_then(first_label) {
                    return Ok(Some(label));
                }
            }
        }
        Ok(None)
    }
}

fn first_label(v: &Value) -> Option<String> {
    let label = match v {
        Value::TokenVec(t) => t.first().map(|t| t.as_str().to_string()),
        Value::StringVec(s) => s.first().cloned(),
        other => values::token(other).map(str::to_string),
    }?;
    (!label.is_empty()).then_some(label)
}
