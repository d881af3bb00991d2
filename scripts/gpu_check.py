"""Everything that needs a GPU, in one command: the CUDA tests and every GPU benchmark.

    make gpu-check                     # = python3 scripts/gpu_check.py
    python3 scripts/gpu_check.py [--only tests model_inference ...] [--dry-run]

Runs from the source tree with the interpreter that runs it (no venv build: the
GPU machine has a CUDA torch, numpy, onnx, onnxruntime and torchvision, and no
package index). Each step is a child process with its own time limit; a step
that fails or runs out of time is recorded and the next one runs. Results:
each benchmark's ``bench/results/<name>-gpu.json`` and a summary
``bench/results/gpu_check-gpu.json`` (machine, commit, ``pip list``, per step:
command, exit code, seconds, the tail of its output; the pytest outcomes per
test). Budget: the default steps finish within ~20 minutes on one H100.

ROS parts (the node on CUDA end to end) run only where rclpy and our messages
import (their cp312 wheels carried, msg/ built); otherwise they are recorded
as skipped with the reason.

--dry-run runs every step on the CPU with the smallest settings, results in a
temporary folder (bench/results is not touched): it checks this harness and
the scripts' command lines on a machine without a GPU, nothing more.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: int
    needs_ros: bool = False
    dry_command: list[str] | None = None       # the CPU dry run's (smaller) command line
    notes: list[str] = field(default_factory=list)


def cuda_test_files(has_ros: bool) -> tuple[list[str], list[str]]:
    """(test files with cuda-marked tests to run, those left out because they need ROS and it is absent)."""
    run, left_out = [], []
    for path in sorted((REPO / "test").glob("test_*.py")):
        text = path.read_text()
        if "mark.cuda" not in text:
            continue
        needs_ros = "import rclpy" in text or "sparsecomp_ros" in text
        (left_out if needs_ros and not has_ros else run).append(str(path.relative_to(REPO)))
    return run, left_out


def steps(python: str, junit: Path, test_files: list[str], export_dir: Path) -> list[Step]:
    """The steps in order; ~budget in comments (one H100)."""
    bench = lambda script, *args: [python, f"bench/{script}", *args]  # noqa: E731
    pytest = [python, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rs", f"--junitxml={junit}"]
    return [
        Step("tests", pytest + test_files, 900,
             dry_command=pytest + ["test/test_cuda.py", "-k", "fp32 and not full"]),                     # ~4 min
        Step("model_inference", bench("model_inference.py", "--precisions", "fp32", "bf16", "fp16", "--repeats", "50"),
             600, dry_command=bench("model_inference.py", "--config", "tiny", "--precisions", "fp32", "--failed", "2",
                                    "--repeats", "2")),                                               # ~5 min
        Step("model_inference_compiled", bench("model_inference.py", "--paths", "fixed", "compiled", "--precisions",
                                               "bf16", "--failed", "0", "2", "--repeats", "50",
                                               "--name", "model_inference_compiled"), 600,
             dry_command=bench("model_inference.py", "--config", "tiny", "--paths", "fixed", "--precisions", "fp32",
                               "--failed", "2", "--repeats", "2", "--name", "model_inference_compiled")),
        Step("export", [python, "-m", "sparsecomp_core.export", "--checkpoint", "models/tiny_default.pt", "--out",
                        str(export_dir)], 420),                   # onnxruntime parity; TensorRT where importable
        Step("profile_inference", bench("profile_inference.py", "--precision", "bf16", "--failed", "2"), 240,
             dry_command=bench("profile_inference.py", "--config", "tiny", "--precision", "fp32", "--frames", "2")),
        Step("temporal_completion", bench("temporal_completion.py", "--repeats", "20"), 300,
             dry_command=bench("temporal_completion.py", "--repeats", "1")),
        Step("optimizations", bench("optimizations.py", "--repeats", "20"), 300,
             dry_command=bench("optimizations.py", "--repeats", "1")),
        Step("ros_end_to_end", bench("ros_end_to_end.py", "--device", "cuda", "--precision", "bf16", "--rate", "1.0"),
             420, needs_ros=True,
             dry_command=bench("ros_end_to_end.py", "--frames", "8", "--out", "outputs/gpu_check_dry_e2e")),
    ]


def ros_available(python: str) -> tuple[bool, str]:
    probe = subprocess.run([python, "-c", "import rclpy, sparsecomp.msg"], capture_output=True, text=True,
                           cwd=REPO, env=child_env(None))
    return probe.returncode == 0, (probe.stderr.strip().splitlines() or ["?"])[-1]


def child_env(results_dir: Path | None, dry: bool = False) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if results_dir is not None:
        env["SPARSECOMP_RESULTS_DIR"] = str(results_dir)
    if dry:
        env["SPARSECOMP_CUDA_TESTS_DEVICE"] = "cpu"
    return env


def run_step(step: Step, env: dict, dry: bool) -> dict:
    command = step.dry_command if dry and step.dry_command else step.command
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=step.timeout_s)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:     # its captured output comes as bytes
        code = "timeout"
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                         for part in (exc.stdout or b"", exc.stderr or b""))
    seconds = time.monotonic() - started
    print(f"[gpu-check] {step.name}: exit {code} after {seconds:.0f} s", flush=True)
    return {"name": step.name, "command": " ".join(Path(command[0]).name if i == 0 else part
                                                   for i, part in enumerate(command)),
            "exit_code": code, "seconds": round(seconds, 1), "output_tail": output[-4000:]}


def test_outcomes(junit: Path) -> dict[str, str]:
    """test id -> passed / failed / error / skipped: <reason>, from pytest's JUnit XML."""
    if not junit.exists():
        return {}
    outcomes = {}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = child.tag
            elif child.tag == "skipped":
                outcome = f"skipped: {child.get('message', '')}"
        outcomes[name] = outcome
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", help="run only these steps")
    parser.add_argument("--dry-run", action="store_true", help="CPU, smallest settings, results in a temporary folder")
    parser.add_argument("--budget-s", type=float, default=1380.0,
                        help="start no step after this many seconds (the steps' order is their priority)")
    args = parser.parse_args()
    python = sys.executable
    import torch
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu-check: torch sees no CUDA device here (use --dry-run to check the harness on a CPU)",
              file=sys.stderr)
        return 2
    from common import RESULTS_DIR, commit, machine
    results_dir = Path(tempfile.mkdtemp(prefix="gpu_check_dry_")) if args.dry_run else RESULTS_DIR
    results_dir.mkdir(parents=True, exist_ok=True)
    junit = results_dir / "gpu_check_tests.xml"
    env = child_env(results_dir, args.dry_run)
    has_ros, ros_reason = ros_available(python)
    test_files, needing_ros = cuda_test_files(has_ros)
    pip_list = subprocess.run([python, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True)
    record = {"benchmark": "gpu_check", "command": " ".join(["python3", *sys.argv]), "commit": commit(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "dry_run": args.dry_run,
              "ros_available": has_ros, "pip_list": pip_list.stdout.split(), "steps": []}
    if not has_ros:
        record["ros_skipped_because"] = ros_reason
        record["test_files_not_run_without_ros"] = needing_ros
    started = time.monotonic()
    failed = False
    export_dir = Path(tempfile.mkdtemp(prefix="gpu_check_export_"))
    for step in steps(python, junit, test_files, export_dir):
        if args.only and step.name not in args.only:
            continue
        if time.monotonic() - started > args.budget_s:
            record["steps"].append({"name": step.name, "exit_code": "skipped", "reason": "over the time budget"})
            print(f"[gpu-check] {step.name}: skipped (over the {args.budget_s:.0f} s budget)", flush=True)
            continue
        if step.needs_ros and not has_ros:
            record["steps"].append({"name": step.name, "exit_code": "skipped", "reason": f"ROS not importable: "
                                                                                          f"{ros_reason}"})
            print(f"[gpu-check] {step.name}: skipped (ROS not importable)", flush=True)
            continue
        result = run_step(step, env, args.dry_run)
        if step.name == "tests":
            result["outcomes"] = test_outcomes(junit)
        if step.name == "export" and (export_dir / "sparsecomp.json").exists():
            # the sidecar holds the onnxruntime (and TensorRT) checks and timings; the graph stays out
            sidecar = results_dir / f"export_sidecar-{'cpu' if args.dry_run else 'gpu'}.json"
            sidecar.write_text((export_dir / "sparsecomp.json").read_text())
            result["sidecar"] = sidecar.name
        record["steps"].append(result)
        failed |= result["exit_code"] != 0
    record["total_seconds"] = round(time.monotonic() - started, 1)
    out = results_dir / f"gpu_check-{'cpu' if args.dry_run else 'gpu'}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"[gpu-check] {len(record['steps'])} steps in {record['total_seconds']:.0f} s; summary: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
