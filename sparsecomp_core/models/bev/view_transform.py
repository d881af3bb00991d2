"""Camera view transform: image features -> BEV by projected reference points
(several heights per cell) and deformable sampling over one or more FPN
levels, averaged over the cameras that see a cell and have not failed."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...geometry import Calibration, project_points, transform_points
from .grid import BEVGrid


@dataclass
class ViewTransformConfig:
    heights: tuple[float, ...] = (0.0, 0.8, 1.6, 2.4)   # reference-point heights in the ego frame, m
    points_per_height: int = 2                           # deformable samples around each projection
    feature_level: int = 1                               # FPN level sampled (1 = stride 16)
    # Further FPN levels sampled at the same points, weighted together with the
    # main level (multi-scale deformable sampling). The temporal completion
    # level belongs here: otherwise its completed content never reaches the
    # BEV (docs/completion.md).
    extra_levels: tuple[int, ...] = ()
    max_offset_px: float = 4.0                           # offsets are tanh-bounded, in feature pixels
    # True: failed cameras whose features the cascade completed take part like
    # live ones. False (the spec, and how the shipped model was trained): every
    # failed camera is left out, so completion cannot change the BEV. See
    # docs/completion.md for the measurements.
    use_completed_cameras: bool = False
    # With use_completed_cameras, True: a completed camera feeds only the cells
    # that no live camera sees (its gap), so completed content never dilutes
    # live evidence. False: it is averaged with the live cameras like one of
    # them (how models trained before the option behave). docs/completion.md.
    completed_cameras_in_gaps_only: bool = False
    # True: BEV cells that no usable camera sees (every cell when all cameras
    # have failed) take a learned "absent" vector after the output block, so a
    # missing camera input looks the same in training and inference whatever
    # the batch norm statistics (docs/model.md, "Sensor dropout").
    absent_embedding: bool = False
    # True: BEV cells that only completed cameras see (no live one: a crashed
    # camera's blind arc) get a learned vector added after the output block, so
    # the fuser can tell completed content from a live view and lean on the
    # LiDAR there; zero at first, so a model trained without it is unchanged
    # (on in the shipped tiny_marked model, which descends from stage 13:
    # docs/data_training_evaluation.md, "A soup of stages 13 and 14", "Stage 15").
    completed_embedding: bool = False

    def __post_init__(self) -> None:
        levels = (self.feature_level, *self.extra_levels)
        if any(not 0 <= level <= 3 for level in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"view_transform levels must be distinct FPN levels 0..3, got feature_level "
                             f"{self.feature_level} and extra_levels {list(self.extra_levels)}")


class CameraViewTransform(nn.Module):
    """forward(features: [B, V, C, h, w] or a list of ``num_levels`` such maps
    (main level first, then coarser levels of the same images), cam_mask
    [B, V] (cameras left out), calibration, gap_only [B, V] or None,
    completed [B, V] or None) -> BEV
    [B, C_bev, H, W].

    Every cell has learnable query features; from them a 1x1 conv predicts,
    per height and point, a sampling offset (in main-level pixels, shared by
    the levels) and per level a weight (softmax over all levels x heights x
    points of a camera). Each camera's sampled feature is the weighted sum
    over its projections that land in the image; the cell's feature is the
    mean over cameras that see it and have not failed (zero where none does).
    A ``gap_only`` camera (not in ``cam_mask``: a completed one) counts only
    in cells that no other usable camera sees; there the cell is the mean
    over the gap-only cameras that see it.
    With ``absent_embedding`` a cell that no such camera sees is, after the
    output block, a learned vector [C_bev] instead of the output of zeros
    (which depends on the batch norm's statistics, so differs between a
    training batch and inference). With ``completed_embedding`` a cell that
    cameras see but only ``completed`` ones ([B, V]: failed cameras whose
    features the cascade completed) gets a learned vector [C_bev] added after
    the output block. Cameras are processed one at a time to
    bound memory. Levels are sampled at the same normalised image position,
    so each must cover the whole image.
    """

    def __init__(self, grid: BEVGrid, in_channels: int, out_channels: int, stride: int,
                 heights: tuple[float, ...] = (0.0, 0.8, 1.6, 2.4), points_per_height: int = 2,
                 max_offset_px: float = 4.0, num_levels: int = 1, absent_embedding: bool = False,
                 completed_embedding: bool = False):
        super().__init__()
        self.grid, self.stride, self.max_offset_px = grid, stride, max_offset_px
        self.register_buffer("heights", torch.tensor(heights, dtype=torch.float32), persistent=False)
        self.samples = len(heights) * points_per_height
        self.points_per_height, self.num_levels = points_per_height, num_levels
        self.bev_query = nn.Parameter(torch.randn(1, in_channels, *grid.shape) * 0.02)
        self.offsets = nn.Conv2d(in_channels, self.samples * 2, 1)
        self.weights = nn.Conv2d(in_channels, self.samples * num_levels, 1)
        nn.init.zeros_(self.offsets.weight)
        with torch.no_grad():  # start with points spread around the projection
            spread = torch.linspace(-1.0, 1.0, points_per_height) if points_per_height > 1 else torch.zeros(1)
            self.offsets.bias.copy_(torch.stack([spread, torch.zeros_like(spread)], -1).repeat(len(heights), 1).flatten())
        self.output = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels),
                                    nn.ReLU(inplace=True))
        self.absent = nn.Parameter(torch.zeros(1, out_channels, 1, 1)) if absent_embedding else None
        self.completed = nn.Parameter(torch.zeros(1, out_channels, 1, 1)) if completed_embedding else None

    def forward(self, features: Tensor | list[Tensor], cam_mask: Tensor, calibration: Calibration,
                gap_only: Tensor | None = None, completed: Tensor | None = None) -> Tensor:
        levels = [features] if isinstance(features, Tensor) else list(features)
        if len(levels) != self.num_levels:
            raise ValueError(f"view transform built for {self.num_levels} feature levels, got {len(levels)}")
        return self.sample_bev(levels, cam_mask, calibration.at_stride(self.stride), torch.linalg.inv(calibration.cam2ego),
                               gap_only, completed)

    def sample_bev(self, levels: list[Tensor], cam_mask: Tensor, intrinsics: Tensor, ego2cam: Tensor,
                   gap_only: Tensor | None = None, completed: Tensor | None = None) -> Tensor:
        """``forward`` from the main level's intrinsics [B, V, 3, 3] (at ``stride``) and
        ego2cam = inv(cam2ego) [B, V, 4, 4] (the fixed-shape path inverts in closed form)."""
        if gap_only is None:
            gap_only = torch.zeros_like(cam_mask)
        if completed is None:
            completed = torch.zeros_like(cam_mask)
        batch, cameras, channels, feat_h, feat_w = levels[0].shape
        height, width = self.grid.shape
        cells = height * width
        centres = self.grid.cell_centres(levels[0].device)                              # [HW, 2]
        points = torch.cat([centres[:, None].expand(-1, self.heights.numel(), -1),
                            self.heights[None, :, None].expand(cells, -1, 1)], dim=-1).reshape(-1, 3)  # [HW*Z, 3]
        query = self.bev_query.expand(batch, -1, -1, -1)
        offsets = torch.tanh(self.offsets(query)) * self.max_offset_px                  # [B, S*2, H, W]
        offsets = offsets.reshape(batch, self.samples, 2, cells).permute(0, 3, 1, 2)     # [B, HW, S, 2]
        logits = self.weights(query).reshape(batch, -1, cells).transpose(1, 2)             # [B, HW, L*S]
        total = levels[0].new_zeros(batch, channels, cells)
        count = levels[0].new_zeros(batch, 1, cells)
        gap_total = levels[0].new_zeros(batch, channels, cells)     # the gap-only cameras' sums
        gap_count = levels[0].new_zeros(batch, 1, cells)
        real_count = levels[0].new_zeros(batch, 1, cells)            # usable cameras that are not completed
        for cam in range(cameras):
            pixels, in_front = project_points(intrinsics[:, cam, None], transform_points(ego2cam[:, cam, None], points[None]))
            pixels = pixels.reshape(batch, cells, -1, 1, 2).expand(-1, -1, -1, self.points_per_height, -1)
            pixels = pixels.reshape(batch, cells, self.samples, 2) + offsets
            in_front = in_front.reshape(batch, cells, -1, 1).expand(-1, -1, -1, self.points_per_height)
            inside = (in_front.reshape(batch, cells, self.samples) & (pixels[..., 0] >= 0) & (pixels[..., 0] <= feat_w)
                      & (pixels[..., 1] >= 0) & (pixels[..., 1] <= feat_h))
            weight = logits.masked_fill(~inside.repeat(1, 1, self.num_levels), float("-inf")).softmax(dim=-1)
            weight = weight.nan_to_num(0.0)                                              # [B, HW, L*S]
            scale = pixels.new_tensor([2.0 / feat_w, 2.0 / feat_h])
            sampling_grid = pixels * scale - 1.0                                         # the same for every level
            sampled = torch.cat([F.grid_sample(level[:, cam], sampling_grid, mode="bilinear", padding_mode="zeros",
                                               align_corners=False) for level in levels], dim=-1)  # [B, C, HW, L*S]
            usable = inside.any(dim=-1) & ~cam_mask[:, cam, None]                        # [B, HW]
            live, gap = usable & ~gap_only[:, cam, None], usable & gap_only[:, cam, None]
            camera_sum = (sampled * weight[:, None]).sum(-1)                             # [B, C, HW]
            total = total + camera_sum * live[:, None]
            count = count + live[:, None].to(count.dtype)
            gap_total = gap_total + camera_sum * gap[:, None]
            gap_count = gap_count + gap[:, None].to(count.dtype)
            if self.completed is not None:
                real_count = real_count + (usable & ~completed[:, cam, None])[:, None].to(count.dtype)
        mean = torch.where(count > 0, total / count.clamp(min=1.0), gap_total / gap_count.clamp(min=1.0))
        bev = self.output(mean.reshape(batch, channels, height, width))
        seen = (count + gap_count).reshape(batch, 1, height, width) > 0
        if self.completed is not None:
            only_completed = seen & (real_count.reshape(batch, 1, height, width) == 0)
            bev = bev + only_completed.to(bev.dtype) * self.completed.to(bev.dtype)
        if self.absent is None:
            return bev
        return torch.where(seen, bev, self.absent.to(bev.dtype))
