"""Runs in the nuscenes-devkit environment (.venv-devkit): reads boxes as JSON
from stdin, prints the devkit's AP and TP errors per class and threshold."""
import json
import math
import sys

from nuscenes.eval.common.data_classes import EvalBoxes
from nuscenes.eval.common.utils import center_distance
from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp
from nuscenes.eval.detection.data_classes import DetectionBox


def boxes(rows):
    result = EvalBoxes()
    by_sample = {}
    for row in rows:
        x, y, z, l, w, h, yaw, vx, vy, _ = row["box"]
        by_sample.setdefault(row["sample"], []).append(DetectionBox(
            sample_token=row["sample"], translation=(x, y, z), size=(w, l, h),
            rotation=(math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)), velocity=(vx, vy),
            detection_name=row["name"], detection_score=row.get("score", -1.0), attribute_name=""))
    for sample, items in by_sample.items():
        result.add_boxes(sample, items)
    return result


data = json.load(sys.stdin)
gt, pred = boxes(data["gt"]), boxes(data["pred"])
for sample in gt.sample_tokens:             # the devkit expects every sample in both
    if sample not in pred.sample_tokens:
        pred.add_boxes(sample, [])
out = {}
for name in data["classes"]:
    for threshold in data["thresholds"]:
        md = accumulate(gt, pred, name, center_distance, threshold)
        out[f"{name}/{threshold}"] = {"ap": calc_ap(md, 0.1, 0.1),
                                      **{m: calc_tp(md, 0.1, m) for m in ("trans_err", "scale_err", "orient_err", "vel_err")}}
print(json.dumps(out))
