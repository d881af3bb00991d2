"""The main job (`make demo`) on a quiet CPU and with busy-loop processes loading it.

Runs `python -m sparsecomp_ros.demo` once per load level (0 and 2 busy-loop
processes by default) and collects each run's summary: frames in / out /
skipped (model busy), cameras masked without an injected fault, latency,
when the two injected faults were masked, recall / precision per phase, the
node's load verdicts.

    python bench/demo_under_load.py [--busy 0 2] [--out outputs/demo_load]

Writes bench/results/demo_under_load-cpu.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 2], help="busy-loop processes per run")
    parser.add_argument("--out", default="outputs/demo_load")
    args = parser.parse_args()
    from common import write_result

    runs = {}
    out = Path(args.out)                 # one folder: the scene and its bag are generated once
    for busy in args.busy:
        command = [sys.executable, "-m", "sparsecomp_ros.demo", "--out", str(out), "--busy-loops", str(busy)]
        print(f"[bench] {' '.join(command[1:])}", flush=True)
        subprocess.run(command, check=True)
        runs[f"busy_loops_{busy}"] = json.loads((out / "summary.json").read_text())
        (out / f"summary_busy{busy}.json").write_text(json.dumps(runs[f"busy_loops_{busy}"], indent=2))
    path = write_result("demo_under_load", {
        "setup": "make demo's job (held-out generated scene, 60 frames at 0.25x, CAM_FRONT_LEFT topic dead from "
                 "2 s, CAM_REAR black from 4 s) with N busy-loop processes loading the CPU meanwhile",
        "runs": runs})
    for name, summary in runs.items():
        print(f"{name}: frames in {summary['frames_in']}, out {summary['frames_out']}, skipped "
              f"{summary['frames_skipped_model_busy']}, falsely masked {summary['falsely_masked_camera_frames'] or 'none'}, "
              f"latency p50 {summary['latency_ms']['p50']:.0f} / p99 {summary['latency_ms']['p99']:.0f} ms")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
