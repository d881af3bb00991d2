"""Where a model's velocity error comes from: matched cars' predicted vs true speed.

Streams the first ``--max-frames`` frames of the held-out set through the model
(clean, full cascade), matches every ground-truth car with a known velocity to
the nearest car detection scoring >= 0.3 within 2 m, and reports the
correlation of true and predicted speed, the median velocity error, and both
per true-speed band. For a model with ``head.velocity_from_history`` it also
runs the head's own regressed velocity alone (the history fusion switched off),
so the two sources can be compared on the same frames.

    python bench/velocity_breakdown.py --checkpoint M [--data-root data/synthetic]
        [--version v1.0-synthetic-val] [--max-frames 60] [--name velocity_breakdown]

Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402

CAR = 0
SPEED_BANDS = ((0.0, 0.5), (0.5, 5.0), (5.0, 40.0))


def matched_velocities(run, score_threshold: float = 0.3, gate_m: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(true [N, 2], predicted [N, 2]) velocities of ground-truth cars with a known velocity
    and their nearest car detection within the gate."""
    detections: dict[str, list] = {}
    for p in run.preds:
        if p.label == CAR and p.score >= score_threshold:
            detections.setdefault(p.sample, []).append(p)
    true, predicted = [], []
    for sample, gts in run.gts.items():
        for gt in gts:
            candidates = detections.get(sample, [])
            if gt.label != CAR or not np.isfinite(gt.box[7:9]).all() or not candidates:
                continue
            distances = [np.linalg.norm(p.box[:2] - gt.box[:2]) for p in candidates]
            nearest = int(np.argmin(distances))
            if distances[nearest] < gate_m:
                true.append(gt.box[7:9])
                predicted.append(candidates[nearest].box[7:9])
    return np.array(true).reshape(-1, 2), np.array(predicted).reshape(-1, 2)


def summary(true: np.ndarray, predicted: np.ndarray) -> dict:
    true_speed, predicted_speed = np.linalg.norm(true, axis=1), np.linalg.norm(predicted, axis=1)
    error = np.linalg.norm(true - predicted, axis=1)
    bands = {}
    for low, high in SPEED_BANDS:
        inside = (true_speed >= low) & (true_speed < high)
        if inside.any():
            bands[f"{low:g}-{high:g} m/s"] = {"cars": int(inside.sum()),
                                             "median_predicted_speed": float(np.median(predicted_speed[inside])),
                                             "median_error": float(np.median(error[inside]))}
    return {"matched_car_frames": len(true), "speed_correlation": float(np.corrcoef(true_speed, predicted_speed)[0, 1]),
            "median_error": float(np.median(error)), "median_true_speed": float(np.median(true_speed)),
            "median_predicted_speed": float(np.median(predicted_speed)), "by_true_speed": bands}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", default="data/synthetic")
    parser.add_argument("--version", default="v1.0-synthetic-val")
    parser.add_argument("--max-frames", type=int, default=60)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default="velocity_breakdown")
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint, args.device)
    dataset = SequenceDataset(args.data_root, args.version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    clean = standard_conditions(dataset.rig.camera_names)["clean"]
    sources = ["as trained"] + (["regressed only (history fusion off)"] if model.head.velocity_fusion is not None else [])
    results = {}
    for source in sources:
        fusion = model.head.velocity_fusion
        if source != "as trained":
            model.head.velocity_fusion = None
        try:
            run = run_model(model, dataset, clean, "full", progress=False, max_frames=args.max_frames)
        finally:
            model.head.velocity_fusion = fusion
        r = results[source] = summary(*matched_velocities(run))
        print(f"{source}: {r['matched_car_frames']} matched car frames, speed correlation {r['speed_correlation']:.2f}, "
              f"median error {r['median_error']:.2f} m/s (true speed median {r['median_true_speed']:.2f}, "
              f"predicted {r['median_predicted_speed']:.2f})", flush=True)
        for band, values in r["by_true_speed"].items():
            print(f"  true {band}: {values['cars']} cars, predicted speed median {values['median_predicted_speed']:.2f}, "
                  f"error median {values['median_error']:.2f}", flush=True)
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "max_frames": args.max_frames, "sources": results}))


if __name__ == "__main__":
    main()
