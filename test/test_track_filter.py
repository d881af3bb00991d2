"""The track filter (models/head/track_filter.py): velocity from an id's whole track."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sparsecomp_core.models.head.track_filter import TrackFilterConfig, filter_detections, filter_sample

CFG = TrackFilterConfig()
DT_US = 100_000          # 10 Hz


def ego_pose(t: float) -> torch.Tensor:
    """The ego drives a left curve: ego2global [4, 4] at time t (s)."""
    yaw = 0.1 * t
    pose = torch.eye(4, dtype=torch.float64)
    pose[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    pose[:2, 3] = torch.tensor([8.0 * t, 0.5 * t * t])
    return pose


def ego_box(global_centre: np.ndarray, head_velocity_global: np.ndarray, pose: torch.Tensor) -> torch.Tensor:
    """A box [10] in the ego frame of ``pose`` from a global centre and a global-axes velocity."""
    rotation, translation = pose[:2, :2].numpy(), pose[:2, 3].numpy()
    box = np.zeros(10)
    box[:2] = rotation.T @ (global_centre - translation)
    box[3:6] = (4.5, 1.9, 1.6)
    box[7:9] = rotation.T @ head_velocity_global
    return torch.from_numpy(box).float()


def global_velocity(box: torch.Tensor, pose: torch.Tensor) -> np.ndarray:
    return pose[:2, :2].numpy() @ box[7:9].double().numpy()


def run_track(frames: int, true_velocity=np.array([6.0, -2.0]), label: int = 0, seed: int = 0,
              centre_noise_m: float = 0.3, head_error=np.array([-4.0, 3.0])):
    """One object moving at ``true_velocity`` (global) under id 7, seen by an ego on a curve
    with noisy centres and a head velocity off by ``head_error``. Returns per frame the
    filtered box, the unfiltered box and the pose."""
    rng = np.random.default_rng(seed)
    state, out = None, []
    for frame in range(frames):
        t = frame * DT_US * 1e-6
        pose = ego_pose(t)
        centre = np.array([20.0, 5.0]) + true_velocity * t + rng.normal(0, centre_noise_m, 2)
        box = ego_box(centre, true_velocity + head_error, pose)[None]
        boxes, state = filter_sample(box, torch.tensor([label]), torch.tensor([7]), pose, frame * DT_US, state, CFG)
        out.append((boxes[0], box[0], pose))
    return out, state


def test_a_new_track_keeps_the_heads_velocity_exactly():
    (filtered, raw, _), = run_track(1)[0]
    assert torch.equal(filtered, raw)


def test_a_long_track_gets_its_velocity_from_the_displacement_under_ego_motion():
    """True 6.3 m/s, the head off by 5 m/s, centres off by 0.3 m: after 3 s the filtered
    velocity is within 0.5 m/s (the head alone: 5 m/s), in a turning, accelerating ego frame."""
    frames, _ = run_track(30)
    truth = np.array([6.0, -2.0])
    errors = [np.linalg.norm(global_velocity(f, pose) - truth) for f, _, pose in frames[-5:]]
    head_errors = [np.linalg.norm(global_velocity(r, pose) - truth) for _, r, pose in frames[-5:]]
    assert max(errors) < 0.5 and min(head_errors) > 4.9
    # Nothing but the velocity changes.
    for filtered, raw, _ in frames:
        assert torch.equal(filtered[:7], raw[:7]) and filtered[9] == raw[9]


def test_a_static_class_has_velocity_zero_and_no_track():
    frames, state = run_track(5, label=7)
    assert all(torch.all(f[7:9] == 0) for f, _, _ in frames)
    assert len(state.ids) == 0


def test_an_id_that_jumps_to_another_object_starts_a_new_track():
    frames, state = run_track(20)
    pose = ego_pose(2.0)
    far_away = ego_box(np.array([60.0, 40.0]), np.array([1.0, 1.0]), pose)[None]
    boxes, state = filter_sample(far_away, torch.tensor([0]), torch.tensor([7]), pose, 20 * DT_US, state, CFG)
    torch.testing.assert_close(boxes, far_away)          # the head's velocity, not the old track's
    assert list(state.ids) == [7]


@pytest.mark.parametrize("case", ["time went back", "gap too long", "other sequence"])
def test_a_scene_change_forgets_every_track(case):
    frames, state = run_track(20)
    time_us = {"time went back": 0, "gap too long": 20 * DT_US + int(3e6), "other sequence": 20 * DT_US}[case]
    sequence = "other" if case == "other sequence" else None
    state = replace(state, sequence_id="first") if sequence else state
    pose = ego_pose(time_us * 1e-6)
    box = ego_box(np.array([32.0, 1.0]), np.array([1.0, 1.0]), pose)[None]
    boxes, _ = filter_sample(box, torch.tensor([0]), torch.tensor([7]), pose, time_us, state, CFG, sequence)
    torch.testing.assert_close(boxes, box)


def test_a_track_missed_for_a_while_continues_and_one_unseen_too_long_is_forgotten():
    truth = np.array([6.0, -2.0])
    for missed_s, continues in ((0.5, True), (2.5, False)):
        _, state = run_track(30)                     # its last frame at 2.9 s
        t = 2.9
        while t + 0.5 < 2.9 + missed_s - 1e-9:      # frames with only another object in the meantime
            t += 0.5
            pose = ego_pose(t)
            other = ego_box(np.array([0.0, 30.0]), np.zeros(2), pose)[None]
            _, state = filter_sample(other, torch.tensor([0]), torch.tensor([8]), pose, round(t * 1e6), state, CFG)
        t = 2.9 + missed_s
        pose = ego_pose(t)
        box = ego_box(np.array([20.0, 5.0]) + truth * t, truth + np.array([-4.0, 3.0]), pose)[None]
        boxes, _ = filter_sample(box, torch.tensor([0]), torch.tensor([7]), pose, round(t * 1e6), state, CFG)
        error = np.linalg.norm(global_velocity(boxes[0], pose) - truth)
        assert (error < 1.0) == continues, (missed_s, error)


def test_filter_detections_per_sample_and_disabled_is_the_identity():
    detections = [{"boxes": torch.zeros(1, 10), "labels": torch.tensor([0]), "ids": torch.tensor([3]),
                   "scores": torch.tensor([0.9])} for _ in range(2)]
    poses, times = torch.eye(4).expand(2, 4, 4), torch.tensor([0, 0])
    same, states = filter_detections(detections, poses, times, (), replace(CFG, enabled=False))
    assert same is detections and states == ()
    _, states = filter_detections(detections, poses, times, (), CFG, ["a", "b"])
    assert len(states) == 2 and [s.sequence_id for s in states] == ["a", "b"]
    moved = [{**d, "boxes": torch.tensor([[1.0] + [0.0] * 9])} for d in detections]
    out, _ = filter_detections(moved, poses, torch.tensor([100_000, 100_000]), states, CFG, ["a", "b"])
    # Both samples moved 1 m in 0.1 s against a head velocity of 0: each filters its own track.
    assert all(float(o["boxes"][0, 7]) > 0.5 for o in out)
