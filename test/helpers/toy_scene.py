"""A tiny camera+LiDAR scene for overfitting tests: a few boxes moving at
constant velocity, LiDAR points on their surfaces plus ground, fixed random
images, a static ego."""
from __future__ import annotations

import math

import torch

from sparsecomp_core.models.inputs import FrameInputs

# x, y, z, l, w, h, yaw, vx, vy, vz ; label ; occlusion
OBJECTS = [
    ([12.0, 4.0, 0.8, 4.5, 1.9, 1.6, 0.2, 6.0, 0.5, 0.0], 0, 0),    # car driving forward
    ([-10.0, -6.0, 1.5, 10.0, 2.5, 3.0, math.pi, -4.0, 0.0, 0.0], 1, 1),  # truck driving backward (toward -x)
    ([6.0, -8.0, 0.9, 0.6, 0.6, 1.8, 1.6, 0.0, 1.2, 0.0], 3, 0),    # person walking left
    ([25.0, 10.0, 0.5, 2.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0], 6, 2),   # barrier
]


def boxes_at(t_s: float) -> torch.Tensor:
    boxes = torch.tensor([o[0] for o in OBJECTS])
    boxes[:, :3] += boxes[:, 7:10] * t_s
    return boxes


def targets_at(t_s: float) -> dict:
    return {"boxes": boxes_at(t_s), "labels": torch.tensor([o[1] for o in OBJECTS]),
            "occlusion": torch.tensor([o[2] for o in OBJECTS])}


def lidar_at(t_s: float, generator: torch.Generator, points_per_box: int = 300) -> torch.Tensor:
    clouds = []
    for box in boxes_at(t_s):
        local = (torch.rand(points_per_box, 3, generator=generator) - 0.5) * box[3:6]
        cos, sin = math.cos(box[6]), math.sin(box[6])
        xy = torch.stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos], 1)
        points = torch.cat([xy + box[:2], local[:, 2:3] + box[2]], 1)
        clouds.append(torch.cat([points, torch.full((points_per_box, 1), 200.0)], 1))
    ground = torch.rand(2000, 3, generator=generator) * torch.tensor([100.0, 88.0, 0.0]) + torch.tensor([-40.0, -44.0, 0.0])
    clouds.append(torch.cat([ground, torch.full((2000, 1), 20.0)], 1))
    return torch.cat(clouds)


def frame(rig, t_s: float, generator: torch.Generator, images: torch.Tensor, cam_mask=None,
          lidar: bool = True, sequence: str = "toy") -> FrameInputs:
    num_cameras = rig.num_cameras
    return FrameInputs(
        images=images, cam_mask=torch.zeros(1, num_cameras, dtype=torch.bool) if cam_mask is None else cam_mask,
        calibration=rig.calibration(1), ego2global=torch.eye(4, dtype=torch.float64)[None],
        timestamp_us=torch.tensor([int(round(t_s * 1e6))]), lidar_points=[lidar_at(t_s, generator)] if lidar else None,
        sequence_ids=[sequence])
