"""Tracking evaluation: ground-truth track ids are the objects' instance tokens, and the
tracking metrics equal hand-computed values and nuscenes-devkit's TrackingEval."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.eval_fixtures import small_dataset
from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.evaluation.detection_metrics import Detection
from sparsecomp_core.evaluation.evaluate import ground_truth_detections
from sparsecomp_core.evaluation.metrics import tracking_report
from sparsecomp_core.evaluation.tracking_metrics import (devkit_tracking_report, operating_point_report,
                                                         tracking_metrics)
from sparsecomp_core.rig import load_rig
from test_metrics_devkit import devkit_python  # noqa: F401  (fixture)


def car(x: float, y: float = 0.0) -> np.ndarray:
    return np.array([x, y, 0.8, 4.0, 1.8, 1.5, 0.0, 0.0, 0.0, 0.0])


def fed_back(frames: list[list[Detection]], ids=lambda index, d: d.track_id) -> dict:
    """Ground truth as predictions (score 0.9) with the ids ``ids(frame index, detection)``."""
    return {"scene": [(gt, [Detection(d.sample, d.box.copy(), d.label, 0.9, d.occlusion, ids(index, d)) for d in gt])
                      for index, gt in enumerate(frames)]}


@pytest.fixture(scope="module")
def ground_truth_stream(tmp_path_factory) -> list[list[Detection]]:
    """A generated scene's ground truth, frame by frame, as the evaluation builds it."""
    root = small_dataset(tmp_path_factory.mktemp("tracking"), frames=10, seed=5)
    dataset = SequenceDataset(str(root), "v1.0-eval", load_rig("default7"), (64, 128))
    track_ids: dict[str, int] = {}
    frames = [ground_truth_detections(f"scene/{i}", dataset.load(0, i).targets, track_ids)
              for i in range(dataset.scene_length(0))]
    tokens = [dataset.load(0, i).targets["instance_tokens"] for i in range(dataset.scene_length(0))]
    # The annotated set changes (objects enter and leave): a per-frame numbering would renumber them.
    assert any(set(a) != set(b) for a, b in zip(tokens, tokens[1:]))
    return frames


def test_ground_truth_fed_back_with_its_ids_has_no_id_switches_and_a_swap_counts_exactly(ground_truth_stream):
    frames = ground_truth_stream
    perfect = fed_back(frames)
    assert tracking_report(perfect)["id_switches"] == 0
    report = tracking_metrics(perfect)
    assert report["ids"] == 0 and report["operating_point"]["id_switches"] == 0
    assert report["amota"] == pytest.approx(1.0) and report["amotp"] == pytest.approx(0.0)

    # Swap the ids of two objects present in every frame, more than 2 m apart, from frame 5 on.
    present = [set(d.track_id for d in f) for f in frames]
    always = sorted(set.intersection(*present))
    first = {d.track_id: d for d in frames[5]}
    a, b = next((a, b) for a in always for b in always
                if a < b and np.linalg.norm(first[a].box[:2] - first[b].box[:2]) > 4.0)
    swap = {a: b, b: a}
    swapped = fed_back(frames, lambda index, d: swap.get(d.track_id, d.track_id) if index >= 5 else d.track_id)
    assert tracking_report(swapped)["id_switches"] == 2
    report = tracking_metrics(swapped)
    assert report["ids"] == 2 and report["operating_point"]["id_switches"] == 2


def hand_case() -> dict:
    """Cars A at x=0 and B at x=10 in 4 frames; predictions 0.5 m off, all scoring 0.5: id 1
    on A except frame 2 (a gap), B's id changes from 2 to 3 at frame 2, a false positive id 4
    at frame 1."""
    frames = []
    for t in range(4):
        gt = [Detection(f"s{t}", car(0.0), 0, track_id=100), Detection(f"s{t}", car(10.0), 0, track_id=101)]
        pred = [Detection(f"s{t}", car(10.5), 0, 0.5, track_id=2 if t < 2 else 3)]
        if t != 2:
            pred.append(Detection(f"s{t}", car(0.5), 0, 0.5, track_id=1))
        if t == 1:
            pred.append(Detection(f"s{t}", car(30.0), 0, 0.5, track_id=4))
        frames.append((gt, pred))
    return {"scene": frames}


def test_tracking_metrics_equal_hand_computed_values():
    report = devkit_tracking_report(hand_case())
    # A's gap is interpolated (matched); B switches once; one false positive. 8 GT, 7 matches.
    assert (report["gt"], report["tp"], report["ids"], report["fp"], report["fn"]) == (8, 7, 1, 1, 0)
    assert report["mota"] == pytest.approx(1 - 2 / 8) and report["motp"] == pytest.approx(0.5)
    # All scores equal, so one threshold; recall of the matches 7/8 reaches 34 of the 40
    # recall levels 0.1 + k 0.9 / 39. MOTAR = 1 - (2 - (1/8) 8) / 7 = 6/7; unreached levels
    # count MOTAR 0 and MOTP 2 m.
    assert report["amota"] == pytest.approx(34 * (6 / 7) / 40)
    assert report["amotp"] == pytest.approx((34 * 0.5 + 6 * 2.0) / 40)

    operating = operating_point_report(hand_case(), score_threshold=0.3, min_continuous_frames=4)
    # No interpolation at the operating point: A is missed at frame 2 and keeps id 1 after it.
    assert operating["id_switches"] == 1 and operating["gt_object_frames"] == 8
    assert operating["id_switches_per_100_gt"] == pytest.approx(12.5)
    assert operating["per_class"] == {"car": {"id_switches": 1, "gt_object_frames": 8}}
    cars = operating["continuously_visible"]["car"]
    # A: ids 1, 1, -, 1 (keeps 3/4, runs 2 and 1); B: 2, 2, 3, 3 (keeps 2/4, runs 2 and 2).
    assert cars["objects"] == 2 and cars["median_id_keep_fraction"] == pytest.approx((0.75 + 0.5) / 2)
    assert cars["median_id_run_frames"] == 2.0
    assert operating_point_report(hand_case(), score_threshold=0.6)["id_switches"] == 0   # nothing published


DEVKIT_NAMES = {0: "car", 1: "truck", 2: "bus", 3: "pedestrian", 4: "bicycle", 5: "motorcycle"}


def random_scenes(seed: int) -> tuple[dict, dict]:
    """Scenes of moving objects with gaps in the ground truth, and tracker output with
    position noise, dropped boxes (gaps), id changes, class confusions, false positives
    and per-track scores. Returns (our sequences, timestamps per sequence)."""
    rng = np.random.default_rng(seed)
    sequences, times = {}, {}
    for scene in range(3):
        length = 16
        stamps = np.cumsum(rng.integers(90_000, 110_000, length)).tolist()      # about 10 Hz, jittered
        objects = []
        for k in range(int(rng.integers(6, 11))):
            start = int(rng.integers(0, length - 3))
            objects.append(dict(track=scene * 100 + k, label=int(rng.integers(0, 6)), start=start,
                                end=int(rng.integers(start + 3, length + 1)), origin=rng.uniform(-30, 30, 2),
                                velocity=rng.normal(0, 3, 2), pred_id=1000 * (scene + 1) + k,
                                score=float(rng.uniform(0.2, 0.95))))
        frames = []
        for t in range(length):
            gt, pred = [], []
            for o in objects:
                if not o["start"] <= t < o["end"]:
                    continue
                xy = o["origin"] + o["velocity"] * (stamps[t] - stamps[0]) / 1e6
                if rng.random() > 0.1 or t in (o["start"], o["end"] - 1):   # GT gaps inside a track
                    gt.append(Detection(f"{scene}/{t}", car(*xy), o["label"], track_id=o["track"]))
                if rng.random() < 0.1:
                    o["pred_id"] += 50                                        # the tracker changes its id
                if rng.random() < 0.85:
                    label = o["label"] if rng.random() < 0.9 else int(rng.integers(0, 6))
                    noisy = xy + rng.normal(0, 0.6, 2)
                    pred.append(Detection(f"{scene}/{t}", car(*noisy), label,
                                          float(np.clip(o["score"] + rng.normal(0, 0.05), 0.01, 1)),
                                          track_id=o["pred_id"]))
            for f in range(int(rng.integers(0, 3))):
                pred.append(Detection(f"{scene}/{t}", car(*rng.uniform(-30, 30, 2)), int(rng.integers(0, 6)),
                                      float(rng.uniform(0.05, 0.6)), track_id=90_000 + 100 * t + f + scene * 10_000))
            frames.append((gt, pred))
        sequences[f"scene{scene}"], times[f"scene{scene}"] = frames, stamps
    return sequences, times


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracking_metrics_equal_the_devkit_tracking_eval(devkit_python, seed):
    sequences, times = random_scenes(seed)

    def boxes(detections, with_score):
        return [{"id": str(d.track_id), "name": DEVKIT_NAMES[d.label], "xy": d.box[:2].tolist(),
                 **({"score": d.score} if with_score else {})} for d in detections]
    payload = {"scenes": {name: [{"timestamp": stamp, "gt": boxes(gt, False), "pred": boxes(pred, True)}
                                 for (gt, pred), stamp in zip(frames, times[name])]
                          for name, frames in sequences.items()}}
    done = subprocess.run([str(devkit_python), str(Path(__file__).parent / "helpers" / "devkit_tracking.py")],
                          input=json.dumps(payload), capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    devkit = json.loads(done.stdout)
    ours = devkit_tracking_report(sequences, times=times)
    assert sorted(DEVKIT_NAMES[label] for label in range(6) if label in
                  {d.label for f in sequences.values() for gt, _ in f for d in gt}) == sorted(devkit["per_class"])
    names = {"person": "pedestrian", "non_motor": "bicycle", "riderless_non_motor": "motorcycle"}
    for ours_name, metrics in ours["per_class"].items():
        expected = devkit["per_class"][names.get(ours_name, ours_name)]
        for metric, value in expected.items():
            assert metrics[metric] == pytest.approx(value, abs=1e-9, nan_ok=True), (ours_name, metric)
    for metric, value in devkit["overall"].items():
        if metric == "gt":          # the devkit averages the GT count over classes; we sum it
            continue
        assert ours[metric] == pytest.approx(value, abs=1e-9, nan_ok=True), metric
    assert devkit["overall"]["ids"] > 0 and 0.1 < devkit["overall"]["amota"] < 0.9     # a non-trivial case
