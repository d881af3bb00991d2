"""Runs in the nuscenes-devkit environment (.venv-devkit, with the devkit's tracking
extras motmetrics and pandas). Reads tracks as JSON from stdin:
{"scenes": {scene: [{"timestamp": int, "gt": [box], "pred": [box]}, ...]}}, a box being
{"id": str, "name": tracking class, "xy": [x, y], "score": float (predictions)}; prints the
devkit's tracking metrics (per class and aggregated) as JSON.

The devkit's own code does the work: ``interpolate_tracks`` (loaders) and
``TrackingEval.evaluate`` (per-class ``TrackingEvaluation.accumulate`` with motmetrics,
AMOTA/AMOTP and the best-MOTA threshold's figures). Only the two steps of
``create_tracks`` that need a NuScenes object are restated: grouping by scene and
timestamp, and replacing each predicted box's score by its track's mean score.
"""
import json
import sys
import tempfile
from collections import defaultdict

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.tracking.data_classes import TrackingBox
from nuscenes.eval.tracking.evaluate import TrackingEval
from nuscenes.eval.tracking.loaders import interpolate_tracks

METRICS = ("amota", "amotp", "mota", "motp", "recall", "ids", "fp", "fn", "tp", "gt")


def tracks(scenes: dict, key: str) -> dict:
    result = {}
    for scene, frames in scenes.items():
        by_time = defaultdict(list)
        for frame in frames:
            by_time[frame["timestamp"]] = [
                TrackingBox(sample_token=f"{scene}/{frame['timestamp']}", translation=(*box["xy"], 0.0),
                            size=(1.0, 1.0, 1.0), rotation=(1.0, 0.0, 0.0, 0.0), tracking_id=box["id"],
                            tracking_name=box["name"], tracking_score=float(box.get("score", -1.0)))
                for box in frame[key]]
        if key == "pred":             # create_tracks: the track's mean score, before interpolation
            scores = defaultdict(list)
            for boxes in by_time.values():
                for box in boxes:
                    scores[box.tracking_id].append(box.tracking_score)
            for boxes in by_time.values():
                for box in boxes:
                    box.tracking_score = np.mean(scores[box.tracking_id])
        result[scene] = interpolate_tracks(by_time)
        if key == "pred":
            result[scene] = defaultdict(list, sorted(result[scene].items(), key=lambda kv: kv[0]))
    return result


def main() -> None:
    request = json.load(sys.stdin)
    evaluation = TrackingEval.__new__(TrackingEval)        # skip __init__: it loads a NuScenes data set
    evaluation.cfg = config_factory("tracking_nips_2019")
    evaluation.verbose = False
    evaluation.render_classes = None
    evaluation.output_dir = tempfile.mkdtemp()
    evaluation.tracks_gt = tracks(request["scenes"], "gt")
    evaluation.tracks_pred = tracks(request["scenes"], "pred")
    metrics, _ = evaluation.evaluate()
    per_class = {name: {m: metrics.label_metrics[m][name] for m in METRICS}
                 for name in metrics.class_names if not np.isnan(metrics.label_metrics["amota"][name])}
    overall = {m: metrics.compute_metric(m, "all") for m in METRICS}
    print(json.dumps({"per_class": per_class, "overall": overall},
                     default=lambda v: None if v != v else float(v)))


if __name__ == "__main__":
    main()
