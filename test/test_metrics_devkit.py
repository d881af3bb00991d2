"""Our AP and TP errors equal nuscenes-devkit's on identical boxes."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT
from sparsecomp_core.evaluation.detection_metrics import (DISTANCE_THRESHOLDS, TP_METRICS, Detection, accumulate,
                                                          average_precision, tp_error)

DEVKIT_PYTHON = REPO_ROOT / ".venv-devkit" / "bin" / "python"
CLASSES = {0: "car", 3: "pedestrian", 6: "barrier", 7: "traffic_cone"}


def scenario(seed: int):
    """Ground truth in 12 samples and noisy predictions with misses, false
    positives, yaw flips and velocity errors."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for s in range(12):
        for _ in range(rng.integers(3, 9)):
            label = int(rng.choice(list(CLASSES)))
            box = np.array([*rng.uniform(-40, 40, 2), 0.8, *rng.uniform(0.4, 5.0, 3), rng.uniform(-math.pi, math.pi),
                            *rng.normal(0, 4, 2), 0.0])
            gts.append((f"s{s}", box, label))
            if rng.random() < 0.8:
                noisy = box.copy()
                noisy[:2] += rng.normal(0, 0.8, 2)
                noisy[3:6] *= rng.uniform(0.8, 1.2, 3)
                noisy[6] += rng.choice([0.0, math.pi]) + rng.normal(0, 0.2)
                noisy[7:9] += rng.normal(0, 1.0, 2)
                preds.append((f"s{s}", noisy, label, float(rng.uniform(0.05, 1.0))))
        for _ in range(rng.integers(0, 4)):
            preds.append((f"s{s}", np.array([*rng.uniform(-40, 40, 2), 0.8, 2, 2, 2, 0, 0, 0, 0.0]),
                          int(rng.choice(list(CLASSES))), float(rng.uniform(0.05, 0.6))))
    return gts, preds


@pytest.fixture(scope="module")
def devkit_python() -> Path:
    done = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "setup_devkit_env.sh")], capture_output=True, text=True)
    if done.returncode != 0 or not DEVKIT_PYTHON.exists():
        pytest.fail("nuscenes-devkit did not install here:\n" + done.stdout[-2000:] + done.stderr[-2000:])
    return DEVKIT_PYTHON


@pytest.mark.parametrize("seed", [0, 1])
def test_ap_and_tp_errors_match_nuscenes_devkit(devkit_python, seed):
    gts, preds = scenario(seed)
    payload = {"classes": list(CLASSES.values()), "thresholds": list(DISTANCE_THRESHOLDS),
               "gt": [{"sample": s, "box": b.tolist(), "name": CLASSES[l]} for s, b, l in gts],
               "pred": [{"sample": s, "box": b.tolist(), "name": CLASSES[l], "score": c} for s, b, l, c in preds]}
    done = subprocess.run([str(devkit_python), str(Path(__file__).parent / "helpers" / "devkit_metrics.py")],
                          input=json.dumps(payload), capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    devkit = json.loads(done.stdout)
    ours_gt: dict[str, list[Detection]] = {}
    for s, b, l in gts:
        ours_gt.setdefault(s, []).append(Detection(s, b, l))
    ours_pred = [Detection(s, b, l, c) for s, b, l, c in preds]
    compared = 0
    for label, name in CLASSES.items():
        for threshold in DISTANCE_THRESHOLDS:
            data = accumulate(ours_gt, ours_pred, label, threshold, math.pi if name == "barrier" else 2 * math.pi)
            expected = devkit[f"{name}/{threshold}"]
            assert average_precision(data) == pytest.approx(expected["ap"], abs=1e-9), (name, threshold)
            for metric in TP_METRICS:
                assert tp_error(data, metric) == pytest.approx(expected[metric], abs=1e-9), (name, threshold, metric)
            compared += 1
    assert compared == 16 and any(devkit[k]["ap"] > 0.2 for k in devkit)   # a non-trivial case
