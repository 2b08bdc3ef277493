#!/usr/bin/env python3
"""Reads a Hanzo Twin dataset folder with the reference COCO API.

    .venv/bin/python tests/peers/coco_check.py <dataset folder>

Loads annotations.json with pycocotools, decodes every RLE mask and
compares it with the instance image the mask came from (same pixels, same
area), then evaluates the ground truth as detections (score 1) for boxes
and masks: a well-formed file scores AP 1.0. Prints a JSON summary.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as masks
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def main(root):
    root = Path(root)
    gt = COCO(str(root / "annotations.json"))
    out = {
        "images": len(gt.imgs),
        "annotations": len(gt.anns),
        "categories": sorted(c["name"] for c in gt.cats.values()),
        "area_mismatches": 0,
        "mask_mismatches": 0,
        "missing_files": 0,
    }
    for ann in gt.anns.values():
        img = gt.imgs[ann["image_id"]]
        m = gt.annToMask(ann)
        if int(m.sum()) != int(ann["area"]):
            out["area_mismatches"] += 1
        rgb = root / img["file_name"]
        if not rgb.exists():
            out["missing_files"] += 1
        instance_png = root / img["file_name"].replace("rgb/", "instance/", 1)
        if instance_png.exists():
            im = Image.open(instance_png)
            ids = {}
            for line in im.info.get("instances", "").splitlines():
                k, _, path = line.partition("=")
                ids[path] = int(k)
            arr = np.array(im).astype(np.int64)
            if not np.array_equal(arr == ids[ann["instance"]], m.astype(bool)):
                out["mask_mismatches"] += 1
    dets = []
    for ann in gt.anns.values():
        img = gt.imgs[ann["image_id"]]
        rle = masks.frPyObjects(ann["segmentation"], img["height"], img["width"])
        dets.append({
            "image_id": ann["image_id"],
            "category_id": ann["category_id"],
            "bbox": ann["bbox"],
            "segmentation": rle,
            "score": 1.0,
        })
    if dets:
        for kind in ("bbox", "segm"):
            ev = COCOeval(gt, gt.loadRes(dets), kind)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out[f"ap_{kind}"] = float(ev.stats[0])
    # pycocotools prints as it goes; the summary is the last line.
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
