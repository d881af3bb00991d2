"""Multi-sweep LiDAR: ego-motion compensation, time lag, the loader's sweeps, the pillar input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.data.nuscenes_layout import LIDAR_CHANNEL
from sparsecomp_core.data.sweeps import merge_sweeps
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.models.bev.grid import BEVGrid, BEVGridConfig
from sparsecomp_core.models.bev.lidar import LidarBranch
from sparsecomp_core.rig import load_rig

SWEEP_US = 100_000          # 10 Hz


def pose(x: float, y: float, yaw: float) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    matrix[:3, 3] = [x, y, 0.3]
    return matrix


def in_ego(world_points: np.ndarray, ego2global: np.ndarray) -> np.ndarray:
    return (world_points - ego2global[:3, 3]) @ ego2global[:3, :3]


# The ego drives forward 1.2 m per sweep while turning 4 deg per sweep; sweep 0 is the reference.
POSES = [pose(100.0 - 1.2 * k, 50.0 - 0.1 * k, 0.6 - math.radians(4.0) * k) for k in range(5)]
STAMPS = [1_000_000_000 - SWEEP_US * k for k in range(5)]


def test_a_static_point_of_every_sweep_lands_on_one_spot_under_ego_motion():
    world = np.array([[112.0, 47.0, 0.5], [95.0, 60.0, 1.5]])
    sweeps = [(np.concatenate([in_ego(world, p), [[10.0], [200.0]]], 1), p, t) for p, t in zip(POSES, STAMPS)]
    merged = merge_sweeps(sweeps, POSES[0], STAMPS[0])
    assert merged.shape == (10, 5) and merged.dtype == np.float32
    expected = in_ego(world, POSES[0])
    for k in range(5):
        np.testing.assert_allclose(merged[2 * k: 2 * k + 2, :3], expected, atol=1e-4)
        np.testing.assert_array_equal(merged[2 * k: 2 * k + 2, 3], [10.0, 200.0])
        np.testing.assert_allclose(merged[2 * k: 2 * k + 2, 4], 0.1 * k, atol=1e-7)   # seconds, positive into the past
    # Without compensation the sweeps would be metres apart: the test is not trivially true.
    assert np.abs(sweeps[4][0][:, :3] - expected).max() > 4.0


def test_a_constant_velocity_objects_sweeps_spread_along_its_velocity():
    start, velocity = np.array([120.0, 40.0, 0.8]), np.array([-6.0, 3.0, 0.0])    # m/s, world frame
    times = [(t - STAMPS[0]) / 1e6 for t in STAMPS]                                 # 0, -0.1, ... s
    corners = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]])        # three points on the object
    sweeps = [(np.concatenate([in_ego(start + velocity * t + corners, p), np.full((3, 1), 50.0)], 1), p, s)
              for t, p, s in zip(times, POSES, STAMPS)]
    merged = merge_sweeps(sweeps, POSES[0], STAMPS[0]).reshape(5, 3, 5)
    velocity_ref = velocity @ POSES[0][:3, :3]          # the velocity in the reference ego axes
    for k in range(1, 5):
        dt = merged[k, :, 4]
        np.testing.assert_allclose(dt, 0.1 * k, atol=1e-7)
        displacement = merged[0, :, :3] - merged[k, :, :3]
        np.testing.assert_allclose(displacement, velocity_ref[None] * dt[:, None], atol=1e-4)


def test_merge_sweeps_refuses_future_sweeps_and_short_rows():
    with pytest.raises(ValueError, match="newer than the reference"):
        merge_sweeps([(np.zeros((2, 4)), POSES[0], STAMPS[0] + 1)], POSES[0], STAMPS[0])
    with pytest.raises(ValueError, match=r"\[N, >=4\]"):
        merge_sweeps([(np.zeros((2, 3)), POSES[0], STAMPS[0])], POSES[0], STAMPS[0])
    assert merge_sweeps([], POSES[0], STAMPS[0]).shape == (0, 5)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    generate(root, "v1.0-sweeps", "default7", seed=6, scenes=1, frames=5, image_size=(64, 128), lidar_beams=16,
             lidar_azimuths=256, progress=False)
    return root


def test_one_sweep_is_todays_input_and_more_sweeps_follow_the_previous_frames(generated):
    rig = load_rig("default7")
    single = SequenceDataset(str(generated), "v1.0-sweeps", rig, (64, 128))
    merged = SequenceDataset(str(generated), "v1.0-sweeps", rig, (64, 128), lidar_sweeps=3)
    for index in (0, 1, 4):
        reference = single.layout.sample_data_by_sample[single.scenes[0][1][index]][LIDAR_CHANNEL]
        today = single.layout.lidar_points(reference)
        one = single.load(0, index).lidar
        assert one.shape[1] == 4
        torch.testing.assert_close(one, torch.from_numpy(today), rtol=0, atol=0)
        cloud = merged.load(0, index).lidar
        assert cloud.shape[1] == 5
        torch.testing.assert_close(cloud[:len(today), :4], one, rtol=0, atol=0)    # the reference sweep first, dt 0
        lags = np.unique(cloud[:, 4].numpy())
        np.testing.assert_allclose(lags, [0.1 * k for k in range(min(index, 2) + 1)], atol=1e-7)  # fewer at the start


def test_merged_sweeps_of_the_loader_put_static_objects_on_their_box(generated):
    """The loader's poses, chain and time stamps agree: the ground of an older sweep lies at z ~ 0 in
    the current ego frame, and points of static objects land in their current boxes."""
    dataset = SequenceDataset(str(generated), "v1.0-sweeps", load_rig("default7"), (64, 128), lidar_sweeps=3)
    frame = dataset.load(0, 4)
    cloud = frame.lidar.numpy()
    boxes, labels = frame.targets["boxes"].numpy(), frame.targets["labels"].numpy()
    static = boxes[np.isin(labels, [6, 7]) | (np.linalg.norm(boxes[:, 7:9], axis=1) < 0.05)]
    assert len(static) > 0

    def hits(points: np.ndarray) -> int:
        count = 0
        for box in static:
            local = points[:, :3] - box[:3]
            cos, sin = math.cos(-box[6]), math.sin(-box[6])
            local = np.stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos,
                              local[:, 2]], 1)
            count += int((np.abs(local) <= box[3:6] / 2 + 0.05).all(axis=1).sum())
        return count
    current = hits(cloud[cloud[:, 4] == 0])
    assert current > 10
    for lag in (0.1, 0.2):       # uncompensated, the 0.2 s sweep put less than a third of that there
        assert hits(cloud[np.isclose(cloud[:, 4], lag)]) >= 0.7 * current


def test_the_pillar_features_take_the_time_channel_only_when_configured():
    grid = BEVGrid(BEVGridConfig(x_range=(-12.8, 12.8), y_range=(-12.8, 12.8), cell_size=1.6))
    gen = torch.Generator().manual_seed(0)
    cloud = torch.cat([torch.rand(500, 3, generator=gen) * torch.tensor([20.0, 20.0, 2.0]) - torch.tensor([10.0, 10.0, 0.0]),
                       torch.rand(500, 1, generator=gen) * 255], 1)
    torch.manual_seed(0)
    timed = LidarBranch(grid, 8, 8, 8, time_channel=True).eval()
    torch.manual_seed(0)
    untimed = LidarBranch(grid, 8, 8, 8).eval()
    assert timed.vfe.linear.in_features == untimed.vfe.linear.in_features + 1
    with torch.no_grad():
        current = timed([torch.cat([cloud, torch.zeros(500, 1)], 1)])
        torch.testing.assert_close(timed([cloud]), current)          # a 4-column cloud: one sweep, dt 0
        lagged = timed([torch.cat([cloud, torch.full((500, 1), 0.3)], 1)])
        assert (lagged - current).abs().max() > 1e-3                 # the time lag reaches the BEV
        # Without the option a 5th column (e.g. a ring index) is ignored: today's input.
        torch.testing.assert_close(untimed([torch.cat([cloud, torch.full((500, 1), 7.0)], 1)]), untimed([cloud]))
