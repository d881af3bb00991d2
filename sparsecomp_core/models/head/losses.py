"""Losses of the dynamic head: one-to-one Hungarian matching, focal
classification, L1 box, angle-bin CE, occlusion focal, distance and occlusion
weights, deep supervision over decoder layers (SPEC 6)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..bev.grid import BEVGrid
from .boxes import MOVING_CLASSES, STATIC_CLASSES, VULNERABLE_CLASSES, angle_bin_targets, encode_boxes
from .heatmap import gaussian_focal_loss, heatmap_targets


@dataclass
class DynamicLossConfig:
    task_weight: float = 1.25
    cls_weight: float = 2.0
    box_weight: float = 0.25
    angle_weight: float = 0.2
    occlusion_weight: float = 0.5
    heatmap_weight: float = 1.0                  # only with heatmap-initialised queries
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    match_cls_weight: float = 2.0
    match_centre_weight: float = 0.25            # per metre of BEV centre distance (L1)
    # centre (3), log size (3), sin, cos, velocity (3)
    code_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2, 0.2)
    near_distance: float = 6.0
    mid_distance: float = 12.0
    near_weight: float = 4.0                     # VRU and moving classes within near_distance
    mid_weight: float = 2.0                      # ... within mid_distance
    static_far_distance: float = 30.0            # static classes: near_weight at 0 m falling linearly to 1 here
    velocity_occlusion_weights: tuple[float, float, float, float] = (1.0, 0.8, 0.5, 0.25)

    def __post_init__(self) -> None:
        if len(self.code_weights) != 11:
            raise ValueError("code_weights needs 11 entries (centre 3, log size 3, sin, cos, velocity 3)")


def distance_weights(labels: Tensor, centres: Tensor, cfg: DynamicLossConfig) -> Tensor:
    """Per ground-truth weight [M]: VRU and moving classes x near_weight within
    near_distance, x mid_weight within mid_distance; static classes from
    near_weight at 0 m falling linearly to 1 at static_far_distance; 1 otherwise."""
    distance = centres[:, :2].norm(dim=1)
    weights = torch.ones_like(distance)
    dynamic = torch.isin(labels, torch.tensor(VULNERABLE_CLASSES + MOVING_CLASSES, device=labels.device))
    weights = torch.where(dynamic & (distance < cfg.mid_distance), torch.full_like(weights, cfg.mid_weight), weights)
    weights = torch.where(dynamic & (distance < cfg.near_distance), torch.full_like(weights, cfg.near_weight), weights)
    static = torch.isin(labels, torch.tensor(STATIC_CLASSES, device=labels.device))
    falling = cfg.near_weight - (cfg.near_weight - 1.0) * (distance / cfg.static_far_distance).clamp(max=1.0)
    return torch.where(static, falling, weights)


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float, gamma: float) -> Tensor:
    """Element-wise sigmoid focal loss (RetinaNet)."""
    prob = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
    return alpha_t * (1 - p_t) ** gamma * ce


def softmax_focal_loss(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Per-row multi-class focal loss [N] for integer targets [N]."""
    log_prob = F.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return -((1 - log_prob.exp()) ** gamma) * log_prob


class HungarianMatcher:
    """One-to-one assignment of predictions to ground truth (scipy's Hungarian
    solver) with cost = match_cls_weight * focal class cost +
    match_centre_weight * L1 BEV centre distance (metres)."""

    def __init__(self, cfg: DynamicLossConfig):
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, cls_logits: Tensor, centres: Tensor, gt_labels: Tensor, gt_centres: Tensor) -> tuple[Tensor, Tensor]:
        """cls_logits [Q, 8], centres [Q, 3], gt_labels [M], gt_centres [M, 3] -> (pred index [K], gt index [K])."""
        if gt_labels.numel() == 0:
            empty = torch.zeros(0, dtype=torch.long, device=cls_logits.device)
            return empty, empty
        prob = torch.sigmoid(cls_logits[:, gt_labels].float())                       # [Q, M]
        alpha, gamma = self.cfg.focal_alpha, self.cfg.focal_gamma
        positive = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        negative = (1 - alpha) * prob ** gamma * -(1 - prob + 1e-8).log()
        cost = (self.cfg.match_cls_weight * (positive - negative)
                + self.cfg.match_centre_weight * torch.cdist(centres[:, :2].float(), gt_centres[:, :2].float(), p=1))
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return (torch.as_tensor(rows, dtype=torch.long, device=cls_logits.device),
                torch.as_tensor(cols, dtype=torch.long, device=cls_logits.device))


class DynamicLoss(nn.Module):
    """forward(outputs of DynamicHead, targets: B dicts of boxes [M, 10],
    labels [M], occlusion [M]) -> dict(loss_cls, loss_box, loss_angle,
    loss_occlusion): each averaged over decoder layers and multiplied by its
    weight and the task weight; plus loss_heatmap (Gaussian focal loss) when
    the outputs have heatmap_logits, which needs the BEV ``grid``."""

    def __init__(self, cfg: DynamicLossConfig, grid: BEVGrid | None = None):
        super().__init__()
        self.cfg, self.grid = cfg, grid
        self.matcher = HungarianMatcher(cfg)
        self.register_buffer("code_weights", torch.tensor(cfg.code_weights), persistent=False)
        self.register_buffer("velocity_occlusion_weights", torch.tensor(cfg.velocity_occlusion_weights), persistent=False)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, Tensor]:
        num_layers = outputs["cls_logits"].shape[0]
        totals = {"loss_cls": 0.0, "loss_box": 0.0, "loss_angle": 0.0, "loss_occlusion": 0.0}
        for layer in range(num_layers):
            for key, value in self.layer_losses({k: outputs[k][layer] for k in
                                                 ("cls_logits", "regression", "angle_logits", "occlusion_logits")},
                                                targets).items():
                totals[key] = totals[key] + value
        weights = {"loss_cls": self.cfg.cls_weight, "loss_box": self.cfg.box_weight,
                   "loss_angle": self.cfg.angle_weight, "loss_occlusion": self.cfg.occlusion_weight}
        losses = {k: v * weights[k] * self.cfg.task_weight / num_layers for k, v in totals.items()}
        if "heatmap_logits" in outputs:
            if self.grid is None:
                raise ValueError("heatmap_logits in the outputs but DynamicLoss was built without a grid")
            logits = outputs["heatmap_logits"]
            heat = heatmap_targets(self.grid, [{k: v.to(logits.device) for k, v in t.items() if k in ("boxes", "labels")}
                                               for t in targets])
            losses["loss_heatmap"] = gaussian_focal_loss(logits, heat) * self.cfg.heatmap_weight * self.cfg.task_weight
        return losses

    def layer_losses(self, out: dict, targets: list[dict]) -> dict[str, Tensor]:
        cfg = self.cfg
        cls_logits = out["cls_logits"]                                               # [B, Q, 8]
        cls_target = torch.zeros_like(cls_logits)
        cls_weight = torch.ones(cls_logits.shape[:2], device=cls_logits.device)
        box_terms, angle_terms, occlusion_terms = [], [], []
        num_gt = 0
        for b, target in enumerate(targets):
            labels, boxes = target["labels"].to(cls_logits.device), target["boxes"].to(cls_logits.device)
            num_gt += labels.numel()
            pred_idx, gt_idx = self.matcher(cls_logits[b], out["regression"][b, :, :3], labels, boxes[:, :3])
            if pred_idx.numel() == 0:
                continue
            labels, boxes, occlusion = labels[gt_idx], boxes[gt_idx], target["occlusion"].to(cls_logits.device)[gt_idx]
            weight = distance_weights(labels, boxes, cfg)
            cls_target[b, pred_idx, labels] = 1.0
            cls_weight[b, pred_idx] = weight
            code = self.code_weights.expand(len(gt_idx), -1).clone()
            code[:, 8:] = code[:, 8:] * self.velocity_occlusion_weights[occlusion][:, None]
            encoded = encode_boxes(boxes)
            # Unknown velocity (NaN, as the devkit leaves it) is no velocity target, not 0 m/s:
            # its term's weight is 0, and the NaN is replaced so neither value nor gradient sees it.
            known = torch.isfinite(encoded)
            code = code * known
            error = (out["regression"][b, pred_idx] - torch.where(known, encoded, torch.zeros_like(encoded))).abs() * code
            box_terms.append((error.sum(dim=1) * weight).sum())
            bins = angle_bin_targets(boxes[:, 6])
            angle_terms.append((-(bins * F.log_softmax(out["angle_logits"][b, pred_idx], dim=-1)).sum(-1) * weight).sum())
            occlusion_terms.append(softmax_focal_loss(out["occlusion_logits"][b, pred_idx], occlusion, cfg.focal_gamma).sum())
        normaliser = max(num_gt, 1)
        focal = sigmoid_focal_loss(cls_logits, cls_target, cfg.focal_alpha, cfg.focal_gamma)
        zero = cls_logits.sum() * 0.0
        return {"loss_cls": (focal * cls_weight[..., None]).sum() / normaliser,
                "loss_box": (sum(box_terms) if box_terms else zero) / normaliser,
                "loss_angle": (sum(angle_terms) if angle_terms else zero) / normaliser,
                "loss_occlusion": (sum(occlusion_terms) if occlusion_terms else zero) / normaliser}
