"""Runs in the nuscenes-devkit environment (.venv-devkit). Reads a request as JSON from
stdin: {"dataroot", "version", "eval_set", "submissions": [paths], "output_dir"}; opens
the data set with the devkit, checks it (get_sample_data on every channel of every
sample, num_lidar_pts against the devkit's own count of points in each box) and runs
DetectionEval (detection_cvpr_2019) on every submission. Prints JSON."""
import json
import sys

import numpy as np
from nuscenes import NuScenes
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box

request = json.load(sys.stdin)
nusc = NuScenes(request["version"], request["dataroot"], verbose=False)

channels, calls, boxes_checked, count_mismatches = set(), 0, 0, 0
for sample in nusc.sample:
    for channel, token in sample["data"].items():
        path, boxes, intrinsic = nusc.get_sample_data(token)
        channels.add(channel)
        calls += 1
        assert (intrinsic is not None) == (nusc.get("sample_data", token)["sensor_modality"] == "camera")
    path, boxes, _ = nusc.get_sample_data(sample["data"]["LIDAR_TOP"])
    cloud = LidarPointCloud.from_file(path)
    for box in boxes:
        counted = int(np.sum(points_in_box(box, cloud.points[:3])))
        boxes_checked += 1
        count_mismatches += counted != nusc.get("sample_annotation", box.token)["num_lidar_pts"]

metrics = []
for path in request["submissions"]:
    evaluation = DetectionEval(nusc, config_factory("detection_cvpr_2019"), path, request["eval_set"],
                               request["output_dir"], verbose=False)
    summary, _ = evaluation.evaluate()
    metrics.append(summary.serialize())
print(json.dumps({"dataset": {"samples": len(nusc.sample), "channels": sorted(channels), "get_sample_data_calls": calls,
                              "sensor_rows": len(nusc.sensor), "boxes_checked": boxes_checked,
                              "num_lidar_pts_mismatches": count_mismatches},
                  "metrics": metrics}))
