"""Level 1: motion-compensated temporal completion (SPEC 4.1), V1 and V2 in one module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...geometry import Calibration
from ..blocks import GateNetwork, KeyMaskedAttention, gated_fusion, norm_groups, sine_position_encoding
from .history import FeatureHistory, HistoryFrame
from .warp import MotionCompensatedWarp


@dataclass
class TemporalCompletionConfig:
    enable: bool = True
    # "global" (V1): keys from all cameras; "neighbours" (V2): from the camera
    # and its calibration neighbours only.
    mode: Literal["global", "neighbours"] = "neighbours"
    queue_length: int = 2
    kv_downsample: int = 4
    depth_hypotheses: tuple[float, ...] = (10.0, 30.0)
    num_neighbours: int = 3              # group size in "neighbours" mode, the camera included
    num_heads: int = 8
    max_time_gap_s: float = 2.0
    learn_offsets: bool = True

    def __post_init__(self) -> None:
        if self.queue_length < 1:
            raise ValueError("queue_length must be >= 1")
        if self.kv_downsample < 1:
            raise ValueError("kv_downsample must be >= 1")
        if not self.depth_hypotheses or min(self.depth_hypotheses) <= 0:
            raise ValueError("depth_hypotheses must be positive depths in metres")
        if self.num_neighbours < 1:
            raise ValueError("num_neighbours must be >= 1")


class SpatialDecoder(nn.Module):
    """Residual conv refinement: [N, C, h, w] -> [N, C, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.GroupNorm(norm_groups(channels), channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TemporalCompletion(nn.Module):
    """Rewrites the 1/32 features of failed cameras from past frames.

    forward(features [B, V, C, h, w], cam_mask [B, V], calibration, ego2global
    [B, 4, 4] float64, timestamp_us [B] int64, history: FeatureHistory,
    sequence_ids) -> dict(features [B, V, C, h, w], history: FeatureHistory,
    gate [N_failed, 1, h, w] or None).

    Cameras that have not failed are returned bit-identical; with no failed
    camera or no usable history the input tensor itself is returned. The
    current frame (as observed) is pushed onto the returned history.
    """

    def __init__(self, channels: int, num_cameras: int, stride: int = 32,
                 mode: Literal["global", "neighbours"] = "neighbours", queue_length: int = 2,
                 kv_downsample: int = 4, depth_hypotheses: tuple[float, ...] = (10.0, 30.0),
                 num_neighbours: int = 3, num_heads: int = 8, max_time_gap_s: float = 2.0,
                 learn_offsets: bool = True):
        super().__init__()
        self.channels, self.num_cameras, self.stride = channels, num_cameras, stride
        self.mode, self.queue_length, self.kv_downsample = mode, queue_length, kv_downsample
        self.num_neighbours, self.max_time_gap_s = num_neighbours, max_time_gap_s
        self.warp = MotionCompensatedWarp(channels, depth_hypotheses, learn_offsets)
        self.camera_embedding = nn.Embedding(num_cameras, channels)
        self.time_embedding = nn.Embedding(queue_length, channels)
        self.attention = KeyMaskedAttention(channels, num_heads)
        self.decoder = SpatialDecoder(channels)
        self.gate = GateNetwork(channels)

    def empty_history(self) -> FeatureHistory:
        return FeatureHistory(max_gap_s=self.max_time_gap_s)

    def key_cameras(self, calibration: Calibration) -> Tensor:
        """[V, K] cameras whose past features serve as keys for each camera."""
        if self.mode == "global":
            all_cameras = torch.arange(calibration.num_cameras, device=calibration.intrinsics.device)
            return all_cameras[None].expand(calibration.num_cameras, -1)
        return calibration.neighbours(self.num_neighbours)

    def forward(self, features: Tensor, cam_mask: Tensor, calibration: Calibration, ego2global: Tensor,
                timestamp_us: Tensor, history: FeatureHistory, sequence_ids: Sequence | None = None) -> dict:
        history = history.checked_for_scene_change(timestamp_us, sequence_ids)
        output, gate = features, None
        if bool(cam_mask.any()) and history.has_evidence():
            output, gate = self._complete(features, cam_mask, calibration, ego2global, history)
        frame = HistoryFrame(features=features.detach(), cam_mask=cam_mask.clone(),
                             ego2global=ego2global.to(torch.float64), timestamp_us=timestamp_us.to(torch.int64),
                             calibration=calibration,
                             valid=torch.ones(features.shape[0], dtype=torch.bool, device=features.device))
        return {"features": output, "history": history.pushed(frame, sequence_ids, self.queue_length),
                "gate": gate}

    def _complete(self, features: Tensor, cam_mask: Tensor, calibration: Calibration, ego2global: Tensor,
                  history: FeatureHistory) -> tuple[Tensor, Tensor]:
        batch_idx, cam_idx = cam_mask.nonzero(as_tuple=True)                        # N failed cameras
        _, _, channels, height, width = features.shape
        frames = history.frames
        key_cams = self.key_cameras(calibration)[cam_idx]                            # [N, K]
        num_keys = key_cams.shape[1]
        time_idx = torch.arange(len(frames), device=features.device)

        def per_key(stacked: Tensor) -> Tensor:  # [B, T, V, ...] -> [N, T, K, ...]
            return stacked[batch_idx[:, None, None], time_idx[None, :, None], key_cams[:, None, :]]

        past_features = per_key(torch.stack([f.features for f in frames], dim=1))
        past_failed = per_key(torch.stack([f.cam_mask for f in frames], dim=1))
        past_intrinsics = per_key(torch.stack([f.calibration.at_stride(self.stride) for f in frames], dim=1))
        past_cam2ego = per_key(torch.stack([f.calibration.cam2ego for f in frames], dim=1))
        frame_valid = torch.stack([f.valid for f in frames], dim=1)[batch_idx]       # [N, T]
        past_ego2global = torch.stack([f.ego2global for f in frames], dim=1)[batch_idx]  # [N, T, 4, 4]
        cur2past = (torch.linalg.inv(past_ego2global) @ ego2global.to(torch.float64)[batch_idx, None]).float()

        warped, projected = self.warp(
            past_features, calibration.at_stride(self.stride)[batch_idx, cam_idx],
            calibration.cam2ego[batch_idx, cam_idx], cur2past, past_intrinsics, past_cam2ego, (height, width))

        # Keys: warped maps pooled by kv_downsample, plus camera, time and position codes.
        n, t = warped.shape[:2]
        pooled, coverage = self._pool(warped.flatten(0, 2), projected.flatten(0, 2))  # [NTK, C, h', w']
        key_h, key_w = pooled.shape[-2:]
        keys = pooled.flatten(2).transpose(1, 2).reshape(n, t, num_keys, key_h * key_w, channels)
        keys = (keys + sine_position_encoding(key_h, key_w, channels, features.device)
                + self.camera_embedding(key_cams)[:, None, :, None]
                + self.time_embedding(time_idx)[None, :, None, None])
        key_valid = ((coverage.reshape(n, t, num_keys, key_h * key_w) > 0)
                     & ~past_failed[..., None] & frame_valid[:, :, None, None])   # then-failed -> masked
        keys, key_valid = keys.reshape(n, -1, channels), key_valid.reshape(n, -1)

        original = features[batch_idx, cam_idx]                                       # [N, C, h, w]
        query = (original.flatten(2).transpose(1, 2) + sine_position_encoding(height, width, channels, features.device)
                 + self.camera_embedding(cam_idx)[:, None])
        attended, has_keys, _ = self.attention(query, keys, keys, key_valid)
        completed = self.decoder(attended.transpose(1, 2).reshape(n, channels, height, width))
        gate = self.gate(original, completed) * has_keys[:, None, None, None]      # no evidence -> keep input
        output = features.clone()
        output[batch_idx, cam_idx] = gated_fusion(original, completed, gate)
        return output, gate

    def _pool(self, warped: Tensor, projected: Tensor) -> tuple[Tensor, Tensor]:
        """Coverage-weighted average pooling by kv_downsample: [M, C, h, w] -> [M, C, h', w']."""
        if self.kv_downsample == 1:
            return warped, projected.to(warped.dtype)
        weight = projected.to(warped.dtype)[:, None]
        kernel = self.kv_downsample
        summed = F.avg_pool2d(warped * weight, kernel, ceil_mode=True)
        coverage = F.avg_pool2d(weight, kernel, ceil_mode=True)
        return summed / coverage.clamp(min=1e-6), coverage[:, 0]


def build_temporal_completion(cfg: TemporalCompletionConfig, channels: int, num_cameras: int,
                              stride: int = 32) -> TemporalCompletion | None:
    if not cfg.enable:
        return None
    return TemporalCompletion(channels, num_cameras, stride, cfg.mode, cfg.queue_length, cfg.kv_downsample,
                              tuple(cfg.depth_hypotheses), cfg.num_neighbours, cfg.num_heads,
                              cfg.max_time_gap_s, cfg.learn_offsets)
