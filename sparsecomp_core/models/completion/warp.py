"""Motion-compensated warp of past camera features into a current camera's view."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...geometry import project_points, transform_points


def pixel_centres(height: int, width: int, device=None) -> Tensor:
    """[height * width, 2] (u, v) centres of a feature map's pixels (see geometry)."""
    vs, us = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(width, device=device, dtype=torch.float32) + 0.5, indexing="ij")
    return torch.stack([us, vs], dim=-1).reshape(-1, 2)


class MotionCompensatedWarp(nn.Module):
    """Gathers past features of K key cameras at the pixels of a current camera.

    Each current pixel is lifted to 3D at each depth hypothesis (depth along
    the optical axis), moved into the past ego frame, projected into every
    key camera of that frame, and sampled there with ``grid_sample``; a small
    head predicts per-pixel offsets (in feature pixels) that refine the
    sampling grid. The offset head starts at zero, so an untrained warp is
    pure geometry. Hypotheses are averaged where their projection is valid.
    """

    def __init__(self, channels: int, depth_hypotheses: tuple[float, ...] = (10.0, 30.0), learn_offsets: bool = True):
        super().__init__()
        self.register_buffer("depths", torch.tensor(depth_hypotheses, dtype=torch.float32), persistent=False)
        self.offset_head = None
        if learn_offsets:
            hidden = max(channels // 4, 8)
            self.offset_head = nn.Sequential(nn.Conv2d(channels, hidden, 3, 1, 1), nn.ReLU(inplace=True),
                                             nn.Conv2d(hidden, 2, 3, 1, 1))
            nn.init.zeros_(self.offset_head[-1].weight)
            nn.init.zeros_(self.offset_head[-1].bias)

    def forward(self, past_features: Tensor, query_intrinsics: Tensor, query_cam2ego: Tensor,
                cur2past: Tensor, key_intrinsics: Tensor, key_cam2ego: Tensor,
                query_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """
        Args:
            past_features: [N, T, K, C, h, w] key cameras' features in T past frames.
            query_intrinsics: [N, 3, 3], query_cam2ego: [N, 4, 4]: the current camera,
                intrinsics at the feature level.
            cur2past: [N, T, 4, 4] current ego -> past ego (inv(ego2global_past) @ ego2global_cur).
            key_intrinsics: [N, T, K, 3, 3] (feature level), key_cam2ego: [N, T, K, 4, 4].
            query_size: (hq, wq) of the current camera's feature map.
        Returns:
            warped [N, T, K, C, hq, wq] and valid [N, T, K, hq, wq] (bool: some
            hypothesis projected inside the key camera's image).
        """
        return self.warp_with_inverses(past_features, torch.linalg.inv(query_intrinsics), query_cam2ego, cur2past,
                                       key_intrinsics, torch.linalg.inv(key_cam2ego), query_size)

    def warp_with_inverses(self, past_features: Tensor, query_intrinsics_inverse: Tensor, query_cam2ego: Tensor,
                           cur2past: Tensor, key_intrinsics: Tensor, ego2key: Tensor,
                           query_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """``forward`` with the inverses given: inv(query_intrinsics) [N, 3, 3] and
        ego2key = inv(key_cam2ego) [N, T, K, 4, 4] (the fixed-shape path computes them
        in closed form: ONNX has no matrix inverse; see sparsecomp_core/deploy/affine.py)."""
        n, t, k, c, h, w = past_features.shape
        hq, wq = query_size
        depth_count = self.depths.numel()
        uv = pixel_centres(hq, wq, past_features.device)                           # [P, 2]
        rays = torch.cat([uv, torch.ones_like(uv[:, :1])], dim=1) @ query_intrinsics_inverse.transpose(-1, -2)
        points_cam = rays[:, None] * self.depths[None, :, None, None]               # [N, D, P, 3]
        points_ego = transform_points(query_cam2ego[:, None], points_cam)            # [N, D, P, 3]
        points_past = transform_points(cur2past[:, :, None], points_ego[:, None])    # [N, T, D, P, 3]
        points_key = transform_points(ego2key[:, :, :, None], points_past[:, :, None])  # [N, T, K, D, P, 3]
        pixels, in_front = project_points(key_intrinsics[:, :, :, None], points_key)    # [N, T, K, D, P, 2]

        flat = past_features.reshape(n * t * k, c, h, w)
        pixels = pixels.reshape(n * t * k, depth_count * hq, wq, 2)
        sampled = self._sample(flat, pixels)
        if self.offset_head is not None:
            per_hypothesis = sampled.unflatten(2, (depth_count, hq)).transpose(1, 2).reshape(-1, c, hq, wq)
            offsets = self.offset_head(per_hypothesis).permute(0, 2, 3, 1)          # [NTKD, hq, wq, 2]
            pixels = pixels + offsets.reshape(n * t * k, depth_count, hq, wq, 2).reshape_as(pixels)
            sampled = self._sample(flat, pixels)

        inside = (pixels[..., 0] >= 0) & (pixels[..., 0] <= w) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= h)
        valid = inside & in_front.reshape(n * t * k, depth_count * hq, wq)
        sampled = sampled.unflatten(2, (depth_count, hq))                            # [NTK, C, D, hq, wq]
        valid = valid.unflatten(1, (depth_count, hq))                                # [NTK, D, hq, wq]
        weight = valid.to(sampled.dtype)
        count = weight.sum(dim=1)
        warped = (sampled * weight[:, None]).sum(dim=2) / count.clamp(min=1)[:, None]
        return warped.reshape(n, t, k, c, hq, wq), (count > 0).reshape(n, t, k, hq, wq)

    @staticmethod
    def _sample(features: Tensor, pixels: Tensor) -> Tensor:
        """Bilinear samples of features [M, C, h, w] at pixel coordinates [M, H', W', 2]."""
        h, w = features.shape[-2:]
        scale = torch.tensor([2.0 / w, 2.0 / h], device=pixels.device, dtype=pixels.dtype)
        grid = pixels * scale - 1.0
        return F.grid_sample(features, grid.to(features.dtype), mode="bilinear", padding_mode="zeros",
                             align_corners=False)
