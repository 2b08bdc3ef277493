"""Reads a Hanzo Twin run exported as USD with pxr (usd-core) and prints, as
JSON, the stage's time metadata and every body's world pose at the asked time
codes. Usage: read_run.py RUN.usda BODY_PATH[,BODY_PATH...] TIME[,TIME...]"""

import json
import sys

from pxr import Usd, UsdGeom


def main() -> None:
    path, bodies, times = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
    stage = Usd.Stage.Open(path)
    if stage is None:
        raise SystemExit(f"pxr could not open {path}")
    out = {
        "start": stage.GetStartTimeCode(),
        "end": stage.GetEndTimeCode(),
        "time_codes_per_second": stage.GetTimeCodesPerSecond(),
        "up_axis": str(UsdGeom.GetStageUpAxis(stage)),
        "meters_per_unit": UsdGeom.GetStageMetersPerUnit(stage),
        "poses": {},
    }
    for body in bodies:
        prim = stage.GetPrimAtPath(body)
        if not prim.IsValid():
            raise SystemExit(f"no prim {body} in {path}")
        xformable = UsdGeom.Xformable(prim)
        poses = {}
        for t in times:
            m = xformable.ComputeLocalToWorldTransform(Usd.TimeCode(float(t)))
            tr = m.ExtractTranslation()
            q = m.ExtractRotationQuat()
            im = q.GetImaginary()
            poses[t] = {
                "position": [tr[0], tr[1], tr[2]],
                "orientation": [im[0], im[1], im[2], q.GetReal()],
            }
        out["poses"][body] = poses
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
