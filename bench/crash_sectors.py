"""Where a camera crash costs detections, and how much of it any completion could
bring back: mAP / NDS inside the crashed cameras' blind arcs (headings no live
camera sees) and elsewhere, per cascade variant, and oracle bounds.

The robustness table says how much two crashed cameras cost; this says where. A
blind arc has no live evidence at all, so there completion can only bring back
what history holds; outside it a live camera still sees the scene. Arcs are the
cameras' horizontal fields of view in the ego frame (``geometry.
horizontal_fov_interval``), at 1 degree; a box's heading is its centre's bearing
from the ego origin (the cameras sit within 2 m of it, so boxes near an arc's
edge may fall on either side).

Evidence: for each ground-truth box in a blind arc, how many frames ago the same
object was last at a heading a live camera sees (within the scene; an upper
bound on what history holds: it ignores occlusion and range). Oracle rows: the
fault run's detections outside the blind arcs, plus the clean run's detections
inside them that lie within 2 m of a ground-truth box of their class whose
object had live evidence at most N frames ago (N = the temporal completion's
queue, or any), or of any box ("whole arc"). Their NDS bounds what completing
the crashed cameras from history could give back: ``recovered`` is the share
of the NDS the crash cost ("none") that a row gets back.

    python bench/crash_sectors.py --checkpoint models/tiny_camera_default.pt \
        [--version v1.0-synthetic-val] [--condition crash2] [--variants none full] [--name crash_sectors]

Writes bench/results/<name>-<cpu|gpu>.json and prints a Markdown table.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, markdown_table, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions  # noqa: E402
from sparsecomp_core.evaluation.metrics import detection_report  # noqa: E402
from sparsecomp_core.geometry import horizontal_fov_interval  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402


def covered_headings(calibration, width: int, cameras: list[int]) -> np.ndarray:
    """[360] bool: whether any of ``cameras`` sees heading d degrees (d = 0..359, ego frame)."""
    covered = np.zeros(360, dtype=bool)
    degrees = np.arange(360)
    for cam in cameras:
        start, end = (math.degrees(a) for a in horizontal_fov_interval(
            calibration.intrinsics[0, cam], calibration.cam2ego[0, cam], width))
        covered |= ((degrees - start) % 360) <= (end - start)
    return covered


def region_report(run, in_region) -> dict:
    """Our protocol's mAP / NDS over the ground truth and detections whose centre lies in a region."""
    def inside(detection) -> bool:
        return bool(in_region(heading(detection)))
    gts = {sample: [g for g in boxes if inside(g)] for sample, boxes in run.gts.items()}
    preds = [p for p in run.preds if inside(p)]
    report = detection_report(gts, preds)
    return {"mAP": report["mAP"], "NDS": report["NDS"], "gt_boxes": sum(len(b) for b in gts.values())}


def heading_deg(x: float, y: float) -> int:
    """The bearing of (x, y) from the ego origin, whole degrees 0..359."""
    return int(math.floor(math.degrees(math.atan2(y, x)))) % 360


def heading(detection) -> int:
    """The bearing of a box's centre from the ego origin, whole degrees 0..359."""
    return heading_deg(detection.box[0], detection.box[1])


def evidence_lags(run, blind: np.ndarray) -> dict[tuple[str, int], int | None]:
    """(sample, track id) of each ground-truth box in a blind arc -> frames since its object
    was last at a heading a live camera sees (None: not since the scene began)."""
    lags: dict[tuple[str, int], int | None] = {}
    for sequence, frames in run.sequences.items():
        poses = run.ego_poses[sequence]
        world = []                                   # per frame: track id -> global centre [3]
        for index, (gts, _) in enumerate(frames):
            world.append({g.track_id: poses[index][:3, :3] @ g.box[:3] + poses[index][:3, 3] for g in gts})
            for g in gts:
                if not blind[heading(g)]:
                    continue
                lags[g.sample, g.track_id] = None
                for back in range(1, index + 1):
                    past = world[index - back].get(g.track_id)
                    if past is None:
                        break
                    local = np.linalg.solve(poses[index - back], np.r_[past, 1.0])
                    if not blind[heading_deg(local[0], local[1])]:
                        lags[g.sample, g.track_id] = back
                        break
    return lags


def oracle_predictions(fault_run, clean_run, blind: np.ndarray, allowed) -> list:
    """The fault run's detections outside the blind arcs plus the clean run's inside them that
    lie within 2 m of an ``allowed(gt)`` ground-truth box of their class."""
    gts_by_sample = clean_run.gts
    kept = [p for p in fault_run.preds if not blind[heading(p)]]
    for p in clean_run.preds:
        if not blind[heading(p)]:
            continue
        if any(g.label == p.label and allowed(g) and np.hypot(*(g.box[:2] - p.box[:2])) <= 2.0
               for g in gts_by_sample[p.sample]):
            kept.append(p)
    return kept


def main() -> None:
    parser = evaluation_parser(__doc__, "crash_sectors", checkpoint="models/tiny_camera_default.pt")
    parser.add_argument("--condition", default="crash2", choices=["crash1", "crash2", "dead"])
    parser.add_argument("--variants", nargs="+", default=["none", "full"])
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint, args.device)
    rig = cfg.load_rig()
    dataset = SequenceDataset(args.data_root, args.version, rig, lidar_sweeps=cfg.lidar.sweeps)
    conditions = standard_conditions(dataset.rig.camera_names)
    condition = conditions[args.condition]
    failed = condition.crash or condition.dead
    live = [i for i, name in enumerate(rig.camera_names) if name not in failed]
    calibration = rig.calibration(1)
    blind = ~covered_headings(calibration, rig.image_width, live)
    regions = {"blind arcs": lambda d: blind[d], "seen by a live camera": lambda d: not blind[d],
               "everywhere": lambda d: True}
    rows, runs = [], {}
    for condition_name, variant in [("clean", "full")] + [(args.condition, v) for v in args.variants]:
        run = runs[condition_name, variant] = run_model(model, dataset, conditions[condition_name], variant,
                                                        progress=False)
        for region, in_region in regions.items():
            rows.append({"run": f"{condition_name}/{variant}", "region": region, **region_report(run, in_region)})
            print(rows[-1], flush=True)
    table = markdown_table(rows, "run", number_format=".3f")
    print(table)

    clean, none = runs["clean", "full"], runs.get((args.condition, "none"))
    lags = evidence_lags(clean, blind)
    queue = cfg.cascade.temporal.queue_length
    evidence = {f"within {k} frames": float(np.mean([lag is not None and lag <= k for lag in lags.values()]))
                for k in sorted({1, 2, queue, 6, 10, 20})}
    evidence["never (in the scene so far)"] = float(np.mean([lag is None for lag in lags.values()]))
    print(f"blind-arc ground truth: {len(lags)} boxes; live evidence", evidence)
    oracles, oracle_table = [], ""
    if none is not None:
        overall = {row["run"]: row["NDS"] for row in rows if row["region"] == "everywhere"}
        clean_nds, none_nds = overall["clean/full"], overall[f"{args.condition}/none"]

        def recovered(nds: float) -> float:
            return (nds - none_nds) / (clean_nds - none_nds)

        def evidence_within(frames: float):
            def allowed(g) -> bool:
                lag = lags.get((g.sample, g.track_id))
                return lag is not None and lag <= frames
            return allowed
        bounds = {f"evidence within {queue} frames (the queue)": evidence_within(queue),
                  "evidence within 20 frames": evidence_within(20),
                  "any evidence in the scene": evidence_within(math.inf), "whole arc": lambda g: True}
        for variant in args.variants:
            nds = overall[f"{args.condition}/{variant}"]
            oracles.append({"run": f"{args.condition}/{variant}", "NDS": nds, "recovered": recovered(nds)})
            if variant != "none":
                continue
            for label, allowed in bounds.items():
                nds = detection_report(none.gts, oracle_predictions(none, clean, blind, allowed))["NDS"]
                oracles.append({"run": f"oracle: none + clean in the arc, {label}", "NDS": nds,
                                "recovered": recovered(nds)})
        oracles.insert(0, {"run": "clean/full", "NDS": clean_nds, "recovered": 1.0})
        oracle_table = markdown_table(oracles, "run", number_format=".3f")
        print(oracle_table)
    arcs = [int(d) for d in np.flatnonzero(blind)]
    path = write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                    "condition": args.condition, "failed_cameras": failed,
                                    "blind_headings_deg": arcs, "rows": rows, "table": table,
                                    "blind_ground_truth_boxes": len(lags), "live_evidence": evidence,
                                    "oracles": oracles, "oracle_table": oracle_table})
    print("wrote", path)


if __name__ == "__main__":
    main()
