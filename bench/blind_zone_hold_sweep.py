"""Blind-zone hold settings: the crash2 recovery share for each, from one model run.

The hold acts after the network and the track filter and feeds nothing back, so
the "no_hold" run's kept detections, replayed frame by frame through
``hold_sample`` with a setting, give exactly what the model with that setting
publishes (the script checks this for the model's own setting against a
"full" run). One model run per pass (clean/full, crash2/none, crash2/no_hold,
crash2/full), then one cheap replay per setting:

    python bench/blind_zone_hold_sweep.py [--checkpoint models/tiny_camera_default.pt]
        [--version v1.0-synthetic-tune] [--condition crash2] [--name blind_zone_hold_sweep]

Share recovered = (NDS with the hold - NDS "none") / (NDS clean - NDS "none").
Writes bench/results/<name>-<cpu|gpu>.json and prints a Markdown table.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, markdown_table, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.detection_metrics import Detection  # noqa: E402
from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions  # noqa: E402
from sparsecomp_core.evaluation.metrics import detection_report  # noqa: E402
from sparsecomp_core.models.head.blind_zone_hold import BlindZoneHoldConfig, hold_sample  # noqa: E402
from sparsecomp_core.models.head.boxes import NUM_CLASSES  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402

# (max_age_s, score_decay_per_s, min_score): the shipped setting and its neighbours
SETTINGS = [(1.5, 0.2, 0.3), (1.5, 0.5, 0.2), (1.5, 0.2, 0.2), (3.0, 0.2, 0.2), (1.5, 1.0, 0.2), (1.5, 0.2, 0.1),
            (0.8, 0.2, 0.3), (3.0, 0.2, 0.3), (1.5, 0.1, 0.3)]


def as_detection(preds: list[Detection]) -> dict[str, torch.Tensor]:
    """A frame's kept detections as head.postprocess's dict (class probabilities: the score on the label)."""
    n = len(preds)
    boxes = torch.tensor(np.array([p.box for p in preds]).reshape(n, -1), dtype=torch.float64)
    scores = torch.tensor([p.score for p in preds], dtype=torch.float64)
    labels = torch.tensor([p.label for p in preds], dtype=torch.int64)
    probabilities = torch.zeros(n, NUM_CLASSES, dtype=torch.float64)
    probabilities[torch.arange(n), labels] = scores
    occlusion = torch.tensor([p.occlusion for p in preds], dtype=torch.int64)
    return {"boxes": boxes, "scores": scores, "labels": labels,
            "ids": torch.tensor([p.track_id for p in preds], dtype=torch.int64), "class_probabilities": probabilities,
            "occlusion": occlusion, "occlusion_probabilities": torch.nn.functional.one_hot(occlusion, 4).double()}


def replay(run, failed: np.ndarray, calibration, grid, cfg: BlindZoneHoldConfig, score_threshold: float) -> list:
    """The run's detections with the hold applied frame by frame (one state per sequence)."""
    intrinsics = calibration.intrinsics[0].double().numpy()
    cam2ego = calibration.cam2ego[0].double().numpy()
    out = []
    for sequence, frames in run.sequences.items():
        state = None
        for index, (gts, preds) in enumerate(frames):
            sample = next((g.sample for g in gts), None) or next((p.sample for p in preds), None)
            held, state = hold_sample(as_detection(preds), failed, intrinsics, cam2ego, calibration.image_size,
                                      run.ego_poses[sequence][index], int(run.timestamps[sequence][index]), state,
                                      cfg, sequence, grid, score_threshold)
            out += [Detection(sample, b.numpy(), int(l), float(s), int(o), int(i)) for b, l, s, o, i in
                    zip(held["boxes"], held["labels"], held["scores"], held["occlusion"], held["ids"])]
    return out


def main() -> None:
    parser = evaluation_parser(__doc__, "blind_zone_hold_sweep", checkpoint="models/tiny_camera_default.pt",
                               version="v1.0-synthetic-tune")
    parser.add_argument("--condition", default="crash2", choices=["crash1", "crash2"],
                        help="a crash condition (the same cameras failed in every frame)")
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint, args.device)
    dataset = SequenceDataset(args.data_root, args.version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    if model.lidar is not None:
        parser.error("a camera-only model: with a live LiDAR the hold holds nothing")
    conditions = standard_conditions(dataset.rig.camera_names)
    condition = conditions[args.condition]
    runs = {name: run_model(model, dataset, conditions[c], variant, progress=False)
            for name, (c, variant) in {"clean": ("clean", "full"), "none": (args.condition, "none"),
                                       "no_hold": (args.condition, "no_hold"),
                                       "full": (args.condition, "full")}.items()}
    nds = {name: detection_report(run.gts, run.preds)["NDS"] for name, run in runs.items()}
    lost = nds["clean"] - nds["none"]
    failed = np.isin(dataset.rig.camera_names, condition.crash)
    calibration = dataset.rig.calibration(1, dataset.image_size)
    threshold = 0.01                                            # run_model's ranking threshold (EVAL_SCORE_THRESHOLD)
    rows = []
    for max_age_s, decay, min_score in SETTINGS:
        setting = replace(cfg.blind_zone_hold, enabled=True, max_age_s=max_age_s, score_decay_per_s=decay,
                          min_score=min_score)
        held = replay(runs["no_hold"], failed, calibration, model.grid, setting, threshold)
        report = detection_report(runs["no_hold"].gts, held)
        rows.append({"max_age_s": max_age_s, "score_decay_per_s": decay, "min_score": min_score,
                     "held_boxes": len(held) - len(runs["no_hold"].preds), "mAP": report["mAP"],
                     "NDS": report["NDS"], "share_recovered": (report["NDS"] - nds["none"]) / lost if lost > 0 else None,
                     "shipped": (max_age_s, decay, min_score) == (cfg.blind_zone_hold.max_age_s,
                                                                   cfg.blind_zone_hold.score_decay_per_s,
                                                                   cfg.blind_zone_hold.min_score)})
        print(rows[-1], flush=True)
    shipped = next((r for r in rows if r["shipped"]), None)
    table = markdown_table(rows, "max_age_s", number_format=".3f")
    print(table)
    print(f"NDS clean {nds['clean']:.4f}, none {nds['none']:.4f}, no_hold {nds['no_hold']:.4f}, "
          f"full (model run) {nds['full']:.4f}, full (replayed) {shipped['NDS'] if shipped else float('nan'):.4f}")
    write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                             "condition": args.condition, "nds": nds, "rows": rows,
                             "replay_matches_model": None if shipped is None else abs(shipped["NDS"] - nds["full"]) < 1e-6,
                             "table": table})


if __name__ == "__main__":
    main()
