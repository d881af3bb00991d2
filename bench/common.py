"""Shared helpers for benchmarks: machine description, commit, result files."""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from sparsecomp_core.jsonio import dumps

# SPARSECOMP_RESULTS_DIR: elsewhere (scripts/gpu_check.py --dry-run keeps bench/results untouched).
RESULTS_DIR = Path(os.environ.get("SPARSECOMP_RESULTS_DIR") or Path(__file__).resolve().parent / "results")


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def commit() -> str:
    """git describe of the tree; SPARSECOMP_COMMIT names it where the tree is a
    copy without .git (e.g. a GPU machine that got only the files)."""
    if os.environ.get("SPARSECOMP_COMMIT"):
        return os.environ["SPARSECOMP_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def write_result(name: str, payload: dict) -> Path:
    """bench/results/<name>-<cpu|gpu>.json with machine, command and commit added."""
    device = "gpu" if torch.cuda.is_available() else "cpu"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}-{device}.json"
    record = {"benchmark": name, "command": " ".join([Path(sys.executable).name] + sys.argv),
              "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), **payload}
    path.write_text(dumps(record, indent=2) + "\n")         # NaN / inf -> null: strict JSON
    return path


def markdown_table(rows: list[dict], label: str, hidden: tuple[str, ...] = (), number_format: str = ".3g") -> str:
    """One row per dict: the ``label`` column first, then every other key of any row (in
    the order first seen) not in ``hidden``; floats in ``number_format``, "-" where a row
    lacks the key."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != label and k not in hidden]

    def cell(row: dict, key: str) -> str:
        if key not in row:
            return "-"
        return format(row[key], number_format) if isinstance(row[key], float) else str(row[key])

    lines = [f"| {label} | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in rows:
        lines.append(f"| {row[label]} | " + " | ".join(cell(row, k) for k in keys) + " |")
    return "\n".join(lines)


def evaluation_parser(doc: str, name: str, checkpoint: str | None = "models/tiny_default.pt",
                      version: str = "v1.0-synthetic-val", device: bool = True) -> argparse.ArgumentParser:
    """The arguments every held-out evaluation benchmark takes: --checkpoint (``None``: the
    script adds its own), --data-root, --version, --device (CUDA when torch sees one) and
    --name (the result file bench/results/<name>-<cpu|gpu>.json). The description is the
    docstring's first line."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if checkpoint is not None:
        parser.add_argument("--checkpoint", default=checkpoint)
    parser.add_argument("--data-root", default="data/synthetic")
    parser.add_argument("--version", default=version)
    if device:
        parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--name", default=name, help="result file bench/results/<name>-<cpu|gpu>.json")
    return parser


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
