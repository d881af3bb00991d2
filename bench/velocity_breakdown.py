"""Where a model's velocity error comes from: matched objects' predicted vs true speed.

Streams the first ``--max-frames`` frames of the held-out set through the model
(clean, full cascade), matches every ground-truth object of one class (``--class``,
car by default) with a known velocity to the nearest detection of that class
scoring >= 0.3 within 2 m, and reports the
correlation of true and predicted speed, the median velocity error, and both
per true-speed band. For a model with ``head.velocity_from_history`` it also
runs the head's own regressed velocity alone (the history fusion switched off),
so the two sources can be compared on the same frames. And the ceiling of
finite differences: the displacement of an object's matched detections k frames
apart (in the global frame, so ego motion is out) over their time difference,
against its true velocity, for several k: how long a baseline velocity from
positions needs at this model's localisation error (the same with the true
centres checks the arithmetic: ~0). Also how often the predicted velocity points
backwards (more than 90 degrees from the true one) and how often the predicted
heading does, for moving objects (true speed >= 1 m/s).

    python bench/velocity_breakdown.py --checkpoint M [--data-root data/synthetic]
        [--version v1.0-synthetic-val] [--max-frames 60] [--class car] [--name velocity_breakdown]

Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402
from sparsecomp_core.models.head.boxes import CLASS_NAMES  # noqa: E402

SPEED_BANDS = ((0.0, 0.5), (0.5, 5.0), (5.0, 40.0))
BASELINES = (1, 2, 3, 5, 8)      # frames apart
MOVING_M_S = 1.0                 # below this a direction is not meaningful


def with_known_velocity(gts: list, label: int) -> list:
    """Ground-truth boxes of the class whose velocity is known (the devkit's NaN left out)."""
    return [gt for gt in gts if gt.label == label and np.isfinite(gt.box[7:9]).all()]


def nearest_match(gt, detections: list, score_threshold: float, gate_m: float):
    """The detection of the ground truth's class scoring >= score_threshold nearest to it within the gate, or None."""
    candidates = [p for p in detections if p.label == gt.label and p.score >= score_threshold]
    if not candidates:
        return None
    distances = [np.linalg.norm(p.box[:2] - gt.box[:2]) for p in candidates]
    nearest = int(np.argmin(distances))
    return candidates[nearest] if distances[nearest] < gate_m else None


def finite_difference_errors(run, label: int, score_threshold: float = 0.3, gate_m: float = 2.0) -> dict:
    """Per baseline k (frames): median |(p_t - p_{t-k}) / dt - v_true| over ground-truth objects
    of the class with a known velocity matched in both frames, p the matched detection's centre (and, as
    a check, the true centre) in the global frame; v_true at t, rotated into the global frame."""
    errors = {k: {"detections": [], "ground_truth": []} for k in BASELINES}
    for sequence, frames in run.sequences.items():
        poses, stamps = run.ego_poses[sequence], run.timestamps[sequence]

        def to_global(centre: np.ndarray, t: int) -> np.ndarray:
            return poses[t][:2, :2] @ centre[:2] + poses[t][:2, 3]

        for t, (gts, preds) in enumerate(frames):
            for gt in with_known_velocity(gts, label):
                now = nearest_match(gt, preds, score_threshold, gate_m)
                true_velocity = poses[t][:2, :2] @ gt.box[7:9]
                for k in BASELINES:
                    if t - k < 0:
                        continue
                    past_gt = next((g for g in frames[t - k][0] if g.track_id == gt.track_id), None)
                    if past_gt is None:
                        continue
                    dt = (stamps[t] - stamps[t - k]) * 1e-6
                    moved = (to_global(gt.box, t) - to_global(past_gt.box, t - k)) / dt
                    errors[k]["ground_truth"].append(np.linalg.norm(moved - true_velocity))
                    past = nearest_match(past_gt, frames[t - k][1], score_threshold, gate_m)
                    if now is not None and past is not None:
                        moved = (to_global(now.box, t) - to_global(past.box, t - k)) / dt
                        errors[k]["detections"].append(np.linalg.norm(moved - true_velocity))
    return {f"{k} frames": {"pairs": len(e["detections"]),
                            "median_error_detections": float(np.median(e["detections"])) if e["detections"] else None,
                            "median_error_true_centres": float(np.median(e["ground_truth"])) if e["ground_truth"] else None}
            for k, e in errors.items()}


def matched_boxes(run, label: int, score_threshold: float = 0.3,
                  gate_m: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """(true [N, 9], predicted [N, 9]) boxes of ground-truth objects of the class with a known
    velocity and their nearest detection of that class within the gate."""
    true, predicted = [], []
    for frames in run.sequences.values():
        for gts, preds in frames:
            for gt in with_known_velocity(gts, label):
                match = nearest_match(gt, preds, score_threshold, gate_m)
                if match is not None:
                    true.append(gt.box[:9])
                    predicted.append(match.box[:9])
    return np.array(true).reshape(-1, 9), np.array(predicted).reshape(-1, 9)


def backwards_share(true_directions: np.ndarray, predicted_directions: np.ndarray) -> float | None:
    """Share of angle pairs [N] (rad) more than 90 degrees apart; None for no pairs."""
    if len(true_directions) == 0:
        return None
    return float((np.cos(predicted_directions - true_directions) < 0).mean())


def summary(true_boxes: np.ndarray, predicted_boxes: np.ndarray) -> dict:
    true, predicted = true_boxes[:, 7:9], predicted_boxes[:, 7:9]
    true_speed, predicted_speed = np.linalg.norm(true, axis=1), np.linalg.norm(predicted, axis=1)
    error = np.linalg.norm(true - predicted, axis=1)
    moving = true_speed >= MOVING_M_S
    true_heading = np.arctan2(true[moving, 1], true[moving, 0])
    bands = {}
    for low, high in SPEED_BANDS:
        inside = (true_speed >= low) & (true_speed < high)
        if inside.any():
            bands[f"{low:g}-{high:g} m/s"] = {"objects": int(inside.sum()),
                                             "median_predicted_speed": float(np.median(predicted_speed[inside])),
                                             "median_error": float(np.median(error[inside]))}
    return {"matched_frames": len(true), "speed_correlation": float(np.corrcoef(true_speed, predicted_speed)[0, 1]),
            "median_error": float(np.median(error)), "median_true_speed": float(np.median(true_speed)),
            "median_predicted_speed": float(np.median(predicted_speed)), "by_true_speed": bands,
            "moving": int(moving.sum()),
            "velocity_backwards_share": backwards_share(true_heading, np.arctan2(predicted[moving, 1], predicted[moving, 0])),
            "yaw_backwards_share": backwards_share(true_boxes[moving, 6], predicted_boxes[moving, 6]),
            "true_yaw_backwards_of_motion_share": backwards_share(true_heading, true_boxes[moving, 6])}


def main() -> None:
    parser = evaluation_parser(__doc__, "velocity_breakdown", checkpoint=None)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--max-frames", type=int, default=60)
    parser.add_argument("--class", dest="class_name", default="car", choices=CLASS_NAMES)
    args = parser.parse_args()
    label = CLASS_NAMES.index(args.class_name)
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
        r = results[source] = summary(*matched_boxes(run, label))
        if source == "as trained":
            results["finite differences of matched detections"] = ceiling = finite_difference_errors(run, label)
            for baseline, values in ceiling.items():
                print(f"finite difference over {baseline}: {values['pairs']} pairs, median error "
                      f"{values['median_error_detections']:.2f} m/s (true centres: {values['median_error_true_centres']:.3f})",
                      flush=True)
        print(f"{source}: {r['matched_frames']} matched {args.class_name} frames, speed correlation {r['speed_correlation']:.2f}, "
              f"median error {r['median_error']:.2f} m/s (true speed median {r['median_true_speed']:.2f}, "
              f"predicted {r['median_predicted_speed']:.2f}); of {r['moving']} moving, velocity backwards "
              f"{r['velocity_backwards_share']}, yaw backwards {r['yaw_backwards_share']}", flush=True)
        for band, values in r["by_true_speed"].items():
            print(f"  true {band}: {values['objects']} objects, predicted speed median {values['median_predicted_speed']:.2f}, "
                  f"error median {values['median_error']:.2f}", flush=True)
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "class": args.class_name, "max_frames": args.max_frames,
                                            "sources": results}))


if __name__ == "__main__":
    main()
