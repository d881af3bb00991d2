"""bench/crash_sectors.py: blind arcs from the rig, live evidence of blind-arc boxes, oracle detections."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from sparsecomp_core.evaluation.detection_metrics import Detection
from sparsecomp_core.evaluation.evaluate import EvaluationRun
from sparsecomp_core.rig import load_rig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from crash_sectors import covered_headings, evidence_lags, oracle_predictions  # noqa: E402


def blind_arc() -> np.ndarray:
    rig = load_rig("default7")
    live = [i for i, name in enumerate(rig.camera_names) if name not in ("CAM_FRONT_WIDE", "CAM_REAR_LEFT")]
    return ~covered_headings(rig.calibration(1), rig.image_width, live)


def box(x: float, y: float) -> np.ndarray:
    return np.array([x, y, 0.0, 4.0, 2.0, 1.5, 0.0, 0.0, 0.0, 0.0])


def test_the_default_rig_loses_the_arc_behind_the_left_side_camera_only():
    blind = blind_arc()
    assert np.flatnonzero(blind).tolist() == list(range(111, 151))
    rig = load_rig("default7")
    assert not covered_headings(rig.calibration(1), rig.image_width, []).any()
    assert covered_headings(rig.calibration(1), rig.image_width, list(range(7))).all()


def test_evidence_counts_frames_back_to_a_heading_a_live_camera_saw():
    """The ego stands still; a parked car at heading 100 deg (seen) then 120 and 140 deg (blind);
    a second car is in the blind arc from the start; poses are identity, so headings are global."""
    run = EvaluationRun("crash2", "none")
    run.ego_poses["s"] = [np.eye(4)] * 3
    run.timestamps["s"] = [0, 100_000, 200_000]
    for index, heading_deg in enumerate([100.0, 120.0, 140.0]):
        rad = np.radians(heading_deg)
        sample = f"s/{index}"
        run.gts[sample] = [Detection(sample, box(10 * np.cos(rad), 10 * np.sin(rad)), 0, track_id=1),
                           Detection(sample, box(-12.0, 12.0), 0, track_id=2)]    # 135 deg throughout
        run.sequences.setdefault("s", []).append((run.gts[sample], []))
    lags = evidence_lags(run, blind_arc())
    assert lags == {("s/1", 1): 1, ("s/2", 1): 2, ("s/0", 2): None, ("s/1", 2): None, ("s/2", 2): None}

    clean_preds = [Detection("s/2", box(10 * np.cos(np.radians(140)), 10 * np.sin(np.radians(140))), 0, 0.9),
                   Detection("s/2", box(-12.5, 12.0), 0, 0.8),        # the never-seen car
                   Detection("s/2", box(-3.0, 9.0), 0, 0.7)]          # a false positive in the arc
    clean = EvaluationRun("clean", "full", gts=run.gts, preds=clean_preds)
    outside = Detection("s/2", box(20.0, 0.0), 0, 0.5)
    fault = EvaluationRun("crash2", "none", gts=run.gts, preds=[outside, Detection("s/2", box(-12.0, 12.0), 0, 0.4)])
    with_evidence = oracle_predictions(fault, clean, blind_arc(),
                                       lambda g: lags.get((g.sample, g.track_id)) is not None)
    assert with_evidence == [outside, clean_preds[0]]
    whole_arc = oracle_predictions(fault, clean, blind_arc(), lambda g: True)
    assert whole_arc == [outside, clean_preds[0], clean_preds[1]]


def test_crash_recall_counts_found_boxes_by_region_and_range():
    """bench/crash_recall.py: a box is found by a detection of its class at or above the
    operating score within 2 m; regions from the rig (blind arc 111-150 deg under crash2)."""
    from crash_recall import REGIONS, recall_table, regions_of_rig

    regions = regions_of_rig("default7")
    assert np.flatnonzero(regions == 0).tolist() == list(range(111, 151))
    assert REGIONS[regions[0]] == "crashed + live camera"           # the front-wide camera crashed, the tele sees on
    assert REGIONS[regions[270]] == "live cameras only"             # right side: no crashed camera looks there

    def at(heading_deg: float, distance: float) -> np.ndarray:
        rad = np.radians(heading_deg)
        return box(distance * np.cos(rad), distance * np.sin(rad))

    gts = {"s/0": [Detection("s/0", at(130, 10), 0), Detection("s/0", at(130, 25), 0),
                   Detection("s/0", at(270, 10), 0)],
           "s/1": [Detection("s/1", at(130, 10), 0)]}
    clean = [Detection("s/0", at(130, 10) + [1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 0.9),   # 1 m off: found
             Detection("s/0", at(130, 25), 1, 0.9),                                       # other class: not
             Detection("s/0", at(270, 10), 0, 0.9), Detection("s/1", at(130, 10), 0, 0.5)]
    crash = [Detection("s/0", at(130, 10), 0, 0.2),                                       # below 0.3: not
             Detection("s/0", at(270, 10), 0, 0.3), Detection("s/1", at(130, 13), 0, 0.9)]  # 3 m off: not
    table = recall_table(gts, {"clean": clean, "crash2": crash}, regions)
    assert table["blind arc", "< 20 m"] == {"boxes": 2, "clean recall": 1.0, "crash2 recall": 0.0}
    assert table["blind arc", "20-35 m"] == {"boxes": 1, "clean recall": 0.0, "crash2 recall": 0.0}
    assert table["live cameras only", "all"] == {"boxes": 1, "clean recall": 1.0, "crash2 recall": 1.0}
    assert table["all", "all"] == {"boxes": 4, "clean recall": 0.75, "crash2 recall": 0.25}
