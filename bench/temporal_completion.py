"""Level-1 temporal completion, V1 (global) vs V2 (neighbours): time and peak memory.

At the full config's 1/32 level (7 cameras, 256 channels, 16 x 30 features,
queue 2, kv_downsample 4), with 1 and 2 failed cameras, in inference
(no_grad) and training (forward + backward). Each configuration runs in a
fresh subprocess so peak-memory readings are its own: on CUDA
max_memory_allocated, on CPU the growth of peak RSS over the RSS before the
measured call. Times: median of --repeats calls after warm-up.

    python bench/temporal_completion.py [--repeats 10] [--device cpu|cuda]

Writes bench/results/temporal_completion-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import current_rss_bytes, peak_rss_bytes, write_result  # noqa: E402

from sparsecomp_core.data.feature_world import yaw_pose  # noqa: E402
from sparsecomp_core.models.model_config import load_model_config  # noqa: E402
from sparsecomp_core.models.completion.temporal import build_temporal_completion  # noqa: E402

FAILED_CAMERAS = {1: [0], 2: [0, 4]}     # CAM_FRONT_WIDE; + CAM_REAR_LEFT


def measure(mode: str, failed: int, training: bool, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    cfg = load_model_config("full")
    rig = cfg.load_rig()
    cfg.cascade.temporal.mode = mode
    stride = 32
    module = build_temporal_completion(cfg.cascade.temporal, cfg.backbone.out_channels, rig.num_cameras, stride)
    module.to(device).train(training)
    calibration = rig.calibration(1).to(device)
    shape = (1, rig.num_cameras, cfg.backbone.out_channels, rig.image_height // stride, rig.image_width // stride)
    history = module.empty_history()
    for step in range(cfg.cascade.temporal.queue_length):          # fill the queue with healthy frames
        with torch.no_grad():
            history = module(torch.randn(shape, device=device), torch.zeros(1, rig.num_cameras, dtype=torch.bool,
                             device=device), calibration, yaw_pose(torch.tensor([0.02 * step])).to(device),
                             torch.tensor([step * 100_000], device=device), history)["history"]
    cam_mask = torch.zeros(1, rig.num_cameras, dtype=torch.bool, device=device)
    cam_mask[0, FAILED_CAMERAS[failed]] = True
    features = torch.randn(shape, device=device, requires_grad=training)
    pose = yaw_pose(torch.tensor([0.05])).to(device)
    stamp = torch.tensor([250_000], device=device)

    def call() -> None:
        with torch.set_grad_enabled(training):
            out = module(features, cam_mask, calibration, pose, stamp, history)["features"]
            if training:
                out[cam_mask].square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    # Memory first, on a cold call.
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak_bytes = torch.cuda.max_memory_allocated() - base
    else:
        base, peak_before = current_rss_bytes(), peak_rss_bytes()
        call()
        peak_bytes = max(peak_rss_bytes() - max(base, peak_before), 0) if peak_rss_bytes() > peak_before else 0
    for _ in range(2):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    return {"mode": mode, "failed_cameras": failed, "training": training, "median_ms": statistics.median(times),
            "min_ms": min(times), "peak_memory_mib": peak_bytes / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", help=argparse.SUPPRESS)          # internal: mode,failed,training
    args = parser.parse_args()
    if args.one:
        mode, failed, training = args.one.split(",")
        print(json.dumps(measure(mode, int(failed), training == "1", args.repeats, args.device)))
        return
    rows = []
    for training in (False, True):
        for failed in (1, 2):
            for mode in ("global", "neighbours"):
                done = subprocess.run([sys.executable, __file__, "--one", f"{mode},{failed},{int(training)}",
                                       "--repeats", str(args.repeats), "--device", args.device],
                                      capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    ratios = []
    for training in (False, True):
        for failed in (1, 2):
            v1, v2 = (next(r for r in rows if r["mode"] == m and r["failed_cameras"] == failed
                           and r["training"] == training) for m in ("global", "neighbours"))
            ratios.append({"training": training, "failed_cameras": failed,
                           "time_v2_over_v1": v2["median_ms"] / v1["median_ms"],
                           "memory_v2_over_v1": v2["peak_memory_mib"] / max(v1["peak_memory_mib"], 1e-9)})
            print(ratios[-1])
    path = write_result("temporal_completion", {
        "setup": "full config 1/32 level: 7 cameras, 256 ch, 16x30, queue 2, kv_downsample 4, depths [10, 30]",
        "spec_claim": "V2 vs V1: memory -50% (ratio 0.5), speed +40% (time ratio ~0.71)",
        "device": args.device, "rows": rows, "ratios": ratios})
    print("wrote", path)


if __name__ == "__main__":
    main()
