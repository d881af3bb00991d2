"""Where a camera crash costs detections: mAP / NDS inside the crashed cameras' blind
arcs (headings no live camera sees) and elsewhere, per cascade variant.

The robustness table says how much two crashed cameras cost; this says where. A
blind arc has no live evidence at all, so there completion can only bring back
what history holds; outside it a live camera still sees the scene. Arcs are the
cameras' horizontal fields of view in the ego frame (``geometry.
horizontal_fov_interval``), at 1 degree; a box's heading is its centre's bearing
from the ego origin (the cameras sit within 2 m of it, so boxes near an arc's
edge may fall on either side).

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
        return bool(in_region(int(math.floor(math.degrees(math.atan2(detection.box[1], detection.box[0])))) % 360))
    gts = {sample: [g for g in boxes if inside(g)] for sample, boxes in run.gts.items()}
    preds = [p for p in run.preds if inside(p)]
    report = detection_report(gts, preds)
    return {"mAP": report["mAP"], "NDS": report["NDS"], "gt_boxes": sum(len(b) for b in gts.values())}


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
    rows = []
    for condition_name, variant in [("clean", "full")] + [(args.condition, v) for v in args.variants]:
        run = run_model(model, dataset, conditions[condition_name], variant, progress=False)
        for region, in_region in regions.items():
            rows.append({"run": f"{condition_name}/{variant}", "region": region, **region_report(run, in_region)})
            print(rows[-1], flush=True)
    table = markdown_table(rows, "run", number_format=".3f")
    print(table)
    arcs = [int(d) for d in np.flatnonzero(blind)]
    path = write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                    "condition": args.condition, "failed_cameras": failed,
                                    "blind_headings_deg": arcs, "rows": rows, "table": table})
    print("wrote", path)


if __name__ == "__main__":
    main()
