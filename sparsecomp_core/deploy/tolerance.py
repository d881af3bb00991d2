"""How closely the fixed-shape and exported paths must follow the eager model.

Float32 rounding differs between the paths (other kernels; completion batched
over every camera; closed-form inverses), about 2e-5 on positions and logits
(docs/deployment.md). Two box columns amplify it by construction, so they get
their own limit:
- yaw is atan2 of the regressed (sin, cos), which is not unit length: an error
  e in each becomes about e / |(sin, cos)| in the angle;
- with ``head.velocity_from_history`` the velocity weighs displacements of past
  detections over their time difference (0.1 s at 10 Hz): 1e-4 m becomes 1e-3 m/s.
Both also end in a discrete choice, which rounding can flip where it is a near-tie:
- the yaw keeps the regressed angle only inside the most likely of 8 angle bins,
  else takes that bin's centre (``refine_yaw``): two bin logits equal to rounding
  may pick either bin, pi/4 apart. Measured with the stage-4 default: one person
  query of score 0.15, 7 pi/8 against 5 pi/8 in the fixed-shape path;
- each past frame's velocity hypothesis comes from the past detection nearest to
  the query, within a gate. Measured with the stage-3 default: one query of score
  0.14, stacked with others on the grid's edge, 0.017 m/s apart in ONNX.
So yaw and velocity are compared for queries scoring at least
``DISCRETE_COMPARED_MIN_SCORE`` (the node's operating threshold: the boxes that are
published); every other column on every query.
Queries are compared one to one after matching (``align_queries``): two kept
queries whose scores differ by less than the rounding can take each other's
slot in the next frame (the top-k order), which permutes the outputs without
changing them. Detections and ids are compared as they are.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..evaluation.tracking_metrics import OPERATING_SCORE_THRESHOLD

OUTPUTS = ("boxes", "cls_logits", "occlusion_logits")

# Columns of a box [x, y, z, w, l, h, yaw, vx, vy, vz] (models/head/boxes.py).
BOX_COLUMNS = {"box_position_size": slice(0, 6), "box_yaw": slice(6, 7), "box_velocity": slice(7, 10)}
# Largest allowed |difference|: metres, radians, m/s; logits unitless.
TOLERANCE = {"box_position_size": 1e-4, "box_yaw": 1e-3, "box_velocity": 1e-3,
             "cls_logits": 1e-4, "occlusion_logits": 1e-4}
# Columns that end in a discrete choice (module docstring), compared only on confident queries.
DISCRETE_COLUMNS = ("box_yaw", "box_velocity")
DISCRETE_COMPARED_MIN_SCORE = OPERATING_SCORE_THRESHOLD    # the node's output.score_threshold


def confident_queries(cls_logits: Tensor) -> Tensor:
    """cls_logits [..., Q, 8] (the reference path's) -> [..., Q] bool: the queries whose
    DISCRETE_COLUMNS are compared (top class score >= DISCRETE_COMPARED_MIN_SCORE)."""
    return torch.sigmoid(cls_logits.detach().float()).amax(-1) >= DISCRETE_COMPARED_MIN_SCORE


def align_queries(outputs: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """``outputs``' queries reordered to match ``expected``'s one to one (Hungarian matching on the
    largest difference of every output). Both hold ``boxes`` [B, Q, 10], ``cls_logits`` [B, Q, 8]
    and ``occlusion_logits`` [B, Q, 4]; returns the same keys, [B, Q, ...] in ``expected``'s order."""
    flat_out = torch.cat([outputs[name].detach().float() for name in OUTPUTS], -1)
    flat_expected = torch.cat([expected[name].detach().float() for name in OUTPUTS], -1)
    order = []
    for sample_out, sample_expected in zip(flat_out, flat_expected):
        cost = (sample_expected[:, None] - sample_out[None]).abs().amax(-1)            # [Q expected, Q out]
        rows, cols = linear_sum_assignment(cost.numpy())
        order.append(torch.as_tensor(cols[rows.argsort()]))
    index = torch.stack(order).to(outputs["boxes"].device)                              # [B, Q]
    return {name: outputs[name].gather(1, index[..., None].expand(-1, -1, outputs[name].shape[-1]))
            for name in OUTPUTS}


def largest_differences(outputs: dict[str, Tensor], expected: dict[str, Tensor]) -> dict[str, float]:
    """Largest |outputs - expected| per TOLERANCE key, over every query, after ``align_queries``.
    Both hold ``boxes`` [B, Q, 10], ``cls_logits`` [B, Q, 8] and ``occlusion_logits`` [B, Q, 4]."""
    outputs = align_queries(outputs, expected)
    worst = box_differences(outputs["boxes"], expected["boxes"], confident_queries(expected["cls_logits"]))
    for name in ("cls_logits", "occlusion_logits"):
        worst[name] = (outputs[name] - expected[name]).abs().max().item()
    return worst


def box_differences(actual: Tensor, expected: Tensor, confident: Tensor | None = None) -> dict[str, float]:
    """Largest |actual - expected| of boxes [..., 10] per BOX_COLUMNS group (0 without boxes);
    ``confident`` [...] bool (``confident_queries``): the boxes whose DISCRETE_COLUMNS count
    (None: every box)."""
    worst = {}
    for name, columns in BOX_COLUMNS.items():
        difference = (actual[..., columns] - expected[..., columns]).abs()
        if name in DISCRETE_COLUMNS and confident is not None:
            difference = difference[confident]
        worst[name] = difference.max().item() if difference.numel() else 0.0
    return worst


def within_tolerance(worst: dict[str, float]) -> bool:
    return all(worst[name] <= TOLERANCE[name] for name in TOLERANCE)


def assert_boxes_close(actual: Tensor, expected: Tensor, confident: Tensor | None = None) -> None:
    """Boxes [..., 10] within TOLERANCE column group by column group (AssertionError names the
    group); ``confident`` as in ``box_differences``."""
    for name, difference in box_differences(actual, expected, confident).items():
        assert difference <= TOLERANCE[name], f"{name}: largest difference {difference:.3g} > {TOLERANCE[name]:g}"
