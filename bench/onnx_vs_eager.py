"""onnxruntime against eager PyTorch (and the fixed-shape path in eager PyTorch),
time per frame for one model on the CPU, as ratios measured within one run.

Exports the model's fixed-shape graph (python -m sparsecomp_core.export) into a
temporary folder, then runs the three paths interleaved frame by frame on the
same inputs, each with its own state fed back (streaming: history and query
queues full after the first frames): the synthetic check sequence of
sparsecomp_core/deploy/check_sequence.py, failed cameras changing every frame,
clouds of about ``--points`` points in a bucket of ``--bucket``. The same
number of intra-op threads for PyTorch and onnxruntime. On a shared machine the
absolute times are noise; the ratios within one run are the result (each
frame's three timings are taken back to back, and the ratio is of medians).

    python bench/onnx_vs_eager.py [--checkpoint models/tiny_default.pt] [--frames 20] [--warmup 3]
        [--threads 1] [--points 40000] [--bucket 65536]

Writes bench/results/onnx_vs_eager-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sparsecomp_core import export  # noqa: E402
from sparsecomp_core.deploy.check_sequence import check_sequence, lidar_cloud  # noqa: E402
from sparsecomp_core.deploy.onnx_runner import OnnxRunner  # noqa: E402
from sparsecomp_core.deploy.runner import FixedShapeRunner  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ROOT / "models" / "tiny_default.pt"))
    parser.add_argument("--frames", type=int, default=20, help="timed frames")
    parser.add_argument("--warmup", type=int, default=3, help="frames run first, not timed")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of PyTorch and onnxruntime")
    parser.add_argument("--points", type=int, default=40_000, help="LiDAR points per frame (about)")
    parser.add_argument("--bucket", type=int, default=65_536, help="LiDAR bucket of the fixed-shape paths")
    parser.add_argument("--name", default="onnx_vs_eager")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, cfg = load_detector(args.checkpoint)
    rig = cfg.load_rig()
    image_size = (rig.image_height, rig.image_width)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        sidecar = export.main(["--checkpoint", args.checkpoint, "--out", folder, "--lidar-bucket", str(args.bucket),
                               "--check-frames", "8", "--no-tensorrt"])
        export_s = time.perf_counter() - started
        onnx_runner = OnnxRunner(folder, intra_op_threads=args.threads)
        fixed_runner = FixedShapeRunner(model, cfg, lidar_bucket=args.bucket)
        frames = check_sequence(rig, args.warmup + args.frames, image_size)
        generator = torch.Generator().manual_seed(1)
        for index, inputs in enumerate(frames):
            if inputs.lidar_points is not None:
                inputs.lidar_points = [lidar_cloud(0.1 * index, generator, ground_points=args.points - 800)]
        times = {"eager": [], "fixed_shape_eager": [], "onnxruntime": []}
        states = {"eager": model.initial_state(), "fixed_shape_eager": None, "onnxruntime": None}
        paths = {"eager": model.infer, "fixed_shape_eager": fixed_runner.infer, "onnxruntime": onnx_runner.infer}
        objects = {name: [] for name in paths}
        for index, inputs in enumerate(frames):
            for name, infer in paths.items():
                seconds, (detections, states[name]) = timed(lambda: infer(inputs, states[name]))
                if index >= args.warmup:
                    times[name].append(seconds)
                    objects[name].append(len(detections[0]["scores"]))
    median_ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    per_frame_ratio = {name: statistics.median(t / e for t, e in zip(times[name], times["eager"]))
                       for name in ("fixed_shape_eager", "onnxruntime")}
    result = {
        "checkpoint": Path(args.checkpoint).name, "config": cfg.name, "image_size": list(image_size),
        "cameras": rig.num_cameras, "lidar_points_about": args.points, "lidar_bucket": args.bucket,
        "frames": args.frames, "warmup": args.warmup, "threads": args.threads,
        "load_average_1_5_15": list(os.getloadavg()),
        "machine_loaded": "2 cores shared with a training run and other jobs: absolute times are noise, "
                          "the ratios within this run are the result",
        "export_and_check_s": round(export_s, 1),
        "onnx_check_vs_eager": sidecar["check"],
        "median_ms_per_frame": {k: round(v, 1) for k, v in median_ms.items()},
        "ratio_of_medians_vs_eager": {k: round(median_ms[k] / median_ms["eager"], 3)
                                      for k in ("fixed_shape_eager", "onnxruntime")},
        "median_of_per_frame_ratios_vs_eager": {k: round(v, 3) for k, v in per_frame_ratio.items()},
        "same_object_counts": objects["eager"] == objects["fixed_shape_eager"] == objects["onnxruntime"],
    }
    path = write_result(args.name, result)
    print(path.read_text())


if __name__ == "__main__":
    main()
