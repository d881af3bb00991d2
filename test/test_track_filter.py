"""The track filter (models/head/track_filter.py): velocity from an id's whole track."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from sparsecomp_core.models.head.track_filter import TrackFilterConfig, filter_detections, filter_sample

CFG = TrackFilterConfig(heading_speed_sigmas=0.0, smooth_centres=False,   # velocity and ids only
                        velocity_along_heading_classes=[], class_velocity_noise_mps={})
ONE = torch.tensor([0.9])     # a confident detection's score
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
              centre_noise_m: float = 0.3, head_error=np.array([-4.0, 3.0]), global_yaw: float | None = None,
              cfg: TrackFilterConfig = CFG):
    """One object moving at ``true_velocity`` (global) under id 7, seen by an ego on a curve
    with noisy centres and a head velocity off by ``head_error`` (and a heading of
    ``global_yaw`` in the global frame, else 0 in the ego frame). Returns per frame the
    filtered box, the unfiltered box and the pose."""
    rng = np.random.default_rng(seed)
    state, out = None, []
    for frame in range(frames):
        t = frame * DT_US * 1e-6
        pose = ego_pose(t)
        centre = np.array([20.0, 5.0]) + true_velocity * t + rng.normal(0, centre_noise_m, 2)
        box = ego_box(centre, true_velocity + head_error, pose)[None]
        if global_yaw is not None:
            box[0, 6] = global_yaw - 0.1 * t                    # ego_pose's yaw is 0.1 t
        boxes, _, state = filter_sample(box, torch.tensor([label]), torch.tensor([7]), ONE, pose, frame * DT_US, state, cfg)
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
    boxes, _, state = filter_sample(far_away, torch.tensor([0]), torch.tensor([7]), ONE, pose, 20 * DT_US, state, CFG)
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
    boxes, _, _ = filter_sample(box, torch.tensor([0]), torch.tensor([7]), ONE, pose, time_us, state, CFG, sequence)
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
            _, _, state = filter_sample(other, torch.tensor([0]), torch.tensor([8]), ONE, pose, round(t * 1e6), state, CFG)
        t = 2.9 + missed_s
        pose = ego_pose(t)
        box = ego_box(np.array([20.0, 5.0]) + truth * t, truth + np.array([-4.0, 3.0]), pose)[None]
        boxes, _, _ = filter_sample(box, torch.tensor([0]), torch.tensor([7]), ONE, pose, round(t * 1e6), state, CFG)
        error = np.linalg.norm(global_velocity(boxes[0], pose) - truth)
        assert (error < 1.0) == continues, (missed_s, error)


def test_filter_detections_per_sample_and_disabled_is_the_identity():
    detections = [{"boxes": torch.zeros(1, 10), "labels": torch.tensor([0]), "ids": torch.tensor([3]),
                   "scores": ONE} for _ in range(2)]
    poses, times = torch.eye(4).expand(2, 4, 4), torch.tensor([0, 0])
    same, states = filter_detections(detections, poses, times, (), replace(CFG, enabled=False))
    assert same is detections and states == ()
    _, states = filter_detections(detections, poses, times, (), CFG, ["a", "b"])
    assert len(states) == 2 and [s.sequence_id for s in states] == ["a", "b"]
    moved = [{**d, "boxes": torch.tensor([[1.0] + [0.0] * 9])} for d in detections]
    out, _ = filter_detections(moved, poses, torch.tensor([100_000, 100_000]), states, CFG, ["a", "b"])
    # Both samples moved 1 m in 0.1 s against a head velocity of 0: each filters its own track.
    assert all(float(o["boxes"][0, 7]) > 0.5 for o in out)


def lost_and_back(gap_frames: int, new_id: int = 42, score: float = 0.9, offset=np.zeros(2), then_frames: int = 3,
                  cfg: TrackFilterConfig = CFG):
    """Id 7 tracked for 3 s at 6.3 m/s, missed ``gap_frames`` (only another object seen),
    then back (shifted by ``offset``) under the head's ``new_id`` for ``then_frames``.
    Returns the published ids and the global velocities of those frames."""
    truth = np.array([6.0, -2.0])
    _, state = run_track(30)
    frame = 30
    for _ in range(gap_frames):
        pose = ego_pose(frame * 0.1)
        other = ego_box(np.array([0.0, 40.0]), np.zeros(2), pose)[None]
        _, _, state = filter_sample(other, torch.tensor([0]), torch.tensor([8]), ONE, pose, frame * DT_US, state, cfg)
        frame += 1
    ids, velocities = [], []
    for _ in range(then_frames):
        t = frame * 0.1
        pose = ego_pose(t)
        box = ego_box(np.array([20.0, 5.0]) + truth * t + offset, truth + np.array([-4.0, 3.0]), pose)[None]
        boxes, out_ids, state = filter_sample(box, torch.tensor([0]), torch.tensor([new_id]), torch.tensor([score]),
                                              pose, frame * DT_US, state, cfg)
        ids.append(int(out_ids[0]))
        velocities.append(global_velocity(boxes[0], pose))
        frame += 1
    return ids, velocities


def test_an_object_missed_for_a_second_comes_back_under_its_old_id_and_keeps_it():
    ids, velocities = lost_and_back(gap_frames=10)
    assert ids == [7, 7, 7]                              # the head's new id 42 is an alias of 7 from then on
    assert all(np.linalg.norm(v - np.array([6.0, -2.0])) < 1.0 for v in velocities)   # the track's velocity


@pytest.mark.parametrize("case", ["too far", "not confident", "re-identification off"])
def test_a_new_id_keeps_its_own_id_when_it_cannot_be_the_lost_object(case):
    kwargs = {"too far": dict(offset=np.array([0.0, 3.5])), "not confident": dict(score=0.2),
              "re-identification off": dict(cfg=replace(CFG, reid_gate_m=0.0))}[case]
    ids, _ = lost_and_back(gap_frames=10, **kwargs)
    assert ids == [42, 42, 42]


def test_when_the_head_continues_the_old_id_too_the_alias_gives_way():
    """Id 7 lost, back as 42 (re-identified as 7); then the head outputs 7 itself
    beside 42: 7 keeps its id, 42 gets its own, and no id is published twice."""
    _, state = run_track(30)
    truth = np.array([6.0, -2.0])
    for frame in range(30, 40):
        pose = ego_pose(frame * 0.1)
        _, _, state = filter_sample(ego_box(np.array([0.0, 40.0]), np.zeros(2), pose)[None], torch.tensor([0]),
                                    torch.tensor([8]), ONE, pose, frame * DT_US, state, CFG)
    t = 4.0
    pose = ego_pose(t)
    back = ego_box(np.array([20.0, 5.0]) + truth * t, truth, pose)[None]
    _, out_ids, state = filter_sample(back, torch.tensor([0]), torch.tensor([42]), ONE, pose, 40 * DT_US, state, CFG)
    assert out_ids.tolist() == [7] and state.aliases == {42: 7}
    t = 4.1
    pose = ego_pose(t)
    both = torch.cat([ego_box(np.array([20.0, 5.0]) + truth * t, truth, pose)[None],
                      ego_box(np.array([20.0, 9.0]) + truth * t, truth, pose)[None]])
    _, out_ids, state = filter_sample(both, torch.tensor([0, 0]), torch.tensor([42, 7]), torch.tensor([0.9, 0.9]),
                                      pose, 41 * DT_US, state, CFG)
    assert out_ids.tolist() == [42, 7] and 42 not in state.aliases


HEADING = replace(CFG, heading_speed_sigmas=2.0)


def global_yaw_of(box: torch.Tensor, pose: torch.Tensor) -> float:
    return float(box[6]) + math.atan2(float(pose[1, 0]), float(pose[0, 0]))


def angle_between(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


def test_a_vehicle_seen_backwards_turns_round_once_its_motion_is_sure_and_keeps_its_axis():
    """A car drives at 6.3 m/s; the head sees it backwards (heading off by 180 deg + 0.1 rad) and
    its velocity off by 5 m/s. A new track is not sure of its motion (std 3 m/s): the heading
    stays the head's. Once the track's speed is 2 std sure, the box faces its motion with the
    head's axis (turned by exactly pi). Without the option the heading is the head's."""
    truth = np.array([6.0, -2.0])
    motion = math.atan2(truth[1], truth[0])
    frames, _ = run_track(30, true_velocity=truth, global_yaw=motion + math.pi + 0.1, cfg=HEADING)
    first, raw, _ = frames[0]
    assert float(first[6]) == float(raw[6])
    for filtered, raw, pose in frames[-10:]:
        assert angle_between(global_yaw_of(filtered, pose), motion) == pytest.approx(0.1, abs=1e-5)
        assert angle_between(float(filtered[6]), float(raw[6])) == pytest.approx(math.pi, abs=1e-5)
    off, _ = run_track(30, true_velocity=truth, global_yaw=motion + math.pi + 0.1)
    assert all(float(f[6]) == float(r[6]) for f, r, _ in off)


def test_a_walking_person_faces_the_way_it_walks_and_a_standing_one_keeps_the_heads_heading():
    """People (a square footprint: the head cannot see their heading) take the direction of a
    sure velocity; a vehicle within 90 deg of its motion keeps the head's heading, and so do a
    riderless cycle (not in heading_from_motion_classes) and a person that stands (0.2 m/s,
    below heading_min_speed_mps)."""
    walking = np.array([-1.0, 1.0])
    frames, _ = run_track(40, true_velocity=walking, label=3, centre_noise_m=0.05, head_error=np.zeros(2),
                          global_yaw=0.3, cfg=HEADING)
    for filtered, _, pose in frames[-10:]:
        assert angle_between(global_yaw_of(filtered, pose), math.atan2(1.0, -1.0)) < 0.1
    frames, _ = run_track(40, true_velocity=np.array([6.0, -2.0]), global_yaw=-0.8, cfg=HEADING)
    assert all(float(f[6]) == float(r[6]) for f, r, _ in frames)
    pushed = run_track(40, true_velocity=walking, label=5, centre_noise_m=0.05, head_error=np.zeros(2),
                       global_yaw=0.3, cfg=HEADING)[0]           # a riderless cycle only moves when pushed
    assert all(float(f[6]) == float(r[6]) for f, r, _ in pushed)
    standing = np.array([0.2, 0.0])
    frames, _ = run_track(40, true_velocity=standing, label=3, centre_noise_m=0.02, head_error=np.zeros(2),
                          global_yaw=2.0, cfg=HEADING)
    assert all(float(f[6]) == float(r[6]) for f, r, _ in frames)


def test_a_vehicle_publishes_only_the_velocity_along_its_axis_and_a_person_all_of_it():
    """A car's head velocity off sideways by 3 m/s: with velocity_along_heading_classes the published
    velocity is the filtered one's component along the box's axis (the lateral error gone on a new
    track already), whichever way the box faces; a person keeps both components."""
    along = replace(CFG, velocity_along_heading_classes=[0])
    pose = ego_pose(0.0)
    for yaw in (0.0, math.pi):            # the axis, not the heading's sign, decides
        box = ego_box(np.array([20.0, 5.0]), np.array([6.0, 3.0]), pose)[None]
        box[0, 6] = yaw
        car, _, _ = filter_sample(box, torch.tensor([0]), torch.tensor([7]), ONE, pose, 0, None, along)
        assert car[0, 7:9].tolist() == pytest.approx([6.0, 0.0], abs=1e-5)
        person, _, _ = filter_sample(box, torch.tensor([3]), torch.tensor([7]), ONE, pose, 0, None, along)
        assert person[0, 7:9].tolist() == pytest.approx([6.0, 3.0], abs=1e-5)


def test_a_class_whose_head_velocity_is_good_keeps_it_against_jittering_centres():
    """A parked riderless cycle (class 5): the head says 0.05 m/s off, centres jitter by 0.3 m.
    With the shared 3 m/s velocity noise the jitter becomes motion; with the class's own
    0.2 m/s the filtered velocity stays near the head's."""
    still, small_error = np.zeros(2), np.array([0.05, 0.0])
    shared, _ = run_track(30, true_velocity=still, label=5, head_error=small_error)
    own, _ = run_track(30, true_velocity=still, label=5, head_error=small_error,
                       cfg=replace(CFG, class_velocity_noise_mps={"riderless_non_motor": 0.2}))
    shared_errors = [np.linalg.norm(global_velocity(f, pose)) for f, _, pose in shared[3:]]
    own_errors = [np.linalg.norm(global_velocity(f, pose)) for f, _, pose in own[3:]]
    assert max(own_errors) < 0.15 and max(shared_errors) > 0.4
    # Another class keeps the shared noise: the same car track is filtered as before.
    car, _ = run_track(30, cfg=replace(CFG, class_velocity_noise_mps={"riderless_non_motor": 0.2}))
    assert all(torch.equal(a, b) for (a, _, _), (b, _, _) in zip(car, run_track(30)[0]))


def test_a_per_class_velocity_noise_for_an_unknown_class_is_refused():
    with pytest.raises(ValueError, match="unknown classes"):
        TrackFilterConfig(class_velocity_noise_mps={"tram": 0.5})
    with pytest.raises(ValueError, match="> 0"):
        TrackFilterConfig(class_velocity_noise_mps={"car": 0.0})
