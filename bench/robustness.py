"""Robustness table: detection quality under camera faults, per cascade variant.

Conditions (see sparsecomp_core.evaluation.evaluate): clean, crash1, crash2,
frame_lost, dead. Variants: none (no completion, no blind-zone hold),
temporal / vae / planning (one level alone), full (as trained: temporal +
planning-guided, and the blind-zone hold), full_vae (VAE also at inference),
v1 (global temporal attention instead of V2), hold (the blind-zone hold alone),
no_hold (full without the hold), and no_lidar (the camera+LiDAR model with its
LiDAR input removed). Every variant but none and no_hold holds objects in the
failed cameras' blind zone (models/head/blind_zone_hold.py).

    python bench/robustness.py --checkpoint models/tiny_default.pt --data-root data/synthetic \
        --version v1.0-synthetic-val [--conditions ...] [--variants ...] [--use-completed-cameras true|false]
        [--completed-in-gaps true|false]
        [--crash CAMERA ...  (one condition instead: these cameras black throughout)]

Writes bench/results/robustness-<cpu|gpu>.json and prints a Markdown table.
Parts run in parallel processes (``--variants ... --name part1``) are joined
with ``--merge bench/results/part1-cpu.json bench/results/part2-cpu.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import Condition, evaluate, standard_conditions  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402

CONDITIONS = ["clean", "crash1", "crash2", "frame_lost", "dead"]
VARIANTS = ["none", "temporal", "vae", "planning", "full", "full_vae", "v1", "hold", "no_hold", "no_lidar"]
KEYS = ("mAP", "NDS", "mATE", "mAVE", "occlusion_accuracy", "id_switches", "masked_camera_fraction",
        "held_camera_fraction")


def markdown_table(rows: list[dict]) -> str:
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = ["| variant | " + " | ".join(conditions) + " |", "|---|" + "---|" * len(conditions)]
    for variant in variants:
        cells = []
        for condition in conditions:
            row = next((r for r in rows if r["condition"] == condition and r["variant"] == variant), None)
            cells.append("-" if row is None else f"{row['mAP']:.3f} / {row['NDS']:.3f}")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = evaluation_parser(__doc__, "robustness")
    parser.add_argument("--conditions", nargs="+", default=CONDITIONS, choices=CONDITIONS)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--crash", nargs="+", metavar="CAMERA",
                        help="instead of --conditions: these cameras black for the whole sequence")
    parser.add_argument("--merge", nargs="+", help="join result files of parts instead of evaluating")
    parser.add_argument("--use-completed-cameras", choices=["model", "true", "false"], default="model",
                        help="whether completed failed cameras enter the camera BEV (default: as the model's config)")
    parser.add_argument("--completed-in-gaps", choices=["model", "true", "false"], default="model",
                        help="whether a completed camera enters only the cells no live camera sees "
                             "(default: as the model's config)")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        rows = [row for part in parts for row in part["rows"]]
        table = markdown_table(rows)
        print("mAP / NDS\n" + table)
        path = write_result(args.name, {"checkpoint": parts[0]["checkpoint"], "data": parts[0]["data"],
                                        "frames": parts[0]["frames"], "parts": args.merge, "rows": rows,
                                        "table_map_nds": table})
        print("wrote", path)
        return
    model, cfg = load_detector(args.checkpoint, args.device)
    if args.use_completed_cameras != "model":
        model.use_completed_cameras = args.use_completed_cameras == "true"
    if args.completed_in_gaps != "model":
        model.completed_cameras_in_gaps_only = args.completed_in_gaps == "true"
    dataset = SequenceDataset(args.data_root, args.version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    conditions = standard_conditions(dataset.rig.camera_names)
    if args.crash:
        unknown = sorted(set(args.crash) - set(dataset.rig.camera_names))
        if unknown:
            parser.error(f"--crash: {unknown} not in the rig's cameras {dataset.rig.camera_names}")
        name = "crash:" + "+".join(args.crash)
        conditions[name], args.conditions = Condition(name, crash=list(args.crash)), [name]
    rows = []
    for condition in args.conditions:
        for variant in args.variants:
            report = evaluate(model, dataset, conditions[condition], variant, progress=False)
            rows.append({"condition": condition, "variant": variant, **{k: report[k] for k in KEYS},
                         "per_class_ap": {name: c["ap_mean"] for name, c in report["per_class"].items()}})
            print(f"{condition:10s} {variant:9s} mAP {report['mAP']:.3f} NDS {report['NDS']:.3f}", flush=True)
    table = markdown_table(rows)
    print("\nmAP / NDS\n" + table)
    path = write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                       "frames": len(dataset), "use_completed_cameras": model.use_completed_cameras,
                                       "completed_cameras_in_gaps_only": model.completed_cameras_in_gaps_only,
                                       "rows": rows, "table_map_nds": table})
    print("wrote", path)


if __name__ == "__main__":
    main()
