"""Full-model inference per frame: latency, per-stage times and peak memory.

Full config (batch 1, 7 x 512 x 960 images, 120k LiDAR points), streaming
(history queues full), with 0, 1 and 2 failed cameras, in fp32 and in
bf16/fp16 autocast. Each (precision, failed) setting runs in a fresh process.
Latency (p50/p99) is timed without hooks; stage times come from a second
pass with forward hooks (with CUDA synchronisation on GPU). GPU memory:
peak allocated during the timed frames (weights, history and activations)
and peak reserved by the caching allocator.

    python bench/model_inference.py [--config full] [--repeats N] [--device cpu|cuda]
        [--precisions fp32 bf16 fp16] [--failed 0 1 2] [--channels-last] [--extra-view-levels [N ...]]
        [--paths eager fixed compiled] [--name NAME]

Writes bench/results/model_inference-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import current_rss_bytes, peak_rss_bytes, write_result  # noqa: E402

from sparsecomp_core.models.model_config import load_model_config  # noqa: E402
from sparsecomp_core.models.detector import build_detector  # noqa: E402
from sparsecomp_core.models.inputs import FrameInputs  # noqa: E402

STAGES = {"backbone": "camera_branch.backbone", "temporal_completion": "camera_branch.cascade.temporal",
          "vae_completion": "camera_branch.cascade.vae", "planning_guided": "camera_branch.cascade.planning_guided",
          "view_transform": "view_transform", "lidar": "lidar", "fuser": "fuser", "neck": "neck", "head": "head"}
FAILED = {0: [], 1: [0], 2: [0, 4]}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


POINTS = 120_000


def synthetic_frame(rig, step: int, failed: int, device: str, points: int = POINTS) -> FrameInputs:
    gen = torch.Generator().manual_seed(step)
    images = torch.randint(0, 256, (1, rig.num_cameras, 3, rig.image_height, rig.image_width), dtype=torch.uint8,
                           generator=gen)
    cam_mask = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    cam_mask[0, FAILED[failed]] = True
    cloud = torch.cat([torch.rand(points, 3, generator=gen) * torch.tensor([100.0, 88.0, 4.0])
                       + torch.tensor([-40.0, -44.0, -1.0]), torch.rand(points, 1, generator=gen) * 255], 1)
    pose = torch.eye(4, dtype=torch.float64)[None]
    pose[0, 0, 3] = 1.0 * step
    return FrameInputs(images, cam_mask, rig.calibration(1), pose, torch.tensor([step * 100_000]), [cloud],
                       ["bench"]).to(device)


def measure(config: str, precision: str, failed: int, repeats: int, device: str, channels_last: bool = False,
            extra_view_levels: list[int] | None = None, path: str = "eager") -> dict:
    """Latency from a pass without hooks (stage hooks synchronise the GPU and
    would stall its pipelining), then the stage breakdown from a second pass
    (eager path only). ``path``: eager (model.infer), fixed (the fixed-shape runner,
    sparsecomp_core.deploy) or compiled (that runner through torch.compile; its
    compilation happens in the warm-up frames and is reported as compile_s)."""
    torch.manual_seed(0)
    cfg = load_model_config(config)
    cfg.backbone.channels_last = channels_last
    if extra_view_levels is not None:
        cfg.view_transform.extra_levels = tuple(extra_view_levels)
    rig = cfg.load_rig()
    model = build_detector(cfg).to(device).eval()
    dtype = DTYPES[precision]
    runner = model
    if path != "eager":
        from sparsecomp_core.deploy.runner import FixedShapeRunner
        runner = FixedShapeRunner(model, cfg, lidar_bucket=POINTS, compile=path == "compiled")
    state = runner.initial_state()

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def run(step: int) -> float:
        nonlocal state
        inputs = synthetic_frame(rig, step, failed, device)
        sync()
        start = time.perf_counter()
        with torch.autocast(device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None):
            detections, state = runner.infer(inputs, state)
        sync()
        return (time.perf_counter() - start) * 1e3

    warm_up = [run(step) for step in range(3)]      # fills the history queues (and compiles)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, peak_before = current_rss_bytes(), peak_rss_bytes()
    latencies = [run(3 + i) for i in range(repeats)]
    if device == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        total = torch.cuda.max_memory_allocated() / 2 ** 20
        reserved = torch.cuda.max_memory_reserved() / 2 ** 20
    else:
        peak = max(peak_rss_bytes() - max(base, peak_before), 0) / 2 ** 20
        total = reserved = peak_rss_bytes() / 2 ** 20

    stage_times: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    for stage, name in STAGES.items() if path == "eager" else ():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue

        def before(*_, stage=stage) -> None:      # hooks must return None (else they replace args/outputs)
            sync()
            starts[stage] = time.perf_counter()

        def after(*_, stage=stage) -> None:
            sync()
            stage_times[stage].append((time.perf_counter() - starts[stage]) * 1e3)
        module.register_forward_pre_hook(before)
        module.register_forward_hook(after)
    for i in range(min(repeats, 10)):
        run(3 + repeats + i)
    ordered = sorted(latencies)
    return {"path": path, "compile_s": warm_up[0] / 1e3 if path == "compiled" else None,
            "precision": precision, "failed_cameras": failed, "channels_last": channels_last,
            "view_levels": [cfg.view_transform.feature_level, *cfg.view_transform.extra_levels], "repeats": repeats,
            "p50_ms": statistics.median(latencies), "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "stage_median_ms": {s: statistics.median(v) for s, v in stage_times.items()},
            "peak_memory_growth_mib": peak, "peak_memory_total_mib": total, "peak_memory_reserved_mib": reserved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed frames (default 3 on CPU, 50 on GPU)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--failed", nargs="+", type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--channels-last", action="store_true", help="backbone in NHWC memory")
    parser.add_argument("--extra-view-levels", nargs="*", type=int, default=None,
                        help="override view_transform.extra_levels (none given: sample the main level only)")
    parser.add_argument("--paths", nargs="+", default=["eager"], choices=["eager", "fixed", "compiled"],
                        help="eager model, fixed-shape runner, or that runner compiled (torch.compile)")
    parser.add_argument("--name", default="model_inference", help="result file bench/results/<name>-<cpu|gpu>.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (50 if args.device == "cuda" else 3)
    if args.one:
        path, precision, failed = args.one.split(",")
        print(json.dumps(measure(args.config, precision, int(failed), repeats, args.device, args.channels_last,
                                 args.extra_view_levels, path)))
        return
    rows = []
    for path, precision, failed in ((p, q, f) for p in args.paths for q in args.precisions for f in args.failed):
        done = subprocess.run([sys.executable, __file__, "--one", f"{path},{precision},{failed}", "--config",
                               args.config, "--repeats", str(repeats), "--device", args.device]
                              + (["--channels-last"] if args.channels_last else [])
                              + ([] if args.extra_view_levels is None
                                 else ["--extra-view-levels", *map(str, args.extra_view_levels)]),
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: (round(v, 1) if isinstance(v, float) else
                              {s: round(t, 1) for s, t in v.items()} if isinstance(v, dict) else v)
                          for k, v in rows[-1].items()}), flush=True)
    written = write_result(args.name, {
        "setup": f"config {args.config}, batch 1, 7 x 512 x 960 uint8 images, 120k points, history queues full",
        "device": args.device, "rows": rows})
    print("wrote", written)


if __name__ == "__main__":
    main()
