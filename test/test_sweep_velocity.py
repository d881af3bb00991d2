"""Velocity measured from the merged LiDAR sweeps (models/head/sweep_velocity.py) and its use
as the track filter's velocity measurement."""
from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsecomp_core.data.sweeps import merge_sweeps
from sparsecomp_core.models.head.sweep_velocity import SweepVelocityConfig, sweep_velocities
from sparsecomp_core.models.head.track_filter import TrackFilterConfig, filter_detections, filter_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import toy_scene  # noqa: E402
from test_detector import micro_config  # noqa: E402

CFG = SweepVelocityConfig()
SWEEP_US = 100_000                     # 10 Hz
STAMPS = [1_000_000_000 - SWEEP_US * k for k in range(5)]     # the reference first, then older


def ego_pose(t: float) -> np.ndarray:
    """The ego drives 8 m/s on a left curve: ego2global [4, 4] at time t (s)."""
    yaw = 0.3 + 0.2 * t
    pose = np.eye(4)
    pose[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    pose[:2, 3] = [50.0 + 8.0 * t * math.cos(0.3), 20.0 + 8.0 * t * math.sin(0.3)]
    return pose


def surface_points(rng: np.random.Generator, length: float, width: float, height: float,
                   faces: tuple[str, ...], per_m2: float = 40.0, seen: float = 1.0) -> np.ndarray:
    """Random points [N, 3] on the named vertical faces of a box centred at the origin (x
    along its length), on the scan lines of 4 beams between 0.3 m above its bottom (z = 0)
    and its top: each sweep of a real LiDAR hits other spots of the same surfaces. Only
    a ``seen`` fraction of each face is hit, around a spot that wanders by up to a quarter
    of the face from sweep to sweep (the rest hidden, by other objects or the viewpoint)."""
    chunks = []
    beams = np.linspace(0.3, height, 4)
    for face in faces:
        along = face in ("left", "right")
        extent = length if along else width
        count = int(per_m2 * extent * seen * (height - 0.3))
        middle = 0.0 if seen == 1.0 else rng.uniform(-0.25, 0.25) * extent
        s = middle + rng.uniform(-extent * seen / 2, extent * seen / 2, count)
        z = rng.choice(beams, count) + rng.normal(0.0, 0.02, count)
        fixed = {"rear": -length / 2, "front": length / 2, "left": width / 2, "right": -width / 2}[face]
        xy = np.stack([s, np.full(count, fixed)], 1) if along else np.stack([np.full(count, fixed), s], 1)
        chunks.append(np.concatenate([xy, z[:, None]], 1))
    return np.concatenate(chunks)


def scene_sweeps(objects: list[dict], seed: int = 0, ground: bool = True) -> np.ndarray:
    """Merged sweeps [M, 5] of objects (global start centre [2], global velocity [2], yaw,
    size (l, w, h), faces seen) moving at constant velocity, each sweep taken from the ego
    pose of its time, with ground points; in the reference (newest) ego frame."""
    rng = np.random.default_rng(seed)
    sweeps = []
    for stamp in STAMPS:
        t = (stamp - STAMPS[0]) / 1e6                         # 0, -0.1, ... s
        pose = ego_pose(t)
        world = []
        for obj in objects:
            local = surface_points(rng, *obj["size"], obj["faces"], seen=obj.get("seen", 1.0))
            c, s = math.cos(obj["yaw"]), math.sin(obj["yaw"])
            centre = np.asarray(obj["centre"]) + np.asarray(obj["velocity"]) * t
            xy = local[:, :2] @ np.array([[c, s], [-s, c]]) + centre
            world.append(np.concatenate([xy, local[:, 2:]], 1))
        if ground:
            xy = pose[:2, 3] + rng.uniform(-40, 40, (4000, 2))
            world.append(np.concatenate([xy, rng.normal(0.0, 0.02, (4000, 1))], 1))
        world = np.concatenate(world)
        in_ego = (world - pose[:3, 3]) @ pose[:3, :3]
        sweeps.append((np.concatenate([in_ego, np.full((len(in_ego), 1), 30.0)], 1), pose, stamp))
    return merge_sweeps(sweeps, ego_pose(0.0), STAMPS[0])


def detected_box(obj: dict, centre_error=(0.0, 0.0), yaw_error: float = 0.0, length_scale: float = 1.0) -> np.ndarray:
    """The object's box [10] in the reference ego frame, as a detector would give it."""
    pose = ego_pose(0.0)
    rotation = pose[:2, :2]
    centre = rotation.T @ (np.asarray(obj["centre"]) - pose[:2, 3]) + np.asarray(centre_error)
    length, width, height = obj["size"]
    yaw = obj["yaw"] - math.atan2(rotation[1, 0], rotation[0, 0]) + yaw_error
    return np.array([*centre, height / 2, length * length_scale, width, height, yaw, 0.0, 0.0, 0.0])


def ego_velocity(obj: dict) -> np.ndarray:
    """The object's global velocity in the reference ego axes."""
    return ego_pose(0.0)[:2, :2].T @ np.asarray(obj["velocity"])


def car(centre, speed: float, yaw: float, faces=("rear", "left"), size=(4.6, 1.9, 1.6)) -> dict:
    return {"centre": centre, "velocity": speed * np.array([math.cos(yaw), math.sin(yaw)]), "yaw": yaw,
            "size": size, "faces": faces}


def measure(objects: list[dict], boxes: list[np.ndarray], labels: list[int], cfg: SweepVelocityConfig | None = None,
            points: np.ndarray | None = None, scores: list[float] | None = None, seed: int = 0) -> np.ndarray:
    points = scene_sweeps(objects, seed) if points is None else points
    return sweep_velocities(points, np.stack(boxes), np.array(labels), np.array(scores or [0.9] * len(boxes)),
                            cfg or CFG)


def test_a_moving_car_and_a_parked_one_under_ego_motion():
    moving = car([70.0, 30.0], 9.0, 0.5)
    parked = car([62.0, 36.0], 0.0, 2.0, faces=("front", "right"))
    velocity = measure([moving, parked], [detected_box(moving), detected_box(parked)], [0, 0])
    np.testing.assert_allclose(velocity[0], ego_velocity(moving), atol=0.3)
    assert np.linalg.norm(velocity[1]) < 0.3
    # The ego moves 8 m/s and turns: without its motion taken out the parked car would "move".
    assert np.linalg.norm(ego_velocity(moving) - velocity[0]) < 0.1 * np.linalg.norm(ego_velocity(moving))


def test_a_detected_box_off_by_decimetres_short_and_turned_a_little_still_measures_the_speed():
    moving = car([72.0, 28.0], 12.0, 0.4, size=(12.0, 2.8, 3.2))          # a bus
    box = detected_box(moving, centre_error=(0.4, -0.2), yaw_error=0.03, length_scale=0.85)
    velocity = measure([moving], [box], [2])
    assert np.linalg.norm(velocity[0] - ego_velocity(moving)) < 0.6
    assert abs(np.linalg.norm(velocity[0]) - 12.0) < 0.4


def test_a_walking_person_is_measured_in_any_direction_of_its_square_box():
    person = {"centre": [58.0, 30.0], "velocity": [0.9, -1.1], "yaw": 1.2, "size": (0.7, 0.7, 1.75),
              "faces": ("rear", "left", "front")}
    velocity = measure([person], [detected_box(person)], [3])
    np.testing.assert_allclose(velocity[0], ego_velocity(person), atol=0.3)


def test_a_rear_face_alone_gives_no_sideways_speed():
    # A car seen from behind, its corners hidden, shows a line across its axis: sliding along
    # that line fits as well, so the sideways speed must come out 0 and the forward speed right.
    ahead = {**car([75.0, 27.0], 7.0, 0.35, faces=("rear",)), "seen": 0.5}
    for seed in range(4):                    # without the sideways penalty 2 of these are > 0.6 m/s off
        velocity = measure([ahead], [detected_box(ahead)], [0], seed=seed)
        np.testing.assert_allclose(velocity[0], ego_velocity(ahead), atol=0.3)


def test_a_side_face_sliding_along_itself_is_not_measured():
    # A long side seen without its ends (a truck alongside): its own motion moves it onto itself.
    alongside = car([60.0, 26.0], 10.0, 0.3, faces=("left",), size=(16.0, 2.5, 3.0))
    box = detected_box(alongside)
    box[3] = 8.0                       # the detector saw the middle 8 m of it
    points = scene_sweeps([alongside])
    keep = np.abs(_along(points, box)) <= 7.0          # the sensor saw only its middle 14 m
    assert np.isnan(measure([], [box], [1], points=points[keep])).all()


def _along(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    c, s = math.cos(box[6]), math.sin(box[6])
    return (points[:, 0] - box[0]) * c + (points[:, 1] - box[1]) * s


def test_what_is_not_measured_is_nan():
    moving = car([70.0, 30.0], 9.0, 0.5)
    points = scene_sweeps([moving])
    box = detected_box(moving)
    assert np.isfinite(measure([], [box], [0], points=points)).all()
    for labels, scores, cfg, cloud in [
            ([6], None, CFG, points),                                  # a barrier never moves
            ([5], None, CFG, points),                                  # riderless cycles: the head's is better
            ([0], [0.01], CFG, points),                                # scored below min_score
            ([0], None, replace(CFG, enabled=False), points),
            ([0], None, CFG, points[:, :4]),                           # one sweep: no time channel
            ([0], None, CFG, points[points[:, 4] < 0.05]),             # only the current sweep
            ([0], None, CFG, points[points[:, 2] < 0.1])]:             # only ground: no points on the box
        assert np.isnan(measure([], [box], labels, cfg, cloud, scores)).all(), (labels, scores)
    # Faster than the search reaches (20 m/s): the best fit sits at its edge, which is no
    # measurement (without the check this one reads 20.5 m/s).
    speeding = car([70.0, 30.0], 21.0, 0.5)
    assert np.isnan(measure([speeding], [detected_box(speeding)], [0])).all()
    far = box.copy()
    far[:2] += 30.0                                                    # a box where nothing is
    assert np.isnan(measure([], [far], [0], points=points)).all()


@pytest.mark.parametrize("change", [{"classes": [0, 6]}, {"classes": [9]}, {"min_points": 0}, {"noise_mps": 0.0},
                                    {"min_inlier_fraction": 1.5}, {"lateral_penalty": -1.0}])
def test_a_bad_setting_is_refused(change):
    with pytest.raises(ValueError, match="sweep_velocity"):
        SweepVelocityConfig(**change)


def test_the_track_filter_takes_the_sweep_velocity_over_the_heads():
    filter_cfg = TrackFilterConfig(heading_speed_sigmas=0.0, smooth_centres=False, class_velocity_noise_mps={})
    box = torch.zeros(2, 10)
    box[:, 3:6] = torch.tensor([4.5, 1.9, 1.6])
    box[1, 0] = 20.0
    box[:, 7] = torch.tensor([3.0, 3.0])                     # the head's velocity, both boxes
    measured = np.array([[8.0, -1.0], [np.nan, np.nan]])
    out, _, state = filter_sample(box, torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([0.9, 0.9]),
                                  torch.eye(4, dtype=torch.float64), 0, None, filter_cfg, "s", measured)
    np.testing.assert_allclose(out[0, 7:9].numpy(), [8.0, -1.0], atol=1e-5)   # a new track: the measurement
    np.testing.assert_allclose(out[1, 7:9].numpy(), [3.0, 0.0], atol=1e-5)    # not measured: the head's
    # The track's velocity is as sure as the measurement: std noise_mps, not the head's 3 m/s.
    np.testing.assert_allclose(np.sqrt(state.covariances[0, 2, 2]), filter_cfg.sweep_velocity.noise_mps)


def test_filter_detections_measures_the_sweeps_of_each_sample():
    moving = car([70.0, 30.0], 9.0, 0.5)
    points = torch.from_numpy(scene_sweeps([moving]))
    box = torch.from_numpy(detected_box(moving)).float()[None]
    detections = [{"boxes": box, "labels": torch.tensor([0]), "ids": torch.tensor([1]), "scores": torch.tensor([0.9])}]
    poses, times = torch.from_numpy(ego_pose(0.0))[None], torch.tensor([STAMPS[0]])
    filter_cfg = TrackFilterConfig(heading_speed_sigmas=0.0, smooth_centres=False)
    with_points, _ = filter_detections(detections, poses, times, (), filter_cfg, ["s"], [points])
    np.testing.assert_allclose(with_points[0]["boxes"][0, 7:9].numpy(), ego_velocity(moving), atol=0.3)
    without, _ = filter_detections(detections, poses, times, (), filter_cfg, ["s"], None)
    np.testing.assert_allclose(without[0]["boxes"][0, 7:9].numpy(), 0.0)     # the head's (0 here)
    off = replace(filter_cfg, sweep_velocity=replace(filter_cfg.sweep_velocity, enabled=False))
    ignored, _ = filter_detections(detections, poses, times, (), off, ["s"], [points])
    np.testing.assert_allclose(ignored[0]["boxes"][0, 7:9].numpy(), 0.0)


@pytest.mark.parametrize("path", ["eager", "fixed_shape_runner"])
@pytest.mark.parametrize("lidar", [False, True])
def test_only_a_model_with_a_lidar_measures_velocities_from_the_points(path, lidar, monkeypatch):
    # A camera-only model is evaluated on data that has LiDAR too: it must not read it, on the
    # eager path (model.infer) or the fixed-shape one (the node's fast path).
    from sparsecomp_core.deploy import runner as runner_module
    from sparsecomp_core.deploy.runner import FixedShapeRunner
    from sparsecomp_core.models import detector as detector_module
    from sparsecomp_core.models.detector import build_detector

    module = detector_module if path == "eager" else runner_module
    given = []
    real = module.filter_detections

    def spy(*args, **kwargs):
        given.append(args[6] if len(args) > 6 else kwargs.get("lidar_points"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "filter_detections", spy)
    torch.manual_seed(0)
    cfg = micro_config(lidar={"enable": lidar})
    model = build_detector(cfg).eval()
    rig = cfg.load_rig()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (1, rig.num_cameras, 3, 64, 128), dtype=torch.uint8, generator=generator)
    inputs = toy_scene.frame(rig, 0.0, generator, images, lidar=True)
    assert inputs.lidar_points is not None
    (model if path == "eager" else FixedShapeRunner(model, cfg, lidar_bucket=4096)).infer(inputs)
    assert (given[0] is inputs.lidar_points) == lidar and (given[0] is None) == (not lidar)
