"""Post-processing: score threshold, top-N, optional class-wise BEV circle NMS."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PostProcessConfig:
    score_threshold: float = 0.3
    max_objects: int = 100
    nms: bool = False
    # circle-NMS radius (m) per class: car, truck, bus, person, non_motor, riderless, barrier, pillar
    nms_radius: tuple[float, ...] = (2.0, 3.0, 4.0, 0.5, 0.8, 0.8, 0.8, 0.4)

    def __post_init__(self) -> None:
        if len(self.nms_radius) != 8:
            raise ValueError("nms_radius needs one radius per class (8)")


def circle_nms(centres: Tensor, labels: Tensor, radius: Tensor) -> Tensor:
    """Keep mask [N] for detections sorted by descending score: a detection is
    dropped when a kept one of the same class lies within its class radius."""
    distance = torch.cdist(centres[:, :2], centres[:, :2])
    conflict = (distance < radius[labels][:, None]) & (labels[:, None] == labels[None, :])
    keep = torch.ones(centres.shape[0], dtype=torch.bool, device=centres.device)
    for i in range(centres.shape[0]):           # at most max_objects iterations
        if keep[i]:
            later = conflict[i].clone()
            later[: i + 1] = False
            keep &= ~later
    return keep


def postprocess(outputs: dict, cfg: PostProcessConfig) -> list[dict[str, Tensor]]:
    """Last decoder layer -> per sample: boxes [K, 10] (ego frame), scores [K],
    labels [K], ids [K], class_probabilities [K, 8], occlusion [K],
    occlusion_probabilities [K, 4]; sorted by score."""
    class_prob = torch.sigmoid(outputs["cls_logits"][-1])
    occlusion_prob = torch.softmax(outputs["occlusion_logits"][-1], dim=-1)
    boxes, ids = outputs["boxes"][-1], outputs["ids"]
    radius = torch.tensor(cfg.nms_radius, device=boxes.device)
    results = []
    for b in range(boxes.shape[0]):
        scores, labels = class_prob[b].max(dim=-1)
        order = scores.argsort(descending=True)
        order = order[scores[order] >= cfg.score_threshold]
        if cfg.nms and order.numel():
            order = order[circle_nms(boxes[b, order, :3], labels[order], radius)]
        order = order[: cfg.max_objects]
        results.append({"boxes": boxes[b, order], "scores": scores[order], "labels": labels[order],
                        "ids": ids[b, order], "class_probabilities": class_prob[b, order],
                        "occlusion": occlusion_prob[b, order].argmax(dim=-1),
                        "occlusion_probabilities": occlusion_prob[b, order]})
    return results
