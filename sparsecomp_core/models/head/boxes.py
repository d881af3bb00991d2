"""Box conventions, classes, occlusion states, and the box coder: regression
encoding / decoding and the yaw angle bins.

A box is [x, y, z, l, w, h, yaw, vx, vy, vz] (10 numbers) in the ego frame:
centre in metres, size in metres (l along the heading), yaw in radians
(counter-clockwise from +x), velocity over ground in m/s. The head regresses
11 numbers per box: centre, log size, sin yaw, cos yaw, velocity.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

CLASS_NAMES = ("car", "truck", "bus", "person", "non_motor", "riderless_non_motor", "barrier", "pillar")
NUM_CLASSES = len(CLASS_NAMES)
VULNERABLE_CLASSES = (3, 4, 5)     # person, non_motor, riderless_non_motor
MOVING_CLASSES = (0, 1, 2)         # car, truck, bus
STATIC_CLASSES = (6, 7)            # barrier, pillar: velocity is 0 by definition
OCCLUSION_NAMES = ("NoOccluded", "SlightlyOccluded", "PartlyOccluded", "HeavilyOccluded")
NUM_OCCLUSION_STATES = len(OCCLUSION_NAMES)
BOX_SIZE = 10

NUM_ANGLE_BINS = 8
ANGLE_BIN_WIDTH = 2 * math.pi / NUM_ANGLE_BINS          # 45 deg
ANGLE_BIN_OVERLAP = ANGLE_BIN_WIDTH / 36                # 1/36 of a bin on each side


def wrap_angle(angle: Tensor) -> Tensor:
    """Angles wrapped to [-pi, pi)."""
    return torch.remainder(angle + math.pi, 2 * math.pi) - math.pi


def angle_bin_targets(yaw: Tensor) -> Tensor:
    """Soft bin targets [N, 8] for yaws [N]: bin b covers [b * 45, (b + 1) * 45) deg
    widened by the overlap on both sides; a yaw in two (overlapping) bins gets
    0.5 in each."""
    position = torch.remainder(yaw, 2 * math.pi)                       # [0, 2 pi)
    starts = torch.arange(NUM_ANGLE_BINS, device=yaw.device, dtype=yaw.dtype) * ANGLE_BIN_WIDTH
    offset = torch.remainder(position[:, None] - starts[None] + ANGLE_BIN_OVERLAP, 2 * math.pi)
    member = (offset < ANGLE_BIN_WIDTH + 2 * ANGLE_BIN_OVERLAP).to(yaw.dtype)
    return member / member.sum(dim=1, keepdim=True)


def refine_yaw(regressed_yaw: Tensor, bin_logits: Tensor) -> Tensor:
    """Final yaw from the regressed yaw and the bin classifier: keep the
    regressed yaw when it lies in the most likely (widened) bin, else its
    opposite (the usual front/back confusion) if that lies there, else the
    bin's centre. Shapes: [...] and [..., 8] -> [...]."""
    best = bin_logits.argmax(dim=-1)
    start = best.to(regressed_yaw.dtype) * ANGLE_BIN_WIDTH - ANGLE_BIN_OVERLAP

    def inside(angle: Tensor) -> Tensor:
        return torch.remainder(angle - start, 2 * math.pi) < ANGLE_BIN_WIDTH + 2 * ANGLE_BIN_OVERLAP

    centre = start + ANGLE_BIN_OVERLAP + ANGLE_BIN_WIDTH / 2
    refined = torch.where(inside(regressed_yaw), regressed_yaw,
                          torch.where(inside(regressed_yaw + math.pi), regressed_yaw + math.pi, centre))
    return wrap_angle(refined)


def encode_boxes(boxes: Tensor) -> Tensor:
    """Boxes [M, 10] -> regression targets [M, 11] (centre, log size, sin, cos, velocity)."""
    return torch.cat([boxes[:, :3], boxes[:, 3:6].clamp(min=1e-3).log(), boxes[:, 6:7].sin(), boxes[:, 6:7].cos(),
                      boxes[:, 7:10]], dim=1)


def decode_boxes(regression: Tensor, angle_logits: Tensor) -> Tensor:
    """[..., 11] regression + [..., 8] bin logits -> boxes [..., 10] in metres."""
    centre, log_size, sin_cos, velocity = regression[..., :3], regression[..., 3:6], regression[..., 6:8], regression[..., 8:]
    yaw = refine_yaw(torch.atan2(sin_cos[..., 0], sin_cos[..., 1]), angle_logits)
    return torch.cat([centre, log_size.clamp(-4.0, 4.0).exp(), yaw[..., None], velocity], dim=-1)
