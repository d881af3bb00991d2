"""The dynamic head at fixed shapes: the query queue as static buffers.

All F kept frames of k queries always take part; an invalid frame's queries
are masked keys in self-attention, continue no current query and match no
velocity hypothesis, exactly as an absent frame in the eager queue. Object ids
stay outside: the graph returns what ``associate_ids`` needs (the kept
queries' centres compensated to now and which may hand an id on) and which
queries it kept; the runner associates (scipy Hungarian, as eager) and keeps
the kept queries' ids next to the buffers.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.head.dynamic_head import DynamicHead
from ..models.head.query_queue import CompensatedQueries, zero_static_velocities
from .affine import affine_inverse
from .static_state import pushed, scene_changed_in_graph


def compensated_buffers(state: dict[str, Tensor], valid: Tensor, ego2global: Tensor,
                        timestamp_us: Tensor) -> CompensatedQueries:
    """The queue buffers motion compensated into the current ego frame (as
    ``query_queue.compensated_history``: point + velocity x dt, then
    inv(ego2global_cur) @ ego2global_past, in float64), frames concatenated newest first."""
    batch, frames, kept = state["queue_labels"].shape
    dt = (timestamp_us[:, None] - state["queue_timestamp_us"]).double() / 1e6                # [B, F]
    predicted = state["queue_reference_points"].double() + state["queue_velocities"].double() * dt[..., None, None]
    past2cur = affine_inverse(ego2global.double())[:, None] @ state["queue_ego2global"].double()   # [B, F, 4, 4]
    rotation, translation = past2cur[..., :3, :3], past2cur[..., :3, 3]
    points = predicted @ rotation.transpose(-1, -2) + translation[:, :, None]
    velocities = state["queue_velocities"].double() @ rotation.transpose(-1, -2)
    total = frames * kept

    def flat(x: Tensor) -> Tensor:
        return x.reshape(batch, total, *x.shape[3:])
    return CompensatedQueries(
        embeddings=flat(state["queue_embeddings"]), reference_points=flat(points.float()),
        velocities=flat(velocities.float()), labels=flat(state["queue_labels"]),
        ids=torch.zeros(batch, total, dtype=torch.int64, device=valid.device),      # ids live in the runner
        valid=flat(valid[:, :, None].expand(batch, frames, kept)), frame_sizes=(kept,) * frames,
        dt_s=flat(dt.float()[:, :, None].expand(batch, frames, kept)), scores=flat(state["queue_scores"]))


class FixedShapeHead(nn.Module):
    """forward(tokens [B, H*W, C_neck], ego2global [B, 4, 4] float64, timestamp_us [B]
    int64, sequence_changed [B] bool, state: dict of queue_* buffers) -> dict(
    cls_logits [B, Q, 8], boxes [B, Q, 10], occlusion_logits [B, Q, 4] (last decoder
    layer), kept_index [B, k] (queries pushed into the queue, best first),
    past_centres [B, F, k, 3] (kept centres compensated to now), past_usable [B, F, k]
    bool (may hand an id on: valid frame, score >= id_min_score), state: new queue_*
    buffers). Shares the eager head's modules."""

    def __init__(self, head: DynamicHead):
        super().__init__()
        self.head = head

    def forward(self, tokens: Tensor, ego2global: Tensor, timestamp_us: Tensor, sequence_changed: Tensor,
                state: dict[str, Tensor]) -> dict:
        head = self.head
        history, valid = None, None
        if head.history_frames > 0:
            changed = scene_changed_in_graph(state["queue_timestamp_us"][:, 0], timestamp_us, sequence_changed,
                                             head.max_time_gap_s)
            valid = state["queue_valid"] & ~changed[:, None]                                # [B, F]
            history = compensated_buffers(state, valid, ego2global, timestamp_us)
        decoded = head.decode(tokens, history)
        cls_logits, boxes = decoded["cls_logits"][-1], decoded["boxes"][-1]
        result = {"cls_logits": cls_logits, "boxes": boxes, "occlusion_logits": decoded["occlusion_logits"][-1],
                  "state": {}}
        if history is None:
            return result
        batch, frames, kept = state["queue_labels"].shape
        result["past_centres"] = history.reference_points.reshape(batch, frames, kept, 3)
        result["past_usable"] = (history.valid & (history.scores >= head.id_min_score)).reshape(batch, frames, kept)

        scores, labels = torch.sigmoid(cls_logits).max(dim=-1)
        index = scores.argsort(dim=1, descending=True)[:, :head.topk]        # select_queries without sampling

        def pick(x: Tensor) -> Tensor:
            return x.gather(1, index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
        kept_labels = pick(labels)
        newest = {"queue_embeddings": pick(decoded["embeddings"]), "queue_reference_points": pick(boxes[..., :3]),
                  "queue_velocities": zero_static_velocities(pick(boxes[..., 7:10]), kept_labels),
                  "queue_labels": kept_labels, "queue_scores": pick(scores),
                  "queue_ego2global": ego2global.to(torch.float64), "queue_timestamp_us": timestamp_us}
        result["state"] = {name: pushed(state[name], value) for name, value in newest.items()}
        result["state"]["queue_valid"] = pushed(valid, torch.ones_like(valid[:, 0]))
        result["kept_index"] = index
        return result
