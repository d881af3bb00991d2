"""The model's input contract: one synchronised frame of a batch of streams.

Its own module so that the data loader, the perception node and the benchmarks
build inputs without importing the detector.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from ..geometry import Calibration


@dataclass
class FrameInputs:
    """One synchronised frame of a batch of B streams.

    images: [B, V, 3, H, W] uint8 (0-255) or float (0-1), failed cameras as
    delivered (black, frozen, ...); cam_mask: [B, V] bool, True = failed;
    ego2global: [B, 4, 4] float64; timestamp_us: [B] int64; lidar_points: B
    clouds [N_i, 4] (x, y, z, intensity; ego frame), or [N_i, 5] merged sweeps
    with the time lag dt_s (data.sweeps.merge_sweeps) for a model with
    lidar.sweeps > 1, or None; sequence_ids: B
    hashable ids or None; ego_trajectory: [B, T, 2] planned/future ego path
    or None; teacher_images: full images for training, else None.
    """
    images: Tensor
    cam_mask: Tensor
    calibration: Calibration
    ego2global: Tensor
    timestamp_us: Tensor
    lidar_points: list[Tensor] | None = None
    sequence_ids: Sequence | None = None
    ego_trajectory: Tensor | None = None
    teacher_images: Tensor | None = None

    def to(self, device: torch.device | str) -> "FrameInputs":
        def move(x):
            return None if x is None else x.to(device, non_blocking=True)
        return FrameInputs(move(self.images), move(self.cam_mask), self.calibration.to(device), move(self.ego2global),
                           move(self.timestamp_us),
                           None if self.lidar_points is None else [p.to(device, non_blocking=True) for p in self.lidar_points],
                           self.sequence_ids, move(self.ego_trajectory), move(self.teacher_images))
