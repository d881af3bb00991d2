"""Where a camera + LiDAR model loses objects under crash2: recall at the node's operating
threshold, clean against crash2, by region and range, pooled over many held-out sets.

crash_sectors.py runs a model on one set and reports mAP per region; a three-scene set
holds too few boxes in the blind arc for that to say much. This reads the detections that
``bench/seed_sets.py --cache`` (``scripts/check_sets.sh``) kept for each (weights, set,
pass) and pools them: every ground-truth box of the clean run is counted as found in a run
when a detection of its class at or above the operating score lies within 2 m of it (one
to one, as the metrics match). Regions are bearings from the ego origin: the blind arc (no
live camera sees it), the arcs a crashed camera shares with a live one, and the arcs no
crashed camera sees; ranges: under 20 m, 20-35 m, 35 m and beyond.

    python bench/crash_recall.py --checkpoints models/tiny_default.pt [more.pt ...] \\
        [--seeds 29 31 ...] [--fault-pass crash2/full] [--cache outputs/seed_sets_cache] [--name crash_recall]

Every (model, set) must be in the cache with its clean/full pass and the fault pass
(``scripts/check_sets.sh`` runs crash2/full; another variant, e.g. crash2/none, the
camera path without completion: ``bench/seed_sets.py --passes clean/full crash2/none``).
Writes bench/results/<name>-<cpu|gpu>.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, write_result  # noqa: E402
from crash_sectors import covered_headings, heading  # noqa: E402
from seed_sets import cache_key, cache_path, check_set_seeds  # noqa: E402

from sparsecomp_core.evaluation.evaluate import standard_conditions  # noqa: E402
from sparsecomp_core.evaluation.metrics import frame_matches  # noqa: E402
from sparsecomp_core.evaluation.tracking_metrics import OPERATING_SCORE_THRESHOLD  # noqa: E402
from sparsecomp_core.rig import load_rig  # noqa: E402

RANGES = ((0.0, 20.0, "< 20 m"), (20.0, 35.0, "20-35 m"), (35.0, math.inf, ">= 35 m"))
REGIONS = ("blind arc", "crashed + live camera", "live cameras only")


def regions_of_rig(rig_name: str, condition: str = "crash2") -> np.ndarray:
    """[360] region index (into REGIONS) of each whole-degree bearing under ``condition``."""
    rig = load_rig(rig_name)
    crashed_names = set(standard_conditions(rig.camera_names)[condition].crash)
    crashed = [i for i, name in enumerate(rig.camera_names) if name in crashed_names]
    live = [i for i, name in enumerate(rig.camera_names) if name not in crashed_names]
    calibration = rig.calibration(1)
    seen_live = covered_headings(calibration, rig.image_width, live)
    seen_crashed = covered_headings(calibration, rig.image_width, crashed)
    return np.where(~seen_live, 0, np.where(seen_crashed, 1, 2))


def found_boxes(gts: dict[str, list], preds: list, threshold: float) -> dict[str, set[int]]:
    """sample -> indices of its ground-truth boxes matched by a detection scoring >= threshold."""
    by_sample = defaultdict(list)
    for p in preds:
        if p.score >= threshold:
            by_sample[p.sample].append(p)
    return {sample: {g for g, _ in frame_matches(boxes, by_sample.get(sample, []))} for sample, boxes in gts.items()}


def recall_table(gts: dict[str, list], runs: dict[str, list], regions: np.ndarray,
                 threshold: float = OPERATING_SCORE_THRESHOLD) -> dict[tuple[str, str], dict]:
    """(region, range) -> {"boxes": n, "<run> recall": found / n for each run}, "all" rows included.
    ``gts``: sample -> ground-truth boxes (Detection); ``runs``: run name -> detections."""
    found = {name: found_boxes(gts, preds, threshold) for name, preds in runs.items()}
    counts = defaultdict(lambda: defaultdict(int))
    for sample, boxes in gts.items():
        for index, box in enumerate(boxes):
            region = REGIONS[regions[heading(box)]]
            distance = float(np.hypot(box.box[0], box.box[1]))
            span = next(label for low, high, label in RANGES if low <= distance < high)
            for key in ((region, span), (region, "all"), ("all", "all")):
                counts[key]["boxes"] += 1
                for name in runs:
                    counts[key][name] += index in found[name][sample]
    return {key: {"boxes": c["boxes"], **{f"{name} recall": c[name] / c["boxes"] for name in runs}}
            for key, c in counts.items()}


def load_pass(cache: str, digest: str, version: str, pass_name: str) -> tuple[dict, list]:
    path = cache_path(cache, digest, version, pass_name, None).with_suffix(".detections.pkl")
    if not path.exists():
        raise SystemExit(f"{path} is missing: run scripts/check_sets.sh on this model and set first")
    return pickle.loads(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=check_set_seeds(),
                        help="default: the check and confirmation sets of scripts/check_sets.sh")
    parser.add_argument("--cache", default="outputs/seed_sets_cache")
    parser.add_argument("--fault-pass", default="crash2/full", help="crash2/<variant> to compare with clean/full")
    parser.add_argument("--rig", default="default7")
    parser.add_argument("--name", default="crash_recall")
    args = parser.parse_args()
    regions = regions_of_rig(args.rig)
    order = [(region, span) for region in REGIONS for span in ("all", *(label for *_, label in RANGES))]
    results, rows = {}, []
    for checkpoint in args.checkpoints:
        digest = cache_key(checkpoint)
        gts, runs = {}, {"clean": [], "crash2": []}
        for seed in args.seeds:
            version = f"v1.0-synthetic-seed{seed}"
            set_gts, clean = load_pass(args.cache, digest, version, "clean/full")
            gts.update(set_gts)
            runs["clean"] += clean
            runs["crash2"] += load_pass(args.cache, digest, version, args.fault_pass)[1]
        table = recall_table(gts, runs, regions)
        results[checkpoint] = {"sha1_16": digest.split("_")[0], "cache_key": digest, "rows": [{"region": r, "range": s, **table[r, s]}
                                                            for r, s in [("all", "all"), *order] if (r, s) in table]}
        for row in results[checkpoint]["rows"]:
            rows.append({"model": Path(checkpoint).name, "region": row["region"], "range": row["range"],
                         "boxes": row["boxes"], "clean": row["clean recall"], "crash2": row["crash2 recall"],
                         "crash2 / clean": row["crash2 recall"] / max(row["clean recall"], 1e-9)})
    path = write_result(args.name, {"seeds": args.seeds, "fault_pass": args.fault_pass,
                                    "operating_threshold": OPERATING_SCORE_THRESHOLD,
                                    "blind_arc_degrees": np.flatnonzero(regions == 0).tolist(), "models": results})
    print(markdown_table(rows, "model"))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
