"""The track filter (head/track_filter.py) replayed on one recorded model run, per setting.

The filter only rewrites the velocities, centres, headings and ids of the
detections the model gave, from their ids, poses, times and the LiDAR sweeps, so
one pass of the model (bench/track_id_replay.py's recording: clean, or under
``--condition``) lets every setting be scored in seconds: detection figures (mAP,
NDS, mAVE, mATE, mAOE and each class's AOE and AVE) and the tracking section,
each against the model's own output (no filter). The rows before "velocity from
the sweeps" run without the LiDAR points (the filter as it was before it); those
after read each frame's merged sweeps from the data set (about a minute).

    python bench/track_filter.py --checkpoint models/tiny_default.pt [--version v1.0-synthetic-val]
        [--recording outputs/track_id_recording.pt] [--name track_filter] [--condition crash2]

Writes bench/results/<name>-<cpu|gpu>.json and prints a Markdown table.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_result  # noqa: E402
from track_id_replay import as_detection, load_or_record, recording_arguments  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.metrics import detection_report  # noqa: E402
from sparsecomp_core.evaluation.tracking_metrics import tracking_metrics  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402
from sparsecomp_core.models.head.sweep_velocity import sweep_velocities  # noqa: E402
from sparsecomp_core.models.head.track_filter import TrackFilterConfig, filter_sample  # noqa: E402

# Before heading from motion, smoothed centres, velocity along the axis and per-class velocity noise:
BASE = TrackFilterConfig(enabled=True, heading_speed_sigmas=0.0, smooth_centres=False, velocity_along_heading_classes=[],
                         class_velocity_noise_mps={})
SETTINGS = [  # name, config (None: the model's output as it is)
    ("no filter", None),
    ("filter, heading from motion and smoothed centres off", BASE),
    ("velocity noise 1.5 m/s", replace(BASE, velocity_noise_mps=1.5)),
    ("velocity noise 6 m/s", replace(BASE, velocity_noise_mps=6.0)),
    ("acceleration 2 m/s2", replace(BASE, acceleration_noise_mps2=2.0)),
    ("position noise 0.3 m", replace(BASE, position_noise_m=0.3)),
    ("position noise 0.8 m", replace(BASE, position_noise_m=0.8)),
    ("gate 2 m", replace(BASE, gate_m=2.0)),
    ("velocity only (no re-identification)", replace(BASE, reid_gate_m=0.0)),
    ("re-identification gate 2 m", replace(BASE, reid_gate_m=2.0)),
    ("re-identification gate 5 m", replace(BASE, reid_gate_m=5.0)),
    ("re-identification after 1 hit", replace(BASE, reid_min_hits=1)),
    ("re-identification from score 0.2", replace(BASE, reid_min_score=0.2)),
    ("smoothed centres", replace(BASE, smooth_centres=True)),
    ("heading from motion, 1 sigma", replace(BASE, heading_speed_sigmas=1.0)),
    ("heading from motion, 2 sigmas", replace(BASE, heading_speed_sigmas=2.0)),
    ("heading from motion, 3 sigmas", replace(BASE, heading_speed_sigmas=3.0)),
    ("heading from motion, 1 sigma, from 1 m/s", replace(BASE, heading_speed_sigmas=1.0, heading_min_speed_mps=1.0)),
    ("heading from motion, 1 sigma, sign only", replace(BASE, heading_speed_sigmas=1.0, heading_is_motion_classes=[])),
    ("heading from motion, 1 sigma, riderless cycles too",
     replace(BASE, heading_speed_sigmas=1.0, heading_from_motion_classes=[0, 1, 2, 3, 4, 5])),
    ("heading from motion, 1 sigma + smoothed centres + riderless cycles' velocity noise 0.3 m/s (the defaults)",
     TrackFilterConfig(enabled=True)),
    ("the defaults without a riderless cycle's own velocity noise (before)",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={})),
    ("the defaults, riderless cycles 0.2 m/s",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={"riderless_non_motor": 0.2})),
    ("the defaults, riderless cycles 0.5 m/s",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={"riderless_non_motor": 0.5})),
    ("the defaults, riderless cycles 0.3 and people 1 m/s",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={"riderless_non_motor": 0.3, "person": 1.0})),
    ("the defaults, riderless cycles 0.3 and ridden cycles 1 m/s",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={"riderless_non_motor": 0.3, "non_motor": 1.0})),
    ("the defaults, riderless cycles 0.3 and vehicles 5 m/s",
     TrackFilterConfig(enabled=True, class_velocity_noise_mps={"riderless_non_motor": 0.3, "car": 5.0, "truck": 5.0,
                                                                "bus": 5.0})),
    ("... + vehicle velocity along the heading", TrackFilterConfig(enabled=True, velocity_along_heading_classes=[0, 1, 2])),
    ("... + vehicle and ridden cycle velocity along the heading",
     TrackFilterConfig(enabled=True, velocity_along_heading_classes=[0, 1, 2, 4])),
]


# Velocity measured from the LiDAR sweeps (head/sweep_velocity.py), on top of the defaults:
def with_sweeps(**changes) -> TrackFilterConfig:
    """The default filter with these sweep_velocity settings changed."""
    defaults = TrackFilterConfig(enabled=True)
    return replace(defaults, sweep_velocity=replace(defaults.sweep_velocity, **changes))


SWEEP_SETTINGS = [
    ("the defaults + velocity from the sweeps (installed)", with_sweeps()),
    ("... sweeps measured from score 0.05", with_sweeps(min_score=0.05)),
    ("... sweep velocity noise 0.3 m/s", with_sweeps(noise_mps=0.3)),
    ("... sweep velocity noise 1 m/s", with_sweeps(noise_mps=1.0)),
    ("... no length margin (a short box cuts a bus's ends)", with_sweeps(length_margin_fraction=0.0)),
    ("... no sharpness check (faces sliding along themselves measured)", with_sweeps(min_sharpness_m=0.0)),
    ("... inlier fraction 0.6", with_sweeps(min_inlier_fraction=0.6)),
    ("... sideways penalty 0.25", with_sweeps(lateral_penalty=0.25)),
    ("... no sideways speed for vehicles", with_sweeps(max_lateral_mps=0.0)),
    ("... riderless cycles measured too", with_sweeps(classes=[0, 1, 2, 3, 4, 5])),
]


def recorded_sweeps(recording: dict, data_root: str, version: str, model_cfg) -> dict:
    """Each recorded frame's LiDAR input as the model got it (sequence -> list per frame;
    [N, 5] merged sweeps for lidar.sweeps > 1), read from the data set the recording was
    made on."""
    names = set(recording["sequences"])
    dataset = SequenceDataset(data_root, version, model_cfg.load_rig(), lidar_sweeps=model_cfg.lidar.sweeps)
    points: dict[str, list] = {}
    for scene in range(len(dataset.scenes)):
        for index in range(dataset.scene_length(scene)):
            frame = dataset.load(scene, index)
            if frame.sequence_id in names:
                points.setdefault(frame.sequence_id, []).append(frame.lidar)
    missing = [name for name in names if len(points.get(name, [])) != len(recording["sequences"][name])]
    if missing:
        raise ValueError(f"the recording's sequences {missing[:3]} are not in {data_root}/{version}: pass the "
                         "--data-root / --version the recording was made on")
    return points


def filtered_sequences(recording: dict, cfg: TrackFilterConfig | None, points: dict | None = None,
                       measuring_s: list[float] | None = None) -> dict:
    """The recorded sequences with each frame's detections passed through the filter (with
    ``points``, sequence -> merged sweeps per frame, the velocity measured from them, each
    frame's measuring time appended to ``measuring_s``)."""
    sequences = {}
    for name, seq in recording["sequences"].items():
        state, frames = None, []
        for index, (gt, preds) in enumerate(seq):
            detections = [as_detection(p) for p in preds]
            if cfg is not None and detections:
                boxes = torch.from_numpy(np.stack([d.box for d in detections]))
                labels = torch.tensor([d.label for d in detections])
                ids = torch.tensor([d.track_id for d in detections])
                scores = torch.tensor([d.score for d in detections])
                pose, time_us = recording["ego_poses"][name][index], recording["timestamps"][name][index]
                measured = None
                if points is not None:
                    started = time.perf_counter()
                    measured = sweep_velocities(points[name][index].numpy(), boxes.numpy(), labels.numpy(),
                                                scores.numpy(), cfg.sweep_velocity)
                    if measuring_s is not None:
                        measuring_s.append(time.perf_counter() - started)
                boxes, ids, state = filter_sample(boxes, labels, ids, scores, pose, int(time_us), state, cfg, name,
                                                  measured)
                detections = [replace(d, box=b, track_id=int(i)) for d, b, i in zip(detections, boxes.numpy(), ids)]
            frames.append(([as_detection(g) for g in gt], detections))
        sequences[name] = frames
    return sequences


def figures(recording: dict, sequences: dict) -> dict:
    gts = {g[0].sample: g for seq in sequences.values() for g, _ in seq if g}   # frames without any: no entry
    preds = [p for seq in sequences.values() for _, frame in seq for p in frame]
    report = detection_report(gts, preds)
    poses = {name: [p.numpy() for p in value] for name, value in recording["ego_poses"].items()}
    tracking = tracking_metrics(sequences, 0.3, poses, recording["timestamps"])
    cars = tracking["operating_point"]["continuously_visible"].get("car", {})
    return {"mAP": report["mAP"], "NDS": report["NDS"], "mAVE": report["mAVE"], "mATE": report["mATE"],
            "mAOE": report["mAOE"],
            **{f"{name}_AOE": errors.get("orient_err") for name, errors in report["per_class"].items()
               if name not in ("barrier", "pillar")},
            **{f"{name}_AVE": errors.get("vel_err") for name, errors in report["per_class"].items()
               if name not in ("barrier", "pillar")},
            "AMOTA": tracking["amota"], "AMOTP": tracking["amotp"],
            "IDS_per_100_gt_at_0.3": tracking["operating_point"]["id_switches_per_100_gt"],
            "cars_median_id_keep_fraction": cars.get("median_id_keep_fraction")}


def main() -> None:
    args = recording_arguments(__doc__, "track_filter")
    recording = load_or_record(args)
    rows = [{"setting": name, "config": None if cfg is None else asdict(cfg),
             **figures(recording, filtered_sequences(recording, cfg))} for name, cfg in SETTINGS]
    model_cfg = load_detector(args.checkpoint)[1]
    if model_cfg.lidar.enable and model_cfg.lidar.sweeps > 1:
        points = recorded_sweeps(recording, args.data_root, args.version, model_cfg)
        for name, cfg in SWEEP_SETTINGS:
            measuring_s: list[float] = []
            rows.append({"setting": name, "config": asdict(cfg),
                         **figures(recording, filtered_sequences(recording, cfg, points, measuring_s)),
                         "sweep_velocity_ms_per_frame": 1000 * float(np.mean(measuring_s))})
    print(markdown_table(rows, "setting", hidden=("config",), number_format=".3f"))
    write_result(args.name, {"checkpoint": Path(args.checkpoint).name, "data": f"{args.data_root}/{args.version}",
                             "settings": rows})


if __name__ == "__main__":
    main()
