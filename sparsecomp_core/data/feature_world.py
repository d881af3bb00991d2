"""A synthetic feature-level world for testing and benchmarking completion.

Camera features that depend only on the global viewing direction of each
pixel (a scene at infinity): channel c is a random smooth function of
azimuth and elevation. Overlapping cameras therefore see the same content,
and after the ego turns, a camera's current view was seen earlier at other
pixels or by other cameras: exactly the evidence the completion cascade is
meant to use. Deterministic for a seed.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..geometry import Calibration
from ..models.completion.warp import pixel_centres


class DirectionalFeatureWorld:
    def __init__(self, channels: int, num_harmonics: int = 3, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        harmonics = torch.arange(1, num_harmonics + 1, dtype=torch.float32)
        # Amplitudes fall with frequency so the content is smooth; unit variance overall.
        self.amplitude = torch.randn(channels, num_harmonics, generator=gen) / harmonics
        self.amplitude *= math.sqrt(2.0) / self.amplitude.norm(dim=1, keepdim=True)
        self.phase = torch.rand(channels, num_harmonics, generator=gen) * 2 * math.pi
        self.elevation_gain = torch.randn(channels, generator=gen)
        self.harmonics = harmonics

    def features(self, calibration: Calibration, ego2global: Tensor, strides: tuple[int, ...]) -> list[Tensor]:
        """Per stride, features [B, V, C, H/s, W/s] seen by the calibrated cameras
        of an ego at ``ego2global`` [B, 4, 4] (only its rotation matters)."""
        height, width = calibration.image_size
        levels = []
        for stride in strides:
            h, w = math.ceil(height / stride), math.ceil(width / stride)
            uv = pixel_centres(h, w)
            rays = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1)                 # [P, 3]
            rays_cam = rays @ torch.linalg.inv(calibration.at_stride(stride)).transpose(-1, -2)  # [B, V, P, 3]
            rotation = ego2global[:, None, :3, :3].float() @ calibration.cam2ego[..., :3, :3]
            dirs = rays_cam @ rotation.transpose(-1, -2)
            azimuth = torch.atan2(dirs[..., 1], dirs[..., 0])                           # [B, V, P]
            elevation = torch.atan2(dirs[..., 2], dirs[..., :2].norm(dim=-1))
            angles = azimuth[..., None, None] * self.harmonics + self.phase              # [B, V, P, C, K]
            values = (self.amplitude * torch.cos(angles)).sum(-1) + self.elevation_gain * elevation[..., None]
            levels.append(values.permute(0, 1, 3, 2).reshape(*values.shape[:2], -1, h, w))
        return levels


def yaw_pose(yaw_rad: Tensor, translation: Tensor | None = None) -> Tensor:
    """[B, 4, 4] float64 ego2global for headings [B] (and optional [B, 3] positions)."""
    pose = torch.zeros(yaw_rad.shape[0], 4, 4, dtype=torch.float64)
    cos, sin = torch.cos(yaw_rad.double()), torch.sin(yaw_rad.double())
    pose[:, 0, 0], pose[:, 0, 1], pose[:, 1, 0], pose[:, 1, 1] = cos, -sin, sin, cos
    pose[:, 2, 2] = pose[:, 3, 3] = 1.0
    if translation is not None:
        pose[:, :3, 3] = translation.double()
    return pose
