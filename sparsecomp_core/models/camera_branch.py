"""Camera branch: backbone (student and teacher) + completion cascade."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..geometry import Calibration
from .backbone import ImageBackbone, build_backbone
from .completion.cascade import CascadeState, CompletionCascade, build_completion_cascade
from .model_config import ModelConfig


class CameraBranch(nn.Module):
    """images -> multi-scale camera features, failed cameras completed.

    forward(images [B, V, 3, H, W] (failed cameras as delivered, e.g. black),
    cam_mask [B, V] bool, calibration, ego2global [B, 4, 4] float64,
    timestamp_us [B] int64, state: CascadeState, sequence_ids=None,
    ego_trajectory [B, T, 2] or None, teacher_images [B, V, 3, H, W] or None)
    -> dict(features: list of 4 [B, V, C, H/s, W/s], state, importance,
    losses: dict (cascade losses; only when teacher_images are given)).
    The teacher is the same backbone on the full images under no_grad.
    """

    def __init__(self, backbone: ImageBackbone, cascade: CompletionCascade):
        super().__init__()
        self.backbone = backbone
        self.cascade = cascade

    def initial_state(self) -> CascadeState:
        return self.cascade.initial_state()

    def forward(self, images: Tensor, cam_mask: Tensor, calibration: Calibration, ego2global: Tensor,
                timestamp_us: Tensor, state: CascadeState | None = None, sequence_ids: Sequence | None = None,
                ego_trajectory: Tensor | None = None, teacher_images: Tensor | None = None) -> dict:
        features = self.backbone(images)
        outputs = self.cascade(features, cam_mask, calibration, ego2global, timestamp_us, state,
                               sequence_ids, ego_trajectory)
        outputs["losses"] = {}
        if teacher_images is not None:
            with torch.no_grad():
                teacher = self.backbone(teacher_images)
            outputs["losses"] = self.cascade.losses(outputs, teacher, cam_mask)
        return outputs


def build_camera_branch(cfg: ModelConfig, num_cameras: int) -> CameraBranch:
    backbone = build_backbone(cfg.backbone)
    cascade = build_completion_cascade(cfg.cascade, cfg.backbone.out_channels, num_cameras, backbone.strides)
    return CameraBranch(backbone, cascade)
