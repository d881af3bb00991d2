"""The completion cascade at fixed shapes: every camera goes through the
completion levels and the failed ones take the result (``torch.where`` on
``cam_mask``), instead of gathering the failed cameras with ``nonzero`` (a
data-dependent shape). Cameras that have not failed stay bit-identical, as in
the eager cascade; failed ones equal the eager result up to float rounding
(the same ops on a larger batch). Costs V / N_failed times the eager
completion compute, which is small next to the backbone at the tiny and full
sizes (docs/deployment.md).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..geometry import scale_intrinsics
from ..models.blocks import gated_fusion, sine_position_encoding
from ..models.completion.cascade import CompletionCascade
from ..models.completion.temporal import TemporalCompletion
from .affine import affine_inverse, inverse_3x3
from .static_state import pushed, scene_changed_in_graph


def every_camera(batch: int, cameras: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(batch index, camera index), each [B * V]: all cameras, sample-major."""
    batch_idx = torch.arange(batch, device=device)[:, None].expand(batch, cameras).reshape(-1)
    cam_idx = torch.arange(cameras, device=device)[None].expand(batch, cameras).reshape(-1)
    return batch_idx, cam_idx


def where_failed(cam_mask: Tensor, completed: Tensor, original: Tensor) -> Tensor:
    """[B, V, ...]: ``completed`` for failed cameras, ``original`` (unchanged) elsewhere."""
    mask = cam_mask.reshape(*cam_mask.shape, *([1] * (original.dim() - 2)))
    return torch.where(mask, completed, original)


class FixedShapeTemporalCompletion(nn.Module):
    """Level 1 on static history buffers (see static_state). Mirrors
    ``TemporalCompletion._complete`` for every camera and all T slots; invalid slots
    are masked keys, so they get exactly zero attention weight.

    forward(features [B, V, C, h, w], cam_mask [B, V], intrinsics [B, V, 3, 3]
    (model input), cam2ego [B, V, 4, 4], ego2global [B, 4, 4] float64, timestamp_us
    [B] int64, sequence_changed [B] bool, key_cameras [V, K] int64, state: dict of
    history_* buffers) -> (features, completed [B, V] bool, new history_* buffers).
    """

    def __init__(self, temporal: TemporalCompletion):
        super().__init__()
        self.temporal = temporal

    def forward(self, features: Tensor, cam_mask: Tensor, intrinsics: Tensor, cam2ego: Tensor, ego2global: Tensor,
                timestamp_us: Tensor, sequence_changed: Tensor, key_cameras: Tensor,
                state: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        module = self.temporal
        batch, cameras, channels, height, width = features.shape
        changed = scene_changed_in_graph(state["history_timestamp_us"][:, 0], timestamp_us, sequence_changed,
                                         module.max_time_gap_s)
        valid = state["history_valid"] & ~changed[:, None]                               # [B, T]
        slots = valid.shape[1]
        batch_idx, cam_idx = every_camera(batch, cameras, features.device)               # N = B * V
        key_cams = key_cameras[cam_idx]                                                  # [N, K]
        num_keys = key_cams.shape[1]
        time_idx = torch.arange(slots, device=features.device)

        def per_key(stacked: Tensor) -> Tensor:  # [B, T, V, ...] -> [N, T, K, ...]
            return stacked[batch_idx[:, None, None], time_idx[None, :, None], key_cams[:, None, :]]

        stride_scale = 1.0 / module.stride
        past_features = per_key(state["history_features"])
        past_failed = per_key(state["history_cam_mask"])
        past_intrinsics = per_key(scale_intrinsics(state["history_intrinsics"], stride_scale))
        past_cam2ego = per_key(state["history_cam2ego"])
        frame_valid = valid[batch_idx]                                                   # [N, T]
        past_ego2global = state["history_ego2global"][batch_idx]                         # [N, T, 4, 4]
        cur2past = (affine_inverse(past_ego2global) @ ego2global.to(torch.float64)[batch_idx, None]).float()
        query_intrinsics = scale_intrinsics(intrinsics, stride_scale)[batch_idx, cam_idx]
        warped, projected = module.warp.warp_with_inverses(
            past_features, inverse_3x3(query_intrinsics), cam2ego[batch_idx, cam_idx], cur2past, past_intrinsics,
            affine_inverse(past_cam2ego), (height, width))

        n, t = warped.shape[:2]
        pooled, coverage = module._pool(warped.flatten(0, 2), projected.flatten(0, 2))   # [NTK, C, h', w']
        key_h, key_w = pooled.shape[-2:]
        keys = pooled.flatten(2).transpose(1, 2).reshape(n, t, num_keys, key_h * key_w, channels)
        keys = (keys + sine_position_encoding(key_h, key_w, channels, features.device)
                + module.camera_embedding(key_cams)[:, None, :, None]
                + module.time_embedding(time_idx)[None, :, None, None])
        key_valid = ((coverage.reshape(n, t, num_keys, key_h * key_w) > 0)
                     & ~past_failed[..., None] & frame_valid[:, :, None, None])
        keys, key_valid = keys.reshape(n, -1, channels), key_valid.reshape(n, -1)

        original = features.reshape(n, channels, height, width)
        query = (original.flatten(2).transpose(1, 2) + sine_position_encoding(height, width, channels, features.device)
                 + module.camera_embedding(cam_idx)[:, None])
        attended, has_keys, _ = module.attention(query, keys, keys, key_valid)
        completed = module.decoder(attended.transpose(1, 2).reshape(n, channels, height, width))
        gate = module.gate(original, completed) * has_keys[:, None, None, None]
        fused = gated_fusion(original, completed, gate).reshape(batch, cameras, channels, height, width)
        output = where_failed(cam_mask, fused, features)
        rewritten = cam_mask & (gate.flatten(1).amax(dim=1) > 0).reshape(batch, cameras)

        new_state = {
            "history_features": pushed(state["history_features"], features),
            "history_cam_mask": pushed(state["history_cam_mask"], cam_mask),
            "history_intrinsics": pushed(state["history_intrinsics"], intrinsics),
            "history_cam2ego": pushed(state["history_cam2ego"], cam2ego),
            "history_ego2global": pushed(state["history_ego2global"], ego2global.to(torch.float64)),
            "history_timestamp_us": pushed(state["history_timestamp_us"], timestamp_us),
            "history_valid": pushed(valid, torch.ones_like(valid[:, 0]))}
        return output, rewritten, new_state


class FixedShapeCascade(nn.Module):
    """``CompletionCascade`` in inference at fixed shapes (temporal -> VAE if
    use_at_inference -> planning-guided), sharing its modules.

    forward(features: list of [B, V, C, h, w], cam_mask, intrinsics, cam2ego,
    ego2global, timestamp_us, sequence_changed, key_cameras, importance: list of
    [B, V, h, w] per level (planning-guided; computed outside the graph from the
    variable-length path, zeros without one), state) -> dict(features: list,
    completed_cameras [B, V] bool, state: new history_* buffers).
    """

    def __init__(self, cascade: CompletionCascade):
        super().__init__()
        self.cascade = cascade
        self.temporal = None if cascade.temporal is None else FixedShapeTemporalCompletion(cascade.temporal)

    def forward(self, features: list[Tensor], cam_mask: Tensor, intrinsics: Tensor, cam2ego: Tensor,
                ego2global: Tensor, timestamp_us: Tensor, sequence_changed: Tensor, key_cameras: Tensor,
                importance: list[Tensor], state: dict[str, Tensor]) -> dict:
        cascade = self.cascade
        features = list(features)
        completed = torch.zeros_like(cam_mask)
        new_state = {}
        if self.temporal is not None:
            level = cascade.temporal_level
            features[level], completed, new_state = self.temporal(
                features[level], cam_mask, intrinsics, cam2ego, ego2global, timestamp_us, sequence_changed,
                key_cameras, state)
        if cascade.vae is not None and cascade.vae_use_at_inference:
            batch, cameras = cam_mask.shape
            for level, (vae, level_features) in enumerate(zip(cascade.vae.levels, features)):
                reconstruction, _, _ = vae(level_features.flatten(0, 1), sample=False)
                features[level] = where_failed(cam_mask, reconstruction.unflatten(0, (batch, cameras)), level_features)
            completed = cam_mask.clone()
        if cascade.planning_guided is not None:
            batch_idx, cam_idx = every_camera(*cam_mask.shape, cam_mask.device)
            for level, module in enumerate(cascade.planning_guided.levels):
                rewritten, _ = module(features[level], cam_mask, importance[level], batch_idx, cam_idx)
                features[level] = where_failed(cam_mask, rewritten, features[level])
            completed = completed | (cam_mask & (~cam_mask).any(dim=1, keepdim=True))
        return {"features": features, "completed_cameras": completed, "state": new_state}
