"""The blind-zone hold (models/head/blind_zone_hold.py): an object that moves into the view of
failed cameras only is still published, where it should be, for a while."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sparsecomp_core.models.head.blind_zone_hold import (BlindZoneHoldConfig, HEAVILY_OCCLUDED, hold_detections,
                                                         hold_sample, seen_by_cameras)
from sparsecomp_core.rig import load_rig

RIG = load_rig("default7")
CALIBRATION = RIG.calibration(1)
INTRINSICS = CALIBRATION.intrinsics[0].double().numpy()
CAM2EGO = CALIBRATION.cam2ego[0].double().numpy()
IMAGE_SIZE = CALIBRATION.image_size
CRASH2 = np.isin(RIG.camera_names, ["CAM_FRONT_WIDE", "CAM_REAR_LEFT"])    # the evaluation's crash2
NONE_FAILED = np.zeros(RIG.num_cameras, dtype=bool)
CFG = BlindZoneHoldConfig()
DT_US = 100_000


def ego_pose(t: float) -> np.ndarray:
    """The ego drives forward at 8 m/s, turning slowly left: ego2global [4, 4] at time t (s)."""
    yaw = 0.1 * t
    pose = np.eye(4)
    pose[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    pose[:2, 3] = (8.0 * t, 0.0)
    return pose


def at_bearing(bearing_deg: float, range_m: float) -> np.ndarray:
    """An ego-frame centre [3] at this bearing (deg, CCW from +x) and range."""
    angle = math.radians(bearing_deg)
    return np.array([range_m * math.cos(angle), range_m * math.sin(angle), 0.8])


def to_global(centre_ego: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return pose[:3, :3] @ centre_ego + pose[:3, 3]


def to_ego(centre_global: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return pose[:3, :3].T @ (centre_global - pose[:3, 3])


def detection(centres: list[np.ndarray], ids: list[int], scores: list[float] | None = None,
              labels: list[int] | None = None, velocities: list[np.ndarray] | None = None) -> dict:
    """A post-processed detection dict (head.postprocess's keys) of cars at ego-frame centres."""
    n = len(centres)
    boxes = torch.zeros(n, 10)
    for k, centre in enumerate(centres):
        boxes[k, :3] = torch.from_numpy(centre).float()
        boxes[k, 3:6] = torch.tensor((4.5, 1.9, 1.6))
        boxes[k, 6] = 0.3
        if velocities is not None:
            boxes[k, 7:9] = torch.from_numpy(velocities[k]).float()
    scores = torch.tensor(scores or [0.8] * n, dtype=torch.float32)
    labels = torch.tensor(labels or [0] * n, dtype=torch.int64)
    class_probabilities = torch.zeros(n, 8)
    class_probabilities[torch.arange(n), labels] = scores
    occlusion_probabilities = torch.zeros(n, 4)
    occlusion_probabilities[:, 0] = 1.0
    return {"boxes": boxes, "scores": scores, "labels": labels, "ids": torch.tensor(ids, dtype=torch.int64),
            "class_probabilities": class_probabilities, "occlusion": torch.zeros(n, dtype=torch.int64),
            "occlusion_probabilities": occlusion_probabilities}


def step(det: dict, failed: np.ndarray, t: float, state, cfg: BlindZoneHoldConfig = CFG, sequence: object = "s"):
    return hold_sample(det, failed, INTRINSICS, CAM2EGO, IMAGE_SIZE, ego_pose(t), int(round(t * 1e6)), state, cfg,
                       sequence)


def test_the_rigs_blind_arc_under_crash2_is_seen_by_failed_cameras_only():
    points = np.stack([at_bearing(b, 10.0) for b in (0, 45, 90, 130, 140, 180, -90)])
    seen = seen_by_cameras(points, INTRINSICS, CAM2EGO, IMAGE_SIZE)
    blind = seen[:, CRASH2].any(axis=1) & ~seen[:, ~CRASH2].any(axis=1)
    assert blind.tolist() == [False, False, False, True, True, False, False]
    assert seen.any(axis=1).all()                     # the rig sees all around


def test_a_parked_car_that_passes_into_the_blind_arc_is_held_where_it_stands():
    parked = to_global(at_bearing(100.0, 6.0), ego_pose(0.0))       # the front-left camera sees it
    out, state = step(detection([to_ego(parked, ego_pose(0.0))], [7]), CRASH2, 0.0, None)
    assert len(out["ids"]) == 1
    for frame in range(1, 6):                                       # the ego drives on: it is behind-left now
        t = frame * DT_US * 1e-6
        out, state = step(detection([], []), CRASH2, t, state)
        expected = to_ego(parked, ego_pose(t))
        bearing = math.degrees(math.atan2(expected[1], expected[0]))
        if not 111 < bearing < 150:
            continue
        assert out["ids"].tolist() == [7]
        assert np.allclose(out["boxes"][0, :3].numpy(), expected, atol=1e-3)
        assert out["scores"][0].item() == pytest.approx(0.8 * math.exp(-CFG.score_decay_per_s * t), rel=1e-5)
        assert out["occlusion"].tolist() == [HEAVILY_OCCLUDED]
        assert out["occlusion_probabilities"][0, HEAVILY_OCCLUDED].item() == 1.0
        # the heading stays the global heading it was detected with
        assert out["boxes"][0, 6].item() == pytest.approx(0.3 + 0.1 * 0.0 - 0.1 * t, abs=1e-5)
        break
    else:
        pytest.fail("the car never reached the blind arc: the test's geometry is wrong")


def test_a_moving_car_is_held_where_its_velocity_takes_it():
    velocity_global = np.array([6.0, 1.0])
    start = to_global(at_bearing(130.0, 9.0), ego_pose(0.0))
    velocity_ego = ego_pose(0.0)[:2, :2].T @ velocity_global
    _, state = step(detection([to_ego(start, ego_pose(0.0))], [3], velocities=[velocity_ego]), NONE_FAILED, 0.0, None)
    out, _ = step(detection([], []), CRASH2, 0.2, state)
    predicted = start.copy()
    predicted[:2] += velocity_global * 0.2
    assert out["ids"].tolist() == [3]
    assert np.allclose(out["boxes"][0, :3].numpy(), to_ego(predicted, ego_pose(0.2)), atol=1e-3)
    assert np.allclose(ego_pose(0.2)[:2, :2] @ out["boxes"][0, 7:9].double().numpy(), velocity_global, atol=1e-4)


def test_nothing_is_held_in_a_live_cameras_view_without_failures_or_after_max_age():
    in_blind_arc = at_bearing(130.0, 9.0)
    _, state = step(detection([in_blind_arc], [1]), NONE_FAILED, 0.0, None)
    out, _ = step(detection([], []), NONE_FAILED, 0.1, state)                  # no camera failed
    assert len(out["ids"]) == 0
    in_front = to_global(at_bearing(20.0, 15.0), ego_pose(0.0))
    _, state = step(detection([to_ego(in_front, ego_pose(0.0))], [2]), CRASH2, 0.0, None)
    out, _ = step(detection([], []), CRASH2, 0.1, state)                       # the front-left camera sees it
    assert len(out["ids"]) == 0
    # a parked car in the arc while the ego stands: held for max_age_s after its last detection
    still = replace(CFG, max_age_s=0.35)
    _, state = hold_sample(detection([at_bearing(130.0, 9.0)], [4]), CRASH2, INTRINSICS, CAM2EGO, IMAGE_SIZE,
                           np.eye(4), 0, None, still, "s")
    held = []
    for frame in range(1, 6):
        out, state = hold_sample(detection([], []), CRASH2, INTRINSICS, CAM2EGO, IMAGE_SIZE, np.eye(4),
                                 frame * DT_US, state, still, "s")
        held.append(out["ids"].tolist())
    assert held == [[4], [4], [4], [], []]


def test_a_detection_of_its_class_nearby_suppresses_the_hold_and_low_scores_are_not_remembered():
    centre = at_bearing(130.0, 9.0)
    _, state = step(detection([centre], [5]), CRASH2, 0.0, None, replace(CFG, max_age_s=1.0))
    pose = ego_pose(0.1)
    here = to_ego(to_global(centre, ego_pose(0.0)), pose)
    out, _ = step(detection([here + np.array([0.5, 0.0, 0.0])], [9]), CRASH2, 0.1, state)   # re-found under id 9
    assert out["ids"].tolist() == [9]
    out, _ = step(detection([here + np.array([0.5, 0.0, 0.0])], [9], labels=[3]), CRASH2, 0.1, state)  # a person
    assert sorted(out["ids"].tolist()) == [5, 9]
    _, state = step(detection([centre], [6], scores=[CFG.min_score / 2]), CRASH2, 0.0, None)
    out, _ = step(detection([], []), CRASH2, 0.1, state)
    assert len(out["ids"]) == 0


def test_a_scene_change_forgets_and_the_batch_form_keeps_one_state_per_sample():
    centre = at_bearing(130.0, 9.0)
    _, state = step(detection([centre], [5]), CRASH2, 0.0, None)
    out, _ = step(detection([], []), CRASH2, 0.1, state, sequence="other")
    assert len(out["ids"]) == 0
    out, _ = step(detection([], []), CRASH2, -0.1, state)                     # time went back
    assert len(out["ids"]) == 0

    poses = torch.from_numpy(np.stack([np.eye(4), np.eye(4)]))
    intrinsics, cam2ego = CALIBRATION.intrinsics.expand(2, -1, -1, -1), CALIBRATION.cam2ego.expand(2, -1, -1, -1)
    mask = torch.from_numpy(np.stack([CRASH2, NONE_FAILED]))
    first = [detection([centre], [5]), detection([centre], [5])]
    _, states = hold_detections(first, mask, intrinsics, cam2ego, IMAGE_SIZE, poses, torch.tensor([0, 0]), (),
                                CFG, ["a", "b"])
    out, _ = hold_detections([detection([], []), detection([], [])], mask, intrinsics, cam2ego, IMAGE_SIZE, poses,
                             torch.tensor([DT_US, DT_US]), states, CFG, ["a", "b"])
    assert [o["ids"].tolist() for o in out] == [[5], []]                         # only the sample with failures
    off, same = hold_detections(first, mask, intrinsics, cam2ego, IMAGE_SIZE, poses, torch.tensor([0, 0]), (),
                                replace(CFG, enabled=False))
    assert off is first and same == ()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_age_s"):
        BlindZoneHoldConfig(max_age_s=0.0)
    with pytest.raises(ValueError, match="min_score"):
        BlindZoneHoldConfig(min_score=1.5)


def test_a_held_object_whose_score_decays_below_the_threshold_is_not_published():
    centre = at_bearing(130.0, 9.0)
    _, state = hold_sample(detection([centre], [8], scores=[0.5]), CRASH2, INTRINSICS, CAM2EGO, IMAGE_SIZE,
                           np.eye(4), 0, None, CFG, "s")
    published = []
    for frame in range(1, 15):
        out, state = hold_sample(detection([], []), CRASH2, INTRINSICS, CAM2EGO, IMAGE_SIZE, np.eye(4),
                                 frame * DT_US, state, CFG, "s", score_threshold=0.45)
        published.append(len(out["ids"]))
    # 0.5 * exp(-0.2 t) >= 0.45 while t <= ln(0.5 / 0.45) / 0.2 = 0.53 s
    assert published == [1] * 5 + [0] * 9


def test_nothing_is_held_while_the_sample_has_a_live_lidar_but_objects_are_remembered():
    centre = at_bearing(130.0, 9.0)
    poses = torch.from_numpy(np.stack([np.eye(4)] * 3))
    intrinsics, cam2ego = CALIBRATION.intrinsics.expand(3, -1, -1, -1), CALIBRATION.cam2ego.expand(3, -1, -1, -1)
    mask = torch.from_numpy(np.stack([CRASH2] * 3))
    clouds = [torch.ones(10, 5), torch.zeros(0, 5), torch.ones(10, 5)]      # live, LiDAR failed, live
    seen = [detection([centre], [5])] * 3
    _, states = hold_detections(seen, mask, intrinsics, cam2ego, IMAGE_SIZE, poses, torch.tensor([0] * 3), (),
                                CFG, ["a", "b", "c"], lidar_points=clouds)
    out, states = hold_detections([detection([], [])] * 3, mask, intrinsics, cam2ego, IMAGE_SIZE, poses,
                                  torch.tensor([DT_US] * 3), states, CFG, ["a", "b", "c"],
                                  lidar_points=[clouds[0], clouds[1], torch.zeros(0, 5)])
    assert [o["ids"].tolist() for o in out] == [[], [5], [5]]   # the third's LiDAR died: held from memory
