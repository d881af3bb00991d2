"""The completion cascade: temporal -> VAE -> planning-guided (SPEC 4, 8)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor, nn

from ...geometry import Calibration
from .history import FeatureHistory
from .losses import planning_guided_loss, ssl_consistency_loss, vae_kl_loss, vae_reconstruction_loss
from .planning_guided import PlanningGuidedCompletion, PlanningGuidedConfig, build_planning_guided
from .temporal import TemporalCompletion, TemporalCompletionConfig, build_temporal_completion
from .vae import PVReconVAE, VAECompletionConfig, build_vae_completion


@dataclass
class CompletionLossWeights:
    ssl: float = 1.0
    vae_rec: float = 1.0
    vae_kl: float = 0.001
    planning_guided: float = 0.5
    # True: the reconstruction terms (ssl, vae_rec, planning_guided) are relative to the
    # teacher's mean square feature, so they do not grow with the feature scale
    # (completion/losses.py; docs/completion.md, "Loss scale"). False: feature units.
    relative_to_teacher: bool = False
    # With relative_to_teacher: divide by the teacher's variance about each channel's mean
    # instead of its mean square, so the spatial structure, not the per-channel constant that
    # is most of a trained backbone's mean square, sets the scale.
    centred_teacher_scale: bool = False


@dataclass
class CascadeConfig:
    temporal: TemporalCompletionConfig = field(default_factory=TemporalCompletionConfig)
    vae: VAECompletionConfig = field(default_factory=VAECompletionConfig)
    planning_guided: PlanningGuidedConfig = field(default_factory=PlanningGuidedConfig)
    loss_weights: CompletionLossWeights = field(default_factory=CompletionLossWeights)
    temporal_level: int = 2               # FPN level index of stride 32 (level 1 works there only)


@dataclass(frozen=True)
class CascadeState:
    """Temporal state of the cascade, passed in and returned by each call."""
    temporal: FeatureHistory = field(default_factory=FeatureHistory)


class CompletionCascade(nn.Module):
    """Runs the enabled levels in one order for training and inference:
    temporal (1/32 level) -> VAE -> planning-guided (every level). The VAE
    runs in training (its output passed on with probability
    1 - vae_train_bypass_probability) and at inference with use_at_inference.

    forward(features: list of [B, V, C, h, w], cam_mask [B, V] bool,
    calibration, ego2global [B, 4, 4] float64, timestamp_us [B] int64,
    state: CascadeState, sequence_ids=None, ego_trajectory [B, T, 2] or None)
    -> dict(features: list, state: CascadeState, importance: list of
    [B, V, h, w], vae: dict or None, planning: dict or None, temporal_gate,
    completed_cameras [B, V] bool: failed cameras some level rewrote with
    evidence (history, the VAE, or a live camera for level 3)).
    Cameras that have not failed are bit-identical at every level.
    """

    def __init__(self, temporal: TemporalCompletion | None, vae: PVReconVAE | None,
                 planning_guided: PlanningGuidedCompletion | None, temporal_level: int = 2,
                 vae_use_at_inference: bool = False, loss_weights: CompletionLossWeights | None = None,
                 vae_train_bypass_probability: float = 0.5):
        super().__init__()
        self.temporal, self.vae, self.planning_guided = temporal, vae, planning_guided
        self.temporal_level = temporal_level
        self.vae_use_at_inference = vae_use_at_inference
        self.vae_train_bypass_probability = vae_train_bypass_probability
        self.loss_weights = loss_weights or CompletionLossWeights()

    def initial_state(self) -> CascadeState:
        return CascadeState(self.temporal.empty_history() if self.temporal is not None else FeatureHistory())

    def forward(self, features: list[Tensor], cam_mask: Tensor, calibration: Calibration, ego2global: Tensor,
                timestamp_us: Tensor, state: CascadeState | None = None, sequence_ids: Sequence | None = None,
                ego_trajectory: Tensor | None = None) -> dict:
        state = state or self.initial_state()
        features = list(features)
        result = {"state": state, "vae": None, "planning": None, "temporal_gate": None, "importance": []}
        completed = torch.zeros_like(cam_mask)
        if self.temporal is not None:
            level = self.temporal_level
            out = self.temporal(features[level], cam_mask, calibration, ego2global, timestamp_us,
                                state.temporal, sequence_ids)
            features[level] = out["features"]
            result["state"] = CascadeState(out["history"])
            result["temporal_gate"] = out["gate"]
            if out["gate"] is not None and out["gate"].numel():
                # The gate is zero exactly where the camera had no usable history.
                completed[cam_mask] = out["gate"].flatten(1).amax(dim=1) > 0
        if self.vae is not None and (self.training or self.vae_use_at_inference):
            result["vae"] = self.vae(features, cam_mask)
            bypass = self.training and bool(torch.rand(()) < self.vae_train_bypass_probability)
            if not bypass:
                features = result["vae"]["features"]
                completed = cam_mask.clone()
        if self.planning_guided is not None:
            result["planning"] = self.planning_guided(features, cam_mask, calibration, ego_trajectory)
            features = result["planning"]["features"]
            result["importance"] = result["planning"]["importance"]
            completed = completed | (cam_mask & (~cam_mask).any(dim=1, keepdim=True))   # keys from a live camera
        result["features"] = features
        result["completed_cameras"] = completed
        return result

    def losses(self, outputs: dict, teacher_features: list[Tensor], cam_mask: Tensor) -> dict[str, Tensor]:
        """Weighted cascade losses from forward's outputs and the teacher's features."""
        weights = self.loss_weights
        device = teacher_features[0].device
        scale = {"relative": weights.relative_to_teacher, "centred": weights.centred_teacher_scale}
        losses = {"loss_ssl": weights.ssl * ssl_consistency_loss(outputs["features"], teacher_features, cam_mask,
                                                                 **scale)}
        if outputs["vae"] is not None:
            vae = outputs["vae"]
            losses["loss_vae_rec"] = weights.vae_rec * vae_reconstruction_loss(vae["reconstructions"],
                                                                               teacher_features, cam_mask, **scale)
            losses["loss_vae_kl"] = weights.vae_kl * vae_kl_loss(vae["mu"], vae["logvar"]).to(device)
        if outputs["planning"] is not None:
            planning = outputs["planning"]
            losses["loss_planning_guided"] = weights.planning_guided * planning_guided_loss(
                planning["completed"], teacher_features, planning["importance"], cam_mask, **scale)
        return losses


def build_completion_cascade(cfg: CascadeConfig, channels: int, num_cameras: int,
                             strides: tuple[int, ...]) -> CompletionCascade:
    temporal_stride = strides[cfg.temporal_level]
    return CompletionCascade(
        build_temporal_completion(cfg.temporal, channels, num_cameras, temporal_stride),
        build_vae_completion(cfg.vae, channels, len(strides)),
        build_planning_guided(cfg.planning_guided, channels, num_cameras, strides),
        cfg.temporal_level, cfg.vae.use_at_inference, cfg.loss_weights, cfg.vae.train_bypass_probability)
