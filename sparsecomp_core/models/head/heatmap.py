"""Heatmap-initialised queries (TransFusion-style): a dense class heatmap on the
BEV tokens, trained with Gaussian targets at the object centres; its peaks give
the reference points and the content of some of the current queries.

Why (docs/model.md): the dense heatmap loss supervises every BEV cell, and
queries that start on objects make the one-to-one matching easy, so the head
learns in a fraction of the steps learnable queries need.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..bev.grid import BEVGrid
from .boxes import NUM_CLASSES


class BEVHeatmapHead(nn.Module):
    """forward(bev [B, C, H, W]) -> class heatmap logits [B, 8, H, W]."""

    def __init__(self, in_channels: int, hidden_channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, hidden_channels, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden_channels, NUM_CLASSES, 1))
        nn.init.constant_(self.body[-1].bias, -math.log((1 - 0.01) / 0.01))   # prior 0.01

    def forward(self, bev: Tensor) -> Tensor:
        return self.body(bev)


@torch.no_grad()
def heatmap_peaks(logits: Tensor, num_peaks: int, kernel: int = 3) -> tuple[Tensor, Tensor, Tensor]:
    """The num_peaks strongest local maxima (over kernel x kernel cells, per
    class) of logits [B, K, H, W] -> (flat cell index [B, N], class [B, N],
    score [B, N])."""
    heat = torch.sigmoid(logits.float())
    local_max = F.max_pool2d(heat, kernel, stride=1, padding=kernel // 2)
    heat = torch.where(heat == local_max, heat, torch.zeros_like(heat))
    cells = heat.shape[-2] * heat.shape[-1]
    scores, index = heat.flatten(1).topk(num_peaks, dim=1)
    return index % cells, torch.div(index, cells, rounding_mode="floor"), scores


def gaussian_radius(length_cells: Tensor, width_cells: Tensor, min_overlap: float = 0.1) -> Tensor:
    """CenterNet's radius (cells) within which a shifted box keeps IoU >= min_overlap; [M] -> [M]."""
    h, w = length_cells, width_cells
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + (b1 ** 2 - 4 * c1).clamp(min=0).sqrt()) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + (b2 ** 2 - 16 * c2).clamp(min=0).sqrt()) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + (b3 ** 2 - 4 * a3 * c3).clamp(min=0).sqrt()) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def heatmap_targets(grid: BEVGrid, targets: list[dict], min_radius: int = 1) -> Tensor:
    """Gaussian class heatmaps [B, 8, H, W]: 1 at each object's centre cell,
    falling with sigma = (2 r + 1) / 6 for r the CenterNet radius of its box
    (at least min_radius cells); the maximum where objects overlap."""
    device = targets[0]["boxes"].device if targets else torch.device("cpu")
    heat = torch.zeros(len(targets), NUM_CLASSES, grid.height, grid.width, device=device)
    centres = grid.cell_centres(device).reshape(grid.height, grid.width, 2)
    for b, target in enumerate(targets):
        boxes, labels = target["boxes"], target["labels"]
        if boxes.numel() == 0:
            continue
        index, inside = grid.cell_index(boxes[:, :2])
        radius = gaussian_radius(boxes[:, 3] / grid.cell, boxes[:, 4] / grid.cell).floor().clamp(min=min_radius)
        sigma = (2 * radius + 1) / 6
        # Distances measured from the centre cell, so each object's peak is exactly 1 there.
        peak = centres.reshape(-1, 2)[index]                                         # [M, 2]
        d2 = ((centres[None] - peak[:, None, None]) ** 2).sum(-1) / grid.cell ** 2   # [M, H, W]
        gaussians = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))
        gaussians = torch.where(d2 <= (radius[:, None, None] + 0.5) ** 2, gaussians, torch.zeros_like(gaussians))
        for m in torch.nonzero(inside)[:, 0].tolist():
            heat[b, labels[m]] = torch.maximum(heat[b, labels[m]], gaussians[m])
    return heat


def gaussian_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed over cells and divided by
    the number of peaks (target == 1, at least 1); logits and targets [B, K, H, W]."""
    prob = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    positive = targets.eq(1).float()
    pos_loss = -prob.log() * (1 - prob) ** alpha * positive
    neg_loss = -(1 - prob).log() * prob ** alpha * (1 - targets) ** beta * (1 - positive)
    return (pos_loss.sum() + neg_loss.sum()) / positive.sum().clamp(min=1)
