"""Camera + LiDAR models over many held-out sets at once, with the spread: what to choose on.

A three-scene held-out set moves the ratios of issue 14's targets (crash2 / clean,
the no-LiDAR margin) by about +-0.02, as much as a change of recipe
(docs/data_training_evaluation.md, "Three fresh held-out sets"). This runs each
camera + LiDAR model (``--checkpoints``, the first is the reference) and the
camera-only model on every set in ``--versions`` and reports, per model, each set's
figures and their mean, standard deviation and minimum, how many sets meet each
target, and each model's paired difference from the reference (same sets):

    python bench/seed_sets.py --checkpoints models/tiny_default.pt <candidate.pt> ...
        [--camera-checkpoint models/tiny_camera_default.pt]
        --versions v1.0-synthetic-seed29 v1.0-synthetic-seed31 ...
        [--passes clean/full crash2/full frame_lost/full clean/no_lidar] [--jobs 2]
        [--cache outputs/seed_sets_cache] [--pooled] [--name seed_sets]

``--pooled`` adds each model's figures over all sets at once: a class with a
handful of boxes in one set (one bus, one parked bicycle) weighs as much as cars
in that set's mAP, so one missed object there can move a set's crash2 / clean by
0.1; the pool weighs boxes, not sets. The per-set rows say how often a
three-scene set meets a target; the pooled row is the best estimate of the figure.

``--jobs`` evaluates that many (model, set) pairs at once, in processes of
cpu_count / jobs threads each. ``--cache`` keeps each (weights, set, pass) report
under the hash of the weights file and of the model config as this code loads it
(``cache_key``: a new default, such as the blind-zone hold's, is a new key), so a
later run with one more candidate evaluates only that candidate (empty the cache
after changing the evaluation code itself; it holds pickled detections, our own).
Writes bench/results/<name>-<cpu|gpu>.json (after every finished pair, so an
interrupted run keeps what it had) and prints Markdown tables.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, markdown_table, write_result  # noqa: E402
from model_targets import GOALS, goal_text, meets, operating_figures  # noqa: E402

REPORT_KEYS = ("mAP", "NDS", "mATE", "mAVE", "id_switches")
# What a pass keeps of its report (the id figures at the node's threshold, OPERATING_SCORE_THRESHOLD).
FIGURE_KEYS = {*REPORT_KEYS, "id_switches_per_100_gt", "car_median_id_keep_fraction"}
DEFAULT_PASSES = ("clean/full", "crash2/full", "frame_lost/full", "clean/no_lidar")


def check_set_seeds(which: str = "both") -> list[int]:
    """The seeds of the check sets ("check"), the confirmation sets ("confirm") or both, as
    scripts/check_sets.sh lists them (CHECK_SEEDS, CONFIRM_SEEDS)."""
    script = (Path(__file__).resolve().parent.parent / "scripts" / "check_sets.sh").read_text()
    names = {"check": ["CHECK"], "confirm": ["CONFIRM"], "both": ["CHECK", "CONFIRM"]}[which]
    return [int(seed) for name in names
            for seed in re.search(rf"^{name}_SEEDS=\(([\d ]+)\)$", script, flags=re.MULTILINE).group(1).split()]


def file_digest(path: str) -> str:
    """First 16 hex digits of the file's SHA-1: the cache key of a weights file."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def cache_key(path: str) -> str:
    """The cache key of a model file: its ``file_digest`` and the first 8 hex digits of
    the SHA-1 of its model config as loaded here, defaults of this code included (the
    file stores only what it was trained with; the post-processing defaults are the code's)."""
    from sparsecomp_core.config import to_dict
    from sparsecomp_core.models.detector import checkpoint_model_config

    config = json.dumps(to_dict(checkpoint_model_config(path)), sort_keys=True, default=str)
    return f"{file_digest(path)}_{hashlib.sha1(config.encode()).hexdigest()[:8]}"


def cache_path(cache: str | None, digest: str, version: str, pass_name: str, max_frames: int | None) -> Path | None:
    frames = "" if max_frames is None else f"_first{max_frames}"
    return None if cache is None else Path(cache) / f"{digest}_{version}_{pass_name.replace('/', '-')}{frames}.json"


def evaluate_pair(checkpoint: str, digest: str, data_root: str, version: str, passes: list[str], device: str,
                  threads: int, cache: str | None, max_frames: int | None = None,
                  keep_detections: bool = False) -> tuple[dict[str, dict], dict[str, tuple]]:
    """(pass ("condition/variant") -> the report's headline figures, pass -> (ground truth,
    detections) when ``keep_detections``, samples named "<version>/<sequence>/<frame>" so that
    sets can be pooled), for one model on one set. Runs in a worker process."""
    import torch

    from sparsecomp_core.data.dataset import SequenceDataset
    from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions
    from sparsecomp_core.models.detector import load_detector

    torch.set_num_threads(threads)
    figures, detections, missing = {}, {}, []
    paths = {pass_name: cache_path(cache, digest, version, pass_name, max_frames) for pass_name in passes}
    for pass_name, path in paths.items():
        cached = json.loads(path.read_text()) if path is not None and path.exists() else {}
        kept = path.with_suffix(".detections.pkl") if path is not None else None
        if FIGURE_KEYS <= cached.keys() and (not keep_detections or kept.exists()):
            figures[pass_name] = cached         # else written before a figure was added: evaluated again
            if keep_detections:
                detections[pass_name] = pickle.loads(kept.read_bytes())
        else:
            missing.append(pass_name)
    if not missing:
        return figures, detections
    model, cfg = load_detector(checkpoint, device)
    dataset = SequenceDataset(data_root, version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    conditions = standard_conditions(dataset.rig.camera_names)
    for pass_name in missing:
        condition, variant = pass_name.split("/")
        run = run_model(model, dataset, conditions[condition], variant, progress=False, max_frames=max_frames)
        report = run.report()
        ids_per_100, car_keep = operating_figures(report)
        figures[pass_name] = {**{k: report[k] for k in REPORT_KEYS}, "id_switches_per_100_gt": ids_per_100,
                              "car_median_id_keep_fraction": car_keep}
        path = paths[pass_name]
        if keep_detections or path is not None:
            detections[pass_name] = pooled_names(run.gts, run.preds, version)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(figures[pass_name]) + "\n")
            path.with_suffix(".detections.pkl").write_bytes(pickle.dumps(detections[pass_name]))
    return figures, (detections if keep_detections else {})


def pooled_names(gts: dict[str, list], preds: list, version: str) -> tuple[dict[str, list], list]:
    """The run's ground truth and detections with their samples prefixed by the set's name:
    two generated sets may both have a scene-0000."""
    return ({f"{version}/{sample}": [replace(g, sample=f"{version}/{sample}") for g in boxes]
             for sample, boxes in gts.items()},
            [replace(p, sample=f"{version}/{p.sample}") for p in preds])


def pooled_figures(detections: dict[str, dict[str, tuple]], passes: list[str]) -> dict[str, dict]:
    """pass -> mAP / NDS / mAVE of one model over every set at once (version -> pass ->
    (ground truth, detections)): classes that have a handful of boxes in one set
    (one bus, one parked bicycle) weigh as much as cars in that set's mAP, not in the pool's."""
    from sparsecomp_core.evaluation.metrics import detection_report

    pooled = {}
    for pass_name in passes:
        gts, preds = {}, []
        for per_pass in detections.values():
            gts.update(per_pass[pass_name][0])
            preds.extend(per_pass[pass_name][1])
        report = detection_report(gts, preds)
        pooled[pass_name] = {k: report[k] for k in ("mAP", "NDS", "mATE", "mAVE")}
    return pooled


def set_figures(figures: dict[str, dict], camera_only_nds: float | None) -> dict[str, float]:
    """One model's target figures on one set, from its passes (those it has)."""
    clean = figures["clean/full"]
    row = {"clean mAP": clean["mAP"], "clean NDS": clean["NDS"], "mAVE": clean["mAVE"]}
    if clean.get("id_switches_per_100_gt") is not None:
        row["ids per 100 GT"] = clean["id_switches_per_100_gt"]
    if clean.get("car_median_id_keep_fraction") is not None:
        row["car id keep"] = clean["car_median_id_keep_fraction"]
    for condition in ("crash2", "frame_lost"):
        if f"{condition}/full" in figures:
            row[f"{condition} / clean"] = figures[f"{condition}/full"]["NDS"] / max(clean["NDS"], 1e-9)
    lost = clean["NDS"] - figures["crash2/none"]["NDS"] if "crash2/none" in figures else 0.0
    for variant, key in (("full", "camera-only crash2 recovery"), ("no_hold", "crash2 recovery without the hold")):
        if lost > 0 and f"crash2/{variant}" in figures:     # the share of what crash2 costs that is recovered
            row[key] = (figures[f"crash2/{variant}"]["NDS"] - figures["crash2/none"]["NDS"]) / lost
    if "clean/no_lidar" in figures:
        row["no-LiDAR NDS"] = figures["clean/no_lidar"]["NDS"]
        if camera_only_nds is not None:
            row["no-LiDAR - camera-only"] = figures["clean/no_lidar"]["NDS"] - camera_only_nds
    return row


def statistics(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def summarise(rows: dict[str, dict[str, float]]) -> dict[str, dict]:
    """figure -> statistics over the sets, and how many sets meet the figure's goal."""
    summary = {}
    keys = list(dict.fromkeys(key for row in rows.values() for key in row))   # a set without cars lacks one
    for key in keys:
        values = [row[key] for row in rows.values() if key in row]
        summary[key] = statistics(values)
        if key in GOALS:
            summary[key]["sets_meeting_goal"] = sum(meets(key, v) for v in values)
            summary[key]["goal"] = goal_text(key)
    return summary


def paired_differences(rows: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> dict[str, dict]:
    """figure -> statistics of (model - reference) over the sets both have."""
    common = [v for v in rows if v in reference]
    return {key: statistics([rows[v][key] - reference[v][key] for v in common])
            for key in rows[common[0]] if all(key in rows[v] and key in reference[v] for v in common)}


def markdown(label: str, rows: dict[str, dict[str, float]], summary: dict[str, dict]) -> str:
    keys = list(summary)
    lines = [f"**{label}**", "", "| set | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for version, row in rows.items():
        lines.append(f"| {version} | " + " | ".join(f"{row[k]:.3f}" if k in row else "-" for k in keys) + " |")
    lines.append("| mean (sd) | " + " | ".join(f"{summary[k]['mean']:.3f} ({summary[k]['sd']:.3f})" for k in keys) + " |")
    lines.append("| min | " + " | ".join(f"{summary[k]['min']:.3f}" for k in keys) + " |")
    lines.append("| sets meeting goal | " + " | ".join(
        f"{summary[k]['sets_meeting_goal']}/{summary[k]['n']} ({summary[k]['goal']})" if "goal" in summary[k] else "-"
        for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = evaluation_parser(__doc__, "seed_sets", checkpoint=None)
    parser.add_argument("--checkpoints", nargs="+", default=["models/tiny_default.pt"],
                        help="camera + LiDAR models; the first is the reference of the paired differences")
    parser.add_argument("--camera-checkpoint", default="models/tiny_camera_default.pt",
                        help="camera-only model for the no-LiDAR margin ('none': leave the margin out)")
    parser.add_argument("--versions", nargs="+", required=True, help="held-out sets (data versions)")
    parser.add_argument("--passes", nargs="+", default=list(DEFAULT_PASSES),
                        help="condition/variant passes of the camera + LiDAR models; clean/full is always run")
    parser.add_argument("--jobs", type=int, default=1, help="(model, set) pairs evaluated at once")
    parser.add_argument("--cache", help="folder of per-(weights, set, pass) reports to reuse")
    parser.add_argument("--max-frames", type=int, help="only this many frames per set (a quick check of the script)")
    parser.add_argument("--pooled", action="store_true",
                        help="also each model's figures over all sets at once (keeps every detection in memory)")
    args = parser.parse_args()
    passes = ["clean/full"] + [p for p in args.passes if p != "clean/full"]
    for pass_name in passes:
        if pass_name.count("/") != 1:
            parser.error(f"--passes: {pass_name!r} is not condition/variant")
    # path -> its passes; the camera-only model first, so that every later report has the margin
    models = {args.camera_checkpoint: ["clean/full"]} if args.camera_checkpoint != "none" else {}
    models.update({path: passes for path in args.checkpoints})
    for path in models:
        if not Path(path).exists():
            parser.error(f"no checkpoint {path}")
    keys = {path: cache_key(path) for path in models}
    digests = {path: key.split("_")[0] for path, key in keys.items()}     # file_digest, the key's first part
    threads = max(1, (os.cpu_count() or 1) // args.jobs)

    results: dict[str, dict[str, dict]] = {path: {} for path in models}
    detections: dict[str, dict[str, dict]] = {path: {} for path in models}     # with --pooled
    pooled: dict[str, dict[str, float]] = {}

    def report() -> Path:
        camera_nds = {v: f["clean/full"]["NDS"] for v, f in results.get(args.camera_checkpoint, {}).items()}
        payload, tables = {"data_root": args.data_root, "versions": args.versions, "passes": passes,
                           "max_frames": args.max_frames,
                           "camera_checkpoint": args.camera_checkpoint, "models": {}}, []
        reference = None
        for path in args.checkpoints:
            rows = {v: set_figures(results[path][v], camera_nds.get(v)) for v in args.versions if v in results[path]}
            if path == args.checkpoints[0]:
                reference = rows
            if not rows:
                continue
            summary = summarise(rows)
            entry = {"sha1_16": digests[path], "per_set": rows, "summary": summary,
                     "passes": {v: results[path][v] for v in rows}}
            if path != args.checkpoints[0] and any(v in reference for v in rows):
                entry["minus_reference"] = paired_differences(rows, reference)
            if path in pooled:
                entry["pooled"] = pooled[path]
            payload["models"][path] = entry
            tables.append(markdown(path, rows, summary))
        if pooled:
            payload["pooled_table"] = markdown_table([{"model": path, **figures} for path, figures in pooled.items()],
                                                     "model", number_format=".3f")
        payload["camera_only_clean_nds"] = camera_nds
        payload["tables"] = tables
        return write_result(args.name, payload)

    pairs = [(path, version) for path in models for version in args.versions]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(evaluate_pair, path, keys[path], args.data_root, version, models[path],
                               args.device, threads, args.cache, args.max_frames, args.pooled): (path, version)
                   for path, version in pairs}
        for future in as_completed(futures):
            path, version = futures[future]
            results[path][version], detections[path][version] = future.result()
            figures = results[path][version]
            print(f"{Path(path).name} {version}: " + ", ".join(f"{p} NDS {f['NDS']:.3f}" for p, f in figures.items()),
                  flush=True)
            written = report()
    if args.pooled:
        for path in models:
            # the pooled passes have no id figures, so set_figures gives only the NDS-based ones
            pooled[path] = set_figures(pooled_figures(detections[path], models[path]),
                                       pooled.get(args.camera_checkpoint, {}).get("clean NDS"))
            detections[path] = {}                                   # free the memory
        written = report()
    payload = json.loads(written.read_text())
    if args.pooled:
        print("\nall sets pooled:\n" + payload["pooled_table"])
    for path, table in zip(payload["models"], payload["tables"]):
        print()
        print(table)
        differences = payload["models"][path].get("minus_reference")
        if differences:
            print("minus the reference, mean (sd): " + ", ".join(
                f"{k} {d['mean']:+.3f} ({d['sd']:.3f})" for k, d in differences.items()))
    print("wrote", written)


if __name__ == "__main__":
    main()
