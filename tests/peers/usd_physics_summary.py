#!/usr/bin/env python3
"""Checks scene files with the reference USD implementation (PyPI usd-core).

    python3 -m venv .venv && .venv/bin/pip install usd-core
    .venv/bin/python tests/peers/usd_physics_summary.py [--json] [scene.usda ...]

Opens each stage, fails on composition errors, and runs UsdPhysics' own parser
(UsdPhysics.UsdPhysicsLoadStageFromPrimRange) over it. Prints what UsdPhysics sees (or, with
--json, a summary in the scene model's units: metres, radians, [x, y, z, w]
quaternions, angular drive gains per radian) so it can be compared with what
hanzo-twin-engines' reader gives. With no files it checks the sample scenes
in configs/scenes and asserts the facts their READMEs and tests rely on.
"""

import json
import math
import sys
from pathlib import Path

from pxr import Gf, Usd, UsdGeom, UsdLux, UsdPhysics, UsdShade

HERE = Path(__file__).resolve().parents[2] / "configs" / "scenes"
DEG = math.pi / 180


def xyzw(q):
    i = q.GetImaginary()
    return [i[0], i[1], i[2], q.GetReal()]


def vec(v):
    return [float(x) for x in v]


def summarize(path):
    stage = Usd.Stage.Open(str(path))
    if stage is None:
        raise SystemExit(f"{path}: cannot open")
    errors = [str(e) for e in stage.GetCompositionErrors()]
    if errors:
        raise SystemExit(f"{path}: composition errors: {errors}")
    # Renamed in usd-core 26; the old name still works but warns.
    load = getattr(UsdPhysics, "UsdPhysicsLoadStageFromPrimRange", None) or UsdPhysics.LoadUsdPhysicsFromRange
    parsed = load(stage, ["/"])

    out = {"gravity": None, "bodies": {}, "shapes": {}, "joints": {}, "materials": {}}
    for kind, (paths, descs) in parsed.items():
        kind = str(kind).split(".")[-1]
        for p, d in zip(paths, descs):
            p = str(p)
            if kind == "Scene":
                g = d.gravityDirection * d.gravityMagnitude
                if out["gravity"] is None:
                    out["gravity"] = vec(g)
            elif kind == "RigidBodyMaterial":
                out["materials"][p] = {
                    "static_friction": d.staticFriction,
                    "dynamic_friction": d.dynamicFriction,
                    "restitution": d.restitution,
                }
            elif kind == "RigidBody":
                prim = stage.GetPrimAtPath(p)
                mass = prim.GetAttribute("physics:mass").Get() if prim.HasAPI(UsdPhysics.MassAPI) else None
                out["bodies"][p] = {
                    "kind": "Static" if not d.rigidBodyEnabled else ("Kinematic" if d.kinematicBody else "Dynamic"),
                    "position": vec(d.position),
                    "rotation": xyzw(d.rotation),
                    "mass": mass,
                    "colliders": sorted(str(c) for c in d.collisions),
                }
            elif kind.endswith("Shape"):
                shape = {
                    "type": kind,
                    "body": str(d.rigidBody) or None,
                    "local_pos": vec(d.localPos),
                    "local_rot": xyzw(d.localRot),
                    "materials": [str(m) for m in d.materials],
                }
                for attr in ("halfExtents", "radius", "halfHeight", "axis"):
                    if hasattr(d, attr):
                        v = getattr(d, attr)
                        shape[attr] = vec(v) if attr == "halfExtents" else (str(v).split(".")[-1] if attr == "axis" else v)
                out["shapes"][p] = shape
            elif kind.endswith("Joint"):
                joint = {
                    "type": kind,
                    "body0": str(d.body0) or None,
                    "body1": str(d.body1) or None,
                    "local_pos0": vec(d.localPose0Position),
                    "local_rot0": xyzw(d.localPose0Orientation),
                    "local_pos1": vec(d.localPose1Position),
                    "local_rot1": xyzw(d.localPose1Orientation),
                }
                if hasattr(d, "axis"):
                    joint["axis"] = str(d.axis).split(".")[-1]
                if hasattr(d, "limit"):
                    unit = DEG if kind in ("RevoluteJoint", "SphericalJoint") else 1.0
                    if d.limit.enabled:
                        joint["limits"] = [d.limit.lower * unit, d.limit.upper * unit]
                if hasattr(d, "drive") and d.drive.enabled:
                    ang = kind == "RevoluteJoint"
                    joint["drive"] = {
                        "stiffness": d.drive.stiffness / DEG if ang else d.drive.stiffness,
                        "damping": d.drive.damping / DEG if ang else d.drive.damping,
                        "target_position": d.drive.targetPosition * (DEG if ang else 1.0),
                        "target_velocity": d.drive.targetVelocity * (DEG if ang else 1.0),
                        "max_force": d.drive.forceLimit if math.isfinite(d.drive.forceLimit) else None,
                        "acceleration": d.drive.acceleration,
                    }
                out["joints"][p] = joint
    out["looks"] = looks(stage, list(out["shapes"]))
    out["lights"] = lights(stage)
    return stage, out


def looks(stage, shapes):
    """Each collider's surface as a renderer sees it: the UsdPreviewSurface
    bound for the preview purpose, or the displayColor; and its class."""
    out = {}
    for path in shapes:
        prim = stage.GetPrimAtPath(path)
        surface = None
        material, _ = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial(UsdShade.Tokens.preview)
        if material:
            shader = material.ComputeSurfaceSource()[0]
            if shader and shader.GetIdAttr().Get() == "UsdPreviewSurface":
                def value(name, fallback):
                    i = shader.GetInput(name)
                    v = i.Get() if i and not i.HasConnectedSource() else None
                    return fallback if v is None else v
                surface = {
                    "diffuse_color": vec(value("diffuseColor", Gf.Vec3f(0.18))),
                    "roughness": float(value("roughness", 0.5)),
                    "metallic": float(value("metallic", 0.0)),
                }
        if surface is None:
            colours = UsdGeom.Gprim(prim).GetDisplayColorAttr().Get() if prim.IsA(UsdGeom.Gprim) else None
            if colours:
                surface = {"diffuse_color": vec(colours[0]), "roughness": 0.5, "metallic": 0.0}
        label = None
        p = prim
        while p and p.GetPath() != p.GetPath().absoluteRootPath and label is None:
            a = p.GetAttribute("semantics:labels:class")
            if a and a.Get():
                label = str(a.Get()[0])
            for attr in p.GetAttributes():
                n = attr.GetName()
                if label is None and n.startswith("semantic:") and n.endswith(":params:semanticType") and attr.Get() == "class":
                    label = str(p.GetAttribute(n.replace("semanticType", "semanticData")).Get())
            p = p.GetParent()
        out[path] = {"surface": surface, "class": label}
    return out


def lights(stage):
    """UsdLux lights: kind, radiance (intensity · 2^exposure), colour, where
    they are and which way they shine (local -Z)."""
    out = {}
    for prim in stage.Traverse():
        if not prim.HasAPI(UsdLux.LightAPI):
            continue
        light = UsdLux.LightAPI(prim)
        m = UsdGeom.Xformable(prim).ComputeLocalToWorldTransform(Usd.TimeCode.Default())
        shine = m.TransformDir(Gf.Vec3d(0, 0, -1)).GetNormalized()
        colour = light.GetColorAttr().Get()
        if light.GetEnableColorTemperatureAttr().Get():
            colour = Gf.CompMult(Gf.Vec3f(colour), UsdLux.BlackbodyTemperatureAsRgb(light.GetColorTemperatureAttr().Get()))
        out[str(prim.GetPath())] = {
            "type": prim.GetTypeName(),
            "intensity": light.GetIntensityAttr().Get() * 2 ** light.GetExposureAttr().Get(),
            "color": vec(colour),
            "position": vec(m.ExtractTranslation()),
            "shine": vec(shine),
        }
    return out


def close(a, b, tol=1e-5):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def check_robot_arm(stage, s):
    assert close(s["gravity"], [0, 0, -9.81]), s["gravity"]
    assert sorted(s["bodies"]) == ["/World/Arm/Base", "/World/Arm/Link1", "/World/Arm/Link2", "/World/Arm/Link3"]
    assert all(b["kind"] == "Dynamic" for b in s["bodies"].values())
    for link in ("Link1", "Link2", "Link3"):
        assert 1.0 <= s["bodies"][f"/World/Arm/{link}"]["mass"] <= 3.0
    assert s["shapes"]["/World/Table"]["body"] is None
    top = 0.375 + s["shapes"]["/World/Table"]["halfExtents"][2]
    assert abs(top - 0.75) < 1e-6, top
    assert s["shapes"]["/World/Arm/Link3/Collision"]["body"] == "/World/Arm/Link3"
    for p, shape in s["shapes"].items():
        if p.startswith("/World/Arm/"):
            assert shape["materials"] == ["/World/Looks/ArmSurface"], (p, shape["materials"])
    joints = s["joints"]
    assert joints["/World/Arm/base_mount"]["type"] == "FixedJoint"
    expected = {"shoulder_yaw": ("Z", 170), "shoulder_pitch": ("Y", 110), "elbow": ("Y", 135)}
    for name, (axis, limit) in expected.items():
        j = joints[f"/World/Arm/{name}"]
        assert j["type"] == "RevoluteJoint" and j["axis"] == axis, j
        assert close(j["limits"], [-limit * DEG, limit * DEG]), j["limits"]
        assert j["drive"]["stiffness"] > 0 and j["drive"]["damping"] > 0 and not j["drive"]["acceleration"]
    # Joint anchors coincide in the world: the arm is assembled as authored.
    for p, j in joints.items():
        anchors = []
        for n in ("0", "1"):
            body = j[f"body{n}"]
            local = j[f"local_pos{n}"]
            if body is None:
                anchors.append(local)
            else:
                b = s["bodies"][body]
                anchors.append([b["position"][i] + local[i] for i in range(3)])  # bodies are unrotated
        assert close(anchors[0], anchors[1]), (p, anchors)


def check_conveyor(stage, s):
    assert close(s["gravity"], [0, 0, -9.81]), s["gravity"]
    boxes = [p for p in s["bodies"] if p.startswith("/World/Boxes/")]
    assert len(boxes) == 6 and len(s["bodies"]) == 6, s["bodies"].keys()
    belt = s["shapes"]["/World/Conveyor"]
    assert belt["body"] is None and abs(0.45 + belt["halfExtents"][2] - 0.5) < 1e-6
    assert belt["materials"] == ["/World/Looks/Belt"], belt["materials"]
    heights = sorted(s["bodies"][b]["position"][2] - 0.5 for b in boxes)
    assert abs(heights[0] - 1.0) < 1e-6 and abs(heights[-1] - 2.5) < 1e-6, heights
    for b in boxes:
        body = s["bodies"][b]
        assert body["kind"] == "Dynamic" and body["mass"] == 1.0
        shape = s["shapes"][b]
        assert close(shape["halfExtents"], [0.1, 0.1, 0.1]) and shape["materials"] == ["/World/Looks/Cardboard"]
        x, y = body["position"][:2]
        assert abs(x) + 0.15 < 2.0 and abs(y) + 0.15 < 0.3, (b, x, y)
    assert not s["joints"]


def main(argv):
    as_json = "--json" in argv
    files = [a for a in argv if a != "--json"]
    checks = {}
    if not files:
        checks = {HERE / "robot-arm/scene.usda": check_robot_arm, HERE / "conveyor/scene.usda": check_conveyor}
        files = [str(f) for f in checks]
    results = {}
    for f in files:
        stage, summary = summarize(Path(f))
        check = checks.get(Path(f))
        if check:
            check(stage, summary)
        results[f] = summary
    if as_json:
        print(json.dumps(results, indent=1, sort_keys=True))
    else:
        for f, s in results.items():
            print(f"{f}: {len(s['bodies'])} rigid bodies, {len(s['shapes'])} colliders, "
                  f"{len(s['joints'])} joints, gravity {s['gravity']}" + (" (checked)" if Path(f) in checks else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
