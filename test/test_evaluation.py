"""The metric report and the evaluation loop behave as specified."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsecomp_core import jsonio
from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.evaluation.detection_metrics import Detection
from sparsecomp_core.evaluation.evaluate import (FRAME_HOLD_S, apply_condition, cascade_variant, evaluate,
                                                 hold_lost_frames, standard_conditions)
from sparsecomp_core.evaluation.metrics import detection_report, tracking_report
from sparsecomp_core.rig import load_rig


def boxes(rng, n):
    return [np.array([*rng.uniform(-30, 30, 2), 0.8, 4.0, 1.8, 1.5, rng.uniform(-3, 3), *rng.normal(0, 3, 2), 0.0])
            for _ in range(n)]


def test_perfect_predictions_score_one_and_errors_zero():
    rng = np.random.default_rng(0)
    gts = {f"s{i}": [Detection(f"s{i}", b, label, occlusion=1, track_id=k) for k, (b, label) in
                     enumerate(zip(boxes(rng, 4), [0, 3, 6, 1]))] for i in range(5)}
    preds = [Detection(d.sample, d.box.copy(), d.label, 0.9, d.occlusion, 100 + d.track_id) for b in gts.values() for d in b]
    report = detection_report(gts, preds)
    assert report["mAP"] == pytest.approx(1.0) and report["NDS"] == pytest.approx(1.0)
    assert report["mATE"] == pytest.approx(0.0, abs=1e-9) and report["mAVE"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(report["per_class"]["barrier"]["vel_err"])       # static: no velocity error
    tracking = tracking_report({"seq": [(gts[s], [p for p in preds if p.sample == s]) for s in sorted(gts)]})
    assert tracking["occlusion_accuracy"] == 1.0 and tracking["id_switches"] == 0


def test_errors_lower_the_scores_and_id_changes_count_as_switches():
    rng = np.random.default_rng(1)
    gts = {f"s{i}": [Detection(f"s{i}", b, 0, track_id=k) for k, b in enumerate(boxes(rng, 3))] for i in range(4)}
    shifted = []
    for i, sample in enumerate(sorted(gts)):
        for d in gts[sample]:
            box = d.box.copy()
            box[0] += 1.5                               # beyond 0.5 and 1 m, within 2 and 4 m
            shifted.append(Detection(sample, box, 0, 0.8, 0, d.track_id + (10 if i == 2 else 0)))
    report = detection_report(gts, shifted)
    ap = report["per_class"]["car"]["ap"]
    assert ap["0.5"] == 0.0 and ap["1.0"] == 0.0 and ap["2.0"] == pytest.approx(1.0) and ap["4.0"] == pytest.approx(1.0)
    assert report["mATE"] == pytest.approx(1.5, abs=1e-6) and report["mAP"] == pytest.approx(0.5)
    assert report["NDS"] == pytest.approx((5 * 0.5 + 0 + 1 + 1 + 1) / 9)     # ATE term 0, others perfect
    sequences = {"seq": [(gts[s], [p for p in shifted if p.sample == s]) for s in sorted(gts)]}
    assert tracking_report(sequences)["id_switches"] == 6      # all 3 tracks switch at frame 2 and back at 3


def test_conditions_and_variants(tmp_path):
    generate(tmp_path, "v1.0-eval", "default7", seed=9, scenes=1, frames=6, image_size=(64, 128), lidar_beams=8,
             lidar_azimuths=128, progress=False)
    rig = load_rig("default7")
    dataset = SequenceDataset(str(tmp_path), "v1.0-eval", rig, (64, 128))
    conditions = standard_conditions(rig.camera_names)
    rng = np.random.default_rng(0)
    crash = apply_condition(dataset.load(0, 1), conditions["crash2"], rig.camera_names, 1, 6, rng)
    assert crash.images[0].sum() == 0 and crash.camera_present[0] and crash.images[1].sum() > 0
    dead_early = apply_condition(dataset.load(0, 1), conditions["dead"], rig.camera_names, 1, 6, rng)
    dead_late = apply_condition(dataset.load(0, 4), conditions["dead"], rig.camera_names, 4, 6, rng)
    assert dead_early.camera_present.all() and not dead_late.camera_present[0] and not dead_late.camera_present[4]

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).parent))
    from test_detector import micro_config
    from sparsecomp_core.models.detector import build_detector
    model = build_detector(micro_config()).eval()
    with cascade_variant(model, "none"):
        assert model.camera_branch.cascade.temporal is None
    assert model.camera_branch.cascade.temporal is not None                 # restored
    with cascade_variant(model, "v1"):
        assert model.camera_branch.cascade.temporal.mode == "global"
    assert model.camera_branch.cascade.temporal.mode == "neighbours"
    report = evaluate(model, dataset, conditions["crash1"], "full", progress=False)
    assert report["frames"] == 6 and report["masked_camera_fraction"] == pytest.approx(1 / 7)
    assert 0.0 <= report["mAP"] <= 1.0
    assert evaluate(model, dataset, conditions["clean"], "full", progress=False, max_frames=2)["frames"] == 2
    # The dead topic (2 cameras from frame 3 of 6): the first dead frame is held from the one
    # before (0.1 s old), the next two are masked; without a hold all three are masked.
    held = evaluate(model, dataset, conditions["dead"], "full", progress=False)
    assert held["held_camera_fraction"] == pytest.approx(2 / 42)
    assert held["masked_camera_fraction"] == pytest.approx(4 / 42)
    unheld = evaluate(model, dataset, conditions["dead"], "full", progress=False, hold_s=0.0)
    assert unheld["held_camera_fraction"] == 0.0 and unheld["masked_camera_fraction"] == pytest.approx(6 / 42)


def test_a_lost_frame_takes_the_cameras_previous_image_placed_where_the_vehicle_was(tmp_path):
    generate(tmp_path, "v1.0-eval", "default7", seed=9, scenes=1, frames=4, image_size=(64, 128), lidar_beams=8,
             lidar_azimuths=128, progress=False)
    rig = load_rig("default7")
    dataset = SequenceDataset(str(tmp_path), "v1.0-eval", rig, (64, 128))
    delivered = {}
    first = dataset.load(0, 0)
    assert hold_lost_frames(first, delivered, FRAME_HOLD_S) == [] and sorted(delivered) == list(range(7))
    second = dataset.load(0, 1)
    expected_image, then_cam2ego = first.images[2].clone(), first.cam2ego[2].double()
    own_image = second.images[2].clone()
    second.images[2] = 0
    second.camera_present[2] = False
    others = second.images[3].clone()
    assert hold_lost_frames(second, delivered, FRAME_HOLD_S) == [2]
    assert second.camera_present[2] and torch.equal(second.images[2], expected_image)
    assert not torch.equal(second.images[2], own_image) and torch.equal(second.images[3], others)
    # The held camera sits where it was: the same point in the world, through either pose.
    point = torch.tensor([1.0, -2.0, 15.0, 1.0], dtype=torch.float64)         # camera coordinates
    world_then = first.ego2global.double() @ then_cam2ego @ point
    world_now = second.ego2global.double() @ second.cam2ego[2].double() @ point
    torch.testing.assert_close(world_now, world_then, atol=1e-3, rtol=0)
    assert not torch.allclose(second.cam2ego[2].double(), then_cam2ego, atol=0.05)   # the vehicle moved
    # Two frames lost in a row: the image is 0.2 s old by then, past the hold: failed and black.
    third = dataset.load(0, 2)
    third.images[2] = 0
    third.camera_present[2] = False
    assert hold_lost_frames(third, delivered, FRAME_HOLD_S) == []
    assert not third.camera_present[2] and third.images[2].sum() == 0
    assert hold_lost_frames(third, delivered, 0.0) == []


def test_undefined_figures_are_written_as_null_in_strict_json(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    gts = {"s0": [Detection("s0", b, label) for b, label in zip(boxes(rng, 2), [0, 6])]}
    report = detection_report(gts, [Detection("s0", d.box.copy(), d.label, 0.9) for d in gts["s0"]])
    text = jsonio.dumps({**report, "inf": float("inf"), "array": np.array([1.0, np.nan], dtype=np.float32)})
    parsed = jsonio.loads_strict(text)
    assert parsed["per_class"]["barrier"]["vel_err"] is None and parsed["inf"] is None and parsed["array"] == [1.0, None]
    with pytest.raises(ValueError):
        jsonio.loads_strict('{"x": NaN}')

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import common
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    written = common.write_result("nan_check", {"ap": float("nan"), "rows": [{"err": float("-inf")}]})
    parsed = jsonio.loads_strict(written.read_text())
    assert parsed["ap"] is None and parsed["rows"] == [{"err": None}]
