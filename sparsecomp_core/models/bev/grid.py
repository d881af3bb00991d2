"""The BEV grid: ranges, cell size, cell centres, normalisation."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class BEVGridConfig:
    x_range: tuple[float, float] = (-40.0, 62.4)     # metres, ego frame (forward)
    y_range: tuple[float, float] = (-44.8, 44.8)     # metres (left)
    z_range: tuple[float, float] = (-3.0, 5.0)       # for normalising 3D reference points
    cell_size: float = 0.8

    def __post_init__(self) -> None:
        for name in ("x_range", "y_range", "z_range"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name} must be (low, high) with low < high")
        if self.cell_size <= 0:
            raise ValueError("cell_size must be positive")
        for name in ("x_range", "y_range"):
            low, high = getattr(self, name)
            cells = (high - low) / self.cell_size
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f"{name} length must be a multiple of cell_size")


class BEVGrid:
    """BEV maps are [B, C, H, W] with rows along y and columns along x:
    cell (i, j) has centre x = x_min + (j + 0.5) * cell, y = y_min + (i + 0.5) * cell.
    The default grid is 112 x 128 (H x W)."""

    def __init__(self, cfg: BEVGridConfig):
        self.cfg = cfg
        self.x_min, self.x_max = cfg.x_range
        self.y_min, self.y_max = cfg.y_range
        self.z_min, self.z_max = cfg.z_range
        self.cell = cfg.cell_size
        self.width = round((self.x_max - self.x_min) / self.cell)
        self.height = round((self.y_max - self.y_min) / self.cell)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def cell_centres(self, device=None) -> Tensor:
        """[H * W, 2] (x, y) in metres, row-major."""
        ys = self.y_min + (torch.arange(self.height, device=device, dtype=torch.float32) + 0.5) * self.cell
        xs = self.x_min + (torch.arange(self.width, device=device, dtype=torch.float32) + 0.5) * self.cell
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)

    def normalise(self, points: Tensor) -> Tensor:
        """[..., 3] metres -> [0, 1]^3 over the grid's ranges (not clipped)."""
        low = points.new_tensor([self.x_min, self.y_min, self.z_min])
        high = points.new_tensor([self.x_max, self.y_max, self.z_max])
        return (points - low) / (high - low)

    def denormalise(self, points: Tensor) -> Tensor:
        low = points.new_tensor([self.x_min, self.y_min, self.z_min])
        high = points.new_tensor([self.x_max, self.y_max, self.z_max])
        return points * (high - low) + low

    def contains(self, xy: Tensor) -> Tensor:
        """[N] bool: which points [N, >=2] (metres) lie inside the grid's x/y ranges."""
        return (xy[:, 0] >= self.x_min) & (xy[:, 0] < self.x_max) & (xy[:, 1] >= self.y_min) & (xy[:, 1] < self.y_max)

    def cell_index(self, xy: Tensor) -> tuple[Tensor, Tensor]:
        """(flat index [N] int64, inside [N] bool) of points [N, >=2] in metres."""
        col = torch.floor((xy[:, 0] - self.x_min) / self.cell).long()
        row = torch.floor((xy[:, 1] - self.y_min) / self.cell).long()
        inside = (col >= 0) & (col < self.width) & (row >= 0) & (row < self.height)
        return row.clamp(0, self.height - 1) * self.width + col.clamp(0, self.width - 1), inside
