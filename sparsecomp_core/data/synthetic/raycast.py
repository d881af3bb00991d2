"""Ray casting against oriented boxes and the ground plane (vectorised torch).

Used to render camera images with a z-buffer, to cast LiDAR beams, and to
measure each object's visibility (visible rays / rays that would hit it
without occluders)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

NO_HIT = -1      # object index of a ray that hit no box
GROUND = -2      # ... that hit the ground


def ray_box_hits(origins: Tensor, directions: Tensor, boxes: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Distances of rays to boxes.

    Args: origins [R, 3], directions [R, 3] (unit), boxes [M, 7] (x, y, z, l, w, h, yaw).
    Returns: t [R, M] (inf where missed; rays starting inside a box miss it) and
    the hit face axis [R, M] (0: x faces, 1: y, 2: z) in the box frame.
    """
    rays, count = origins.shape[0], boxes.shape[0]
    t_all = torch.full((rays, count), math.inf)
    axis_all = torch.zeros((rays, count), dtype=torch.long)
    if count == 0:
        return t_all, axis_all
    cos, sin = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    half = boxes[:, 3:6] / 2
    for start in range(0, rays, chunk):
        o, d = origins[start:start + chunk, None], directions[start:start + chunk, None]      # [r, 1, 3]
        rel = o - boxes[None, :, :3]
        # into the box frame (rotate by -yaw)
        lo = torch.stack([rel[..., 0] * cos + rel[..., 1] * sin, -rel[..., 0] * sin + rel[..., 1] * cos, rel[..., 2]], -1)
        ld = torch.stack([d[..., 0] * cos + d[..., 1] * sin, -d[..., 0] * sin + d[..., 1] * cos,
                          d[..., 2].expand_as(d[..., 0] * cos)], -1)
        safe = torch.where(ld.abs() < 1e-9, torch.full_like(ld, 1e-9), ld)
        t1, t2 = (-half - lo) / safe, (half - lo) / safe
        near, far = torch.minimum(t1, t2), torch.maximum(t1, t2)
        t_near, axis = near.max(dim=-1)
        t_far = far.min(dim=-1).values
        hit = (t_far >= t_near) & (t_near > 1e-3)
        t_all[start:start + chunk] = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
        axis_all[start:start + chunk] = axis
    return t_all, axis_all


def cast(origins: Tensor, directions: Tensor, boxes: Tensor, max_range: float) -> dict[str, Tensor]:
    """Nearest hit per ray among boxes and the ground (z = 0).

    Returns dict(t [R] (inf: nothing within max_range), object [R] (box index,
    GROUND or NO_HIT), axis [R] (face axis of the box hit), box_t [R, M] (all
    box distances, for visibility)).
    """
    box_t, axis = ray_box_hits(origins, directions, boxes)
    ground_t = torch.where(directions[:, 2] < -1e-6, -origins[:, 2] / directions[:, 2].clamp(max=-1e-6),
                           torch.full_like(directions[:, 2], math.inf))
    if boxes.shape[0]:
        nearest_box_t, nearest_box = box_t.min(dim=1)
    else:
        nearest_box_t, nearest_box = torch.full_like(ground_t, math.inf), torch.zeros_like(ground_t, dtype=torch.long)
    box_first = nearest_box_t < ground_t
    t = torch.where(box_first, nearest_box_t, ground_t)
    obj = torch.where(box_first, nearest_box, torch.full_like(nearest_box, GROUND))
    obj = torch.where(t <= max_range, obj, torch.full_like(obj, NO_HIT))
    t = torch.where(t <= max_range, t, torch.full_like(t, math.inf))
    face = axis.gather(1, nearest_box[:, None])[:, 0] if boxes.shape[0] else torch.zeros_like(obj)
    return {"t": t, "object": obj, "axis": face, "box_t": box_t}


def visibility_counts(hits: dict[str, Tensor], num_boxes: int, max_range: float) -> tuple[Tensor, Tensor]:
    """(visible rays [M], rays that would hit each box with nothing in front [M])."""
    reachable = (hits["box_t"] <= max_range).sum(dim=0)
    visible = torch.bincount(hits["object"][hits["object"] >= 0], minlength=num_boxes)
    return visible, reachable
