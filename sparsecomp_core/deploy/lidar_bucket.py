"""LiDAR points in a fixed-size bucket: padding outside, pillars inside the graph.

A sweep has a different point count every frame; a graph wants one shape. The
runner pads each cloud to ``bucket`` points (``pad_points``) with a validity
mask, and ``PaddedLidarBranch`` scatters every point that is padding, not
finite, outside the grid or outside the z range into one extra "trash" pillar
that is dropped before the BEV backbone: padded points change nothing (the
kept points are summed and max-pooled in the same order as the eager branch).
A cloud with more points than the bucket is cut to the bucket (points past it
are dropped, with a warning from the runner): size the bucket for the sensor.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.bev.lidar import LidarBranch


def pad_points(clouds: list[Tensor] | None, batch: int, bucket: int, channels: int,
               device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, int]:
    """Clouds [N_i, >=4] (None: no LiDAR this frame) -> (points [B, bucket, channels]
    float32, valid [B, bucket] bool, the number of points cut off past the bucket).
    Columns beyond ``channels`` are dropped and missing ones (a single sweep without its
    time lag for a multi-sweep model) are zero, as ``LidarBranch`` does."""
    points = torch.zeros(batch, bucket, channels, dtype=torch.float32, device=device)
    valid = torch.zeros(batch, bucket, dtype=torch.bool, device=device)
    cut = 0
    for b, cloud in enumerate(clouds or []):
        count = min(len(cloud), bucket)
        cut += len(cloud) - count
        width = min(cloud.shape[1], channels)
        points[b, :count, :width] = cloud[:count, :width].to(device=device, dtype=torch.float32)
        valid[b, :count] = True
    return points, valid, cut


class PaddedLidarBranch(nn.Module):
    """forward(points [B, P, C_point] (C_point = lidar.point_channels), valid [B, P] bool)
    -> BEV [B, C_out, H, W], equal to ``LidarBranch`` on the valid points. Shares the
    eager branch's modules (weights)."""

    def __init__(self, lidar: LidarBranch):
        super().__init__()
        self.lidar = lidar

    def forward(self, points: Tensor, valid: Tensor) -> Tensor:
        grid, (z_low, z_high) = self.lidar.grid, self.lidar.z_range
        batch, bucket, channels = points.shape
        cells = grid.height * grid.width
        flat = points.reshape(batch * bucket, channels)
        index, inside = grid.cell_index(flat)
        keep = (valid.reshape(-1) & inside & torch.isfinite(flat).all(dim=1)
                & (flat[:, 2] >= z_low) & (flat[:, 2] < z_high))
        sample = torch.arange(batch, device=points.device)[:, None].expand(batch, bucket).reshape(-1)
        trash = batch * cells                                                           # the extra pillar
        pillar = torch.where(keep, index + sample * cells, torch.full_like(index, trash))
        clean = torch.where(keep[:, None], flat, torch.zeros_like(flat))               # no NaN into the sums
        pillar_features = self.lidar.vfe(clean, pillar, trash + 1)[:trash]
        bev = pillar_features.reshape(batch, grid.height, grid.width, -1).permute(0, 3, 1, 2)
        return self.lidar.mark_absent(self.lidar.bev_backbone(bev.contiguous()), keep.reshape(batch, bucket).any(dim=1))
