"""Where one inference frame spends its time: torch.profiler over streaming frames.

Full config (batch 1, 7 x 512 x 960, 120k points, history queues full), the
given precision and failed cameras. Prints the operators with the most device
time and the most host time, and the device-busy fraction (kernel time over
wall time: far below 1 means the frame is bound by Python/launches, not by
the GPU).

    python bench/profile_inference.py [--precision bf16] [--failed 2] [--frames 5] [--out profile.txt]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_inference import DTYPES, synthetic_frame  # noqa: E402

from sparsecomp_core.models.model_config import load_model_config  # noqa: E402
from sparsecomp_core.models.detector import build_detector  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="full")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16", choices=list(DTYPES))
    parser.add_argument("--failed", type=int, default=2, choices=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_model_config(args.config)
    rig = cfg.load_rig()
    model = build_detector(cfg).to(args.device).eval()
    dtype = DTYPES[args.precision]
    state = model.initial_state()
    frames = [synthetic_frame(rig, step, args.failed, args.device) for step in range(4 + args.frames)]

    def run(inputs) -> None:
        nonlocal state
        with torch.autocast(device_type=args.device, dtype=dtype or torch.float32, enabled=dtype is not None):
            _, state = model.infer(inputs, state)

    for inputs in frames[:4]:
        run(inputs)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    if args.device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        for inputs in frames[4:]:
            run(inputs)
        if args.device == "cuda":
            torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - started) * 1e3 / args.frames
    averages = prof.key_averages()
    lines = [f"config {args.config}, {args.precision}, {args.failed} failed cameras, {args.frames} frames; "
             f"wall {wall_ms:.1f} ms per frame (profiled, so slower than unprofiled)"]
    if args.device == "cuda":
        device_us = sum(e.self_device_time_total for e in averages if e.device_type == torch.autograd.DeviceType.CUDA)
        lines.append(f"device busy: {device_us / 1e3 / args.frames:.1f} ms per frame = "
                     f"{device_us / 1e3 / args.frames / wall_ms:.0%} of wall")
        lines.append(averages.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))
    lines.append(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=60))
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
