"""Completion quality on the synthetic feature task: V1 vs V2, VAE on/off at inference.

Trains the cascade alone (channels 32, nuScenes rig at 128 x 256, 4 FPN
levels) on two-frame episodes of a DirectionalFeatureWorld in which 1-2
cameras fail, then reports, on held-out episodes (other seeds), the MSE of
the failed cameras' completed features against the teacher divided by the
MSE of zero-filling (1.0 = no better than a dead camera).

    python bench/completion_feature_task.py [--steps 300] [--seeds 0 1]

Writes bench/results/completion_feature_task-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sparsecomp_core.config import from_dict  # noqa: E402
from sparsecomp_core.data.feature_world import DirectionalFeatureWorld  # noqa: E402
from sparsecomp_core.models.completion.cascade import CascadeConfig, build_completion_cascade  # noqa: E402
from sparsecomp_core.rig import load_rig  # noqa: E402
from sparsecomp_core.training import completion_feature_task as task  # noqa: E402

CHANNELS = 32


def ratios(result: dict) -> list[float]:
    return [c / z for c, z in zip(result["completed_mse"], result["zero_fill_mse"])]


def run(mode: str, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    cfg = from_dict(CascadeConfig, {"temporal": {"mode": mode, "kv_downsample": 2, "num_heads": 4},
                                    "vae": {"latent_channels": 16},
                                    "planning_guided": {"num_heads": 4, "key_grid": [4, 8]}})
    calibration = load_rig("nuscenes6").calibration(4, (128, 256))
    cascade = build_completion_cascade(cfg, CHANNELS, 6, task.STRIDES)
    world = DirectionalFeatureWorld(CHANNELS, seed=seed)
    untrained = ratios(task.evaluate(cascade, world, calibration, episodes=20, seed=10_000 + seed))
    start = time.perf_counter()
    losses = task.train(cascade, world, calibration, steps, seed=seed)
    train_s = time.perf_counter() - start
    vae_off = ratios(task.evaluate(cascade, world, calibration, episodes=20, seed=10_000 + seed))
    cascade.vae_use_at_inference = True
    vae_on = ratios(task.evaluate(cascade, world, calibration, episodes=20, seed=10_000 + seed))
    return {"mode": mode, "seed": seed, "steps": steps, "train_s": train_s,
            "loss_first_25": statistics.mean(losses[:25]), "loss_last_25": statistics.mean(losses[-25:]),
            "ratio_untrained": untrained, "ratio_vae_off": vae_off, "ratio_vae_on": vae_on}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for mode in ("global", "neighbours"):
            rows.append(run(mode, args.steps, seed))
            print({k: ([round(x, 3) for x in v] if isinstance(v, list) else v) for k, v in rows[-1].items()},
                  flush=True)
    summary = {}
    for mode in ("global", "neighbours"):
        for key in ("ratio_vae_off", "ratio_vae_on"):
            per_level = [statistics.mean(r[key][level] for r in rows if r["mode"] == mode) for level in range(4)]
            summary[f"{mode}/{key}"] = per_level
            print(mode, key, "per level (strides 8, 16, 32, 64):", [round(x, 3) for x in per_level])
    path = write_result("completion_feature_task", {
        "metric": "MSE(completed, teacher) / MSE(zero-fill, teacher) on failed cameras, held-out episodes",
        "rows": rows, "summary_mean_over_seeds": summary})
    print("wrote", path)


if __name__ == "__main__":
    main()
