"""bench/seed_sets.py: per-set target figures, their spread and paired differences, by hand."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from seed_sets import cache_path, paired_differences, set_figures, summarise  # noqa: E402


def passes(clean: float, crash2: float, no_lidar: float) -> dict[str, dict]:
    return {"clean/full": {"mAP": 0.6, "NDS": clean, "mAVE": 0.4}, "crash2/full": {"NDS": crash2},
            "clean/no_lidar": {"NDS": no_lidar}}


def test_set_figures_are_ratios_to_clean_and_the_margin_over_the_camera_only_model():
    row = set_figures(passes(0.60, 0.57, 0.40), camera_only_nds=0.42)
    assert row["crash2 / clean"] == pytest.approx(0.95)
    assert row["no-LiDAR - camera-only"] == pytest.approx(-0.02)
    assert "frame_lost / clean" not in row                      # a pass not run gives no figure
    assert "no-LiDAR - camera-only" not in set_figures(passes(0.6, 0.6, 0.4), camera_only_nds=None)
    tracked = passes(0.6, 0.6, 0.4)
    tracked["clean/full"].update(id_switches_per_100_gt=1.5, car_median_id_keep_fraction=None)   # no cars
    row = set_figures(tracked, camera_only_nds=None)
    assert row["ids per 100 GT"] == 1.5 and "car id keep" not in row


def test_the_camera_only_recovery_is_the_share_of_the_crash2_loss_won_back_and_absent_without_a_loss():
    figures = {"clean/full": {"mAP": 0.3, "NDS": 0.40, "mAVE": 0.8}, "crash2/none": {"NDS": 0.36},
               "crash2/full": {"NDS": 0.39}, "crash2/no_hold": {"NDS": 0.37}}
    row = set_figures(figures, camera_only_nds=None)
    assert row["camera-only crash2 recovery"] == pytest.approx(0.75)
    assert row["crash2 recovery without the hold"] == pytest.approx(0.25)
    figures["crash2/none"] = {"NDS": 0.41}                      # crash2 cost nothing on this set
    assert "camera-only crash2 recovery" not in set_figures(figures, camera_only_nds=None)


def test_a_cache_key_changes_with_the_config_the_code_loads_not_only_with_the_file(tmp_path, monkeypatch):
    from dataclasses import replace

    import torch

    from seed_sets import cache_key, file_digest
    from sparsecomp_core.config import to_dict
    from sparsecomp_core.models import detector
    from sparsecomp_core.models.model_config import load_model_config

    path = tmp_path / "model.pt"
    stored = to_dict(load_model_config("tiny"))
    stored.pop("blind_zone_hold")                               # a file written before the hold existed
    torch.save({"model": {}, "model_config": stored}, path)
    before = cache_key(str(path))
    assert before.split("_")[0] == file_digest(str(path))
    loaded = detector.checkpoint_model_config(path)
    monkeypatch.setattr(detector, "checkpoint_model_config",     # as if the code's default had changed
                        lambda p: replace(loaded, blind_zone_hold=replace(loaded.blind_zone_hold, max_age_s=0.5)))
    after = cache_key(str(path))
    assert after.split("_")[0] == before.split("_")[0] and after != before


def test_summary_counts_the_sets_meeting_each_goal_and_paired_differences_are_per_set():
    reference = {"a": set_figures(passes(0.60, 0.60, 0.40), 0.40), "b": set_figures(passes(0.50, 0.48, 0.30), 0.40),
                 "c": set_figures(passes(0.70, 0.665, 0.45), 0.40)}
    summary = summarise(reference)
    crash = summary["crash2 / clean"]
    assert crash["mean"] == pytest.approx((1.0 + 0.96 + 0.95) / 3)
    assert crash["min"] == pytest.approx(0.95) and crash["n"] == 3
    assert crash["sets_meeting_goal"] == 1 and crash["goal"] == ">= 0.97"
    assert summary["no-LiDAR - camera-only"]["sets_meeting_goal"] == 2     # 0.0 meets ">= 0"
    assert summary["mAVE"]["sets_meeting_goal"] == 3 and "goal" not in summary["no-LiDAR NDS"]
    assert summary["clean NDS"]["sd"] == pytest.approx(0.1)
    reference["b"]["ids per 100 GT"] = 2.5                          # only one set has it: counted over that one
    assert summarise(reference)["ids per 100 GT"]["n"] == 1
    assert summarise(reference)["ids per 100 GT"]["sets_meeting_goal"] == 0
    del reference["b"]["ids per 100 GT"]

    candidate = {"a": set_figures(passes(0.62, 0.62, 0.41), 0.40), "b": set_figures(passes(0.52, 0.52, 0.32), 0.40)}
    differences = paired_differences(candidate, reference)          # only the sets both have: a, b
    assert differences["clean NDS"]["mean"] == pytest.approx(0.02) and differences["clean NDS"]["n"] == 2
    assert differences["crash2 / clean"]["mean"] == pytest.approx((0.0 + 0.04) / 2)


def test_cached_reports_are_keyed_by_weights_set_pass_and_frame_limit(tmp_path):
    full = cache_path(str(tmp_path), "abc", "v1.0-synthetic-seed29", "crash2/full", None)
    assert full.name == "abc_v1.0-synthetic-seed29_crash2-full.json"
    assert cache_path(str(tmp_path), "abc", "v1.0-synthetic-seed29", "crash2/full", 4) != full
    assert cache_path(None, "abc", "v1.0-synthetic-seed29", "crash2/full", None) is None


def test_pooling_keeps_same_named_samples_of_two_sets_apart_and_weighs_boxes_not_sets():
    import numpy as np

    from sparsecomp_core.evaluation.detection_metrics import Detection
    from seed_sets import pooled_figures, pooled_names

    def car(sample: str, x: float, score: float = 1.0) -> Detection:
        return Detection(sample, np.array([x, 0.0, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0, 0.0]), 0, score)

    samples = [f"scene-0000/{i}" for i in range(4)]              # both sets have a scene-0000
    found = pooled_names({s: [car(s, 10.0)] for s in samples}, [car(s, 10.0) for s in samples], "seedA")
    missed = pooled_names({s: [car(s, 20.0)] for s in samples}, [], "seedB")
    assert set(found[0]).isdisjoint(missed[0]) and all(p.sample.startswith("seedA/") for p in found[1])
    pooled = pooled_figures({"seedA": {"clean/full": found}, "seedB": {"clean/full": missed}}, ["clean/full"])
    alone = pooled_figures({"seedA": {"clean/full": found}}, ["clean/full"])
    assert alone["clean/full"]["mAP"] == pytest.approx(1.0, abs=0.02)
    # half of the pooled cars are never detected: the pool's AP is about half, not set A's
    assert 0.3 < pooled["clean/full"]["mAP"] < 0.6
