"""Level 3: planning-guided completion (SPEC 4.3)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...geometry import Calibration, project_points, transform_points
from ..blocks import GateNetwork, KeyMaskedAttention, gated_fusion, norm_groups, sine_position_encoding
from .warp import pixel_centres


@dataclass
class PlanningGuidedConfig:
    enable: bool = True
    num_heads: int = 8
    key_grid: tuple[int, int] = (8, 15)      # valid cameras' features are pooled to this many keys (h, w)
    importance_sigma_px: float = 48.0        # width of the path's importance band, model-input pixels
    path_samples_per_metre: float = 1.0      # densification of the ego path before projection
    ground_height: float = 0.0               # z of the road in the ego frame, m


def trajectory_importance(trajectory: Tensor | None, intrinsics: Tensor, cam2ego: Tensor,
                          size: tuple[int, int], sigma_px: float, samples_per_metre: float = 1.0,
                          ground_height: float = 0.0) -> Tensor:
    """Importance of each pixel for the planned path: exp(-d^2 / 2 sigma^2), d the
    pixel distance to the nearest projected path point (in front of the camera).

    Args: trajectory [B, T, 2] ego-frame (x, y) on the ground or None;
    intrinsics [B, V, 3, 3] at this feature level; cam2ego [B, V, 4, 4];
    size (h, w); sigma_px in this level's pixels.
    Returns: [B, V, h, w] in [0, 1]; zeros without a trajectory.
    """
    batch, cameras = intrinsics.shape[:2]
    height, width = size
    if trajectory is None or trajectory.shape[1] == 0:
        return intrinsics.new_zeros(batch, cameras, height, width)
    # Densify the polyline (origin first) so sparse waypoints still draw a band.
    path = torch.cat([trajectory.new_zeros(batch, 1, 2), trajectory.to(intrinsics.dtype)], dim=1)
    step = (path[:, 1:] - path[:, :-1]).norm(dim=-1).max()
    per_segment = max(int(torch.ceil(step * samples_per_metre).item()), 1)
    alphas = torch.arange(per_segment, device=path.device, dtype=path.dtype) / per_segment
    dense = (path[:, :-1, None] + (path[:, 1:] - path[:, :-1])[:, :, None] * alphas[None, None, :, None]).flatten(1, 2)
    dense = torch.cat([dense, path[:, -1:]], dim=1)
    points = torch.cat([dense, torch.full_like(dense[..., :1], ground_height)], dim=-1)   # [B, P, 3]
    points_cam = transform_points(torch.linalg.inv(cam2ego), points[:, None])            # [B, V, P, 3]
    pixels, in_front = project_points(intrinsics, points_cam, min_depth=0.5)               # [B, V, P, 2]
    centres = pixel_centres(height, width, intrinsics.device)                               # [HW, 2]
    dist2 = ((centres[None, None, :, None] - pixels[:, :, None]) ** 2).sum(-1)             # [B, V, HW, P]
    dist2 = dist2.masked_fill(~in_front[:, :, None], float("inf"))
    nearest = dist2.min(dim=-1).values
    return torch.exp(-nearest / (2 * sigma_px ** 2)).reshape(batch, cameras, height, width)


class CrossCameraAttention(nn.Module):
    """Failed cameras' pixels attend to the current valid cameras' pooled features.

    forward(features [B, V, C, h, w], cam_mask [B, V], batch_idx, cam_idx [N])
    -> (attended [N, C, h, w], has_keys [N]).
    """

    def __init__(self, channels: int, num_cameras: int, num_heads: int, key_grid: tuple[int, int]):
        super().__init__()
        self.key_grid = key_grid
        self.camera_embedding = nn.Embedding(num_cameras, channels)
        self.attention = KeyMaskedAttention(channels, num_heads)

    def forward(self, features: Tensor, cam_mask: Tensor, batch_idx: Tensor, cam_idx: Tensor) -> tuple[Tensor, Tensor]:
        batch, cameras, channels, height, width = features.shape
        grid_h, grid_w = min(self.key_grid[0], height), min(self.key_grid[1], width)
        pooled = F.adaptive_avg_pool2d(features.flatten(0, 1), (grid_h, grid_w))
        cam_codes = self.camera_embedding.weight[:cameras]
        keys = (pooled.flatten(2).transpose(1, 2).reshape(batch, cameras, grid_h * grid_w, channels)
                + sine_position_encoding(grid_h, grid_w, channels, features.device) + cam_codes[None, :, None])
        keys = keys[batch_idx].flatten(1, 2)                                          # [N, V*G, C]
        key_valid = (~cam_mask[batch_idx])[:, :, None].expand(-1, -1, grid_h * grid_w).flatten(1)
        query = (features[batch_idx, cam_idx].flatten(2).transpose(1, 2)
                 + sine_position_encoding(height, width, channels, features.device) + cam_codes[cam_idx][:, None])
        attended, has_keys, _ = self.attention(query, keys, keys, key_valid)
        return attended.transpose(1, 2).reshape(-1, channels, height, width), has_keys


class LevelPlanningGuided(nn.Module):
    """One FPN level of planning-guided completion for the failed cameras."""

    def __init__(self, channels: int, num_cameras: int, num_heads: int, key_grid: tuple[int, int]):
        super().__init__()
        self.cross_camera = CrossCameraAttention(channels, num_cameras, num_heads, key_grid)
        self.coarse = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, 1, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(channels, channels, 3, 1, 1))
        self.fine = nn.Sequential(nn.Conv2d(2 * channels + 1, channels, 3, 1, 1),
                                  nn.GroupNorm(norm_groups(channels), channels), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, 1, 2, dilation=2), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, 1, 1))
        self.gate = GateNetwork(channels)

    def forward(self, features: Tensor, cam_mask: Tensor, importance: Tensor,
                batch_idx: Tensor, cam_idx: Tensor) -> tuple[Tensor, Tensor]:
        """features [B, V, C, h, w], importance [B, V, h, w] -> (features, completed [N, C, h, w])."""
        original = features[batch_idx, cam_idx]
        attended, has_keys = self.cross_camera(features, cam_mask, batch_idx, cam_idx)
        # Coarse path: attended content plus the image-wide context.
        context = attended.mean(dim=(2, 3), keepdim=True).expand_as(attended)
        coarse = self.coarse(torch.cat([attended, context], dim=1))
        weight = importance[batch_idx, cam_idx][:, None]                           # [N, 1, h, w]
        fine = self.fine(torch.cat([attended, original, weight], dim=1))
        completed = coarse * (1 - weight) + fine * weight
        gate = self.gate(original, completed) * has_keys[:, None, None, None]
        output = features.clone()
        output[batch_idx, cam_idx] = gated_fusion(original, completed, gate)
        return output, completed


class PlanningGuidedCompletion(nn.Module):
    """forward(features: list of [B, V, C, h, w], cam_mask [B, V], calibration,
    ego_trajectory [B, T, 2] or None) -> dict(features: list (cameras that have
    not failed bit-identical), importance: list of [B, V, h, w], completed:
    list of [N_failed, C, h, w])."""

    def __init__(self, channels: int, num_cameras: int, strides: tuple[int, ...], num_heads: int = 8,
                 key_grid: tuple[int, int] = (8, 15), importance_sigma_px: float = 48.0,
                 path_samples_per_metre: float = 1.0, ground_height: float = 0.0):
        super().__init__()
        self.strides = tuple(strides)
        self.importance_sigma_px, self.path_samples_per_metre = importance_sigma_px, path_samples_per_metre
        self.ground_height = ground_height
        self.levels = nn.ModuleList(LevelPlanningGuided(channels, num_cameras, num_heads, key_grid)
                                    for _ in self.strides)

    def forward(self, features: list[Tensor], cam_mask: Tensor, calibration: Calibration,
                ego_trajectory: Tensor | None = None) -> dict:
        result = {"features": list(features), "importance": [], "completed": []}
        for stride, feats in zip(self.strides, features):
            result["importance"].append(trajectory_importance(
                ego_trajectory, calibration.at_stride(stride), calibration.cam2ego, feats.shape[-2:],
                self.importance_sigma_px / stride, self.path_samples_per_metre, self.ground_height))
        if not bool(cam_mask.any()):
            return result
        batch_idx, cam_idx = cam_mask.nonzero(as_tuple=True)
        for level, module in enumerate(self.levels):
            result["features"][level], completed = module(features[level], cam_mask, result["importance"][level],
                                                          batch_idx, cam_idx)
            result["completed"].append(completed)
        return result


def build_planning_guided(cfg: PlanningGuidedConfig, channels: int, num_cameras: int,
                          strides: tuple[int, ...]) -> PlanningGuidedCompletion | None:
    if not cfg.enable:
        return None
    return PlanningGuidedCompletion(channels, num_cameras, strides, cfg.num_heads, tuple(cfg.key_grid),
                                    cfg.importance_sigma_px, cfg.path_samples_per_metre, cfg.ground_height)
