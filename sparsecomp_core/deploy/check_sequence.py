"""A short synthetic driving sequence to check a deployment path against the eager
model (the export's parity check, the deployment tests and bench/onnx_vs_eager.py):
a turning, moving ego, failed cameras that change every frame (none, one, two,
all but one; black images), LiDAR with a time-lag column (clusters where objects
would be, plus ground), off in one frame, and with batch 2 the second stream
starting a new sequence half way."""
from __future__ import annotations

import math

import torch

from ..models.inputs import FrameInputs
from ..rig import RigConfig

# Failed cameras per frame (indices into the rig; those past its camera count are ignored), cycled.
FAILED = [[], [2], [2, 5], [5], [0, 1], [], [1, 2, 3, 4, 5, 6], [3]]
LIDAR_OFF_FRAME = 3
# Object-sized clusters: centre x, y, z and size l, w, h (metres, ego frame at t = 0), velocity vx, vy (m/s).
CLUSTERS = [(12.0, 4.0, 0.8, 4.5, 1.9, 1.6, 6.0, 0.5), (-10.0, -6.0, 1.5, 10.0, 2.5, 3.0, -4.0, 0.0),
            (6.0, -8.0, 0.9, 0.6, 0.6, 1.8, 0.0, 1.2), (25.0, 10.0, 0.5, 2.0, 0.5, 1.0, 0.0, 0.0)]


def ego_pose(t_s: float) -> torch.Tensor:
    """[4, 4] float64 ego2global of an ego driving 3 m/s forward while turning at 0.5 rad/s."""
    pose = torch.eye(4, dtype=torch.float64)
    yaw = 0.5 * t_s
    pose[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    pose[:3, 3] = torch.tensor([3.0 * t_s, 0.5 * t_s, 0.0])
    return pose


def lidar_cloud(t_s: float, generator: torch.Generator, points_per_cluster: int = 200,
                ground_points: int = 2000) -> torch.Tensor:
    """[N, 5] points (x, y, z, intensity, time lag in s) on the clusters and the ground."""
    parts = []
    for x, y, z, length, width, height, vx, vy in CLUSTERS:
        local = (torch.rand(points_per_cluster, 3, generator=generator) - 0.5) * torch.tensor([length, width, height])
        centre = torch.tensor([x + vx * t_s, y + vy * t_s, z])
        parts.append(torch.cat([local + centre, torch.full((points_per_cluster, 1), 200.0)], 1))
    ground = torch.rand(ground_points, 3, generator=generator) * torch.tensor([100.0, 88.0, 0.0]) \
        + torch.tensor([-40.0, -44.0, 0.0])
    parts.append(torch.cat([ground, torch.full((ground_points, 1), 20.0)], 1))
    cloud = torch.cat(parts)
    return torch.cat([cloud, torch.rand(len(cloud), 1, generator=generator) * 0.4], 1)


def check_sequence(rig: RigConfig, frames: int, image_size: tuple[int, int], batch: int = 1, seed: int = 0,
                   lidar: bool = True) -> list[FrameInputs]:
    """``frames`` FrameInputs at 10 Hz (uint8 images [B, V, 3, H, W])."""
    generator = torch.Generator().manual_seed(seed)
    cameras = rig.num_cameras
    out = []
    for i in range(frames):
        t_s = 0.1 * i
        cam_mask = torch.zeros(batch, cameras, dtype=torch.bool)
        for b in range(batch):
            cam_mask[b, [c for c in FAILED[(i + 3 * b) % len(FAILED)] if c < cameras]] = True
        images = torch.randint(0, 255, (batch, cameras, 3, *image_size), dtype=torch.uint8, generator=generator)
        images[cam_mask] = 0
        clouds = None
        if lidar and i != LIDAR_OFF_FRAME:
            clouds = [lidar_cloud(t_s, generator) for _ in range(batch)]
        sequence_ids = ["a", "b" if i < frames // 2 else "c"][:batch]
        out.append(FrameInputs(images, cam_mask, rig.calibration(batch, image_size),
                               torch.stack([ego_pose(t_s)] * batch), torch.full((batch,), int(round(t_s * 1e6))),
                               clouds, sequence_ids))
    return out
