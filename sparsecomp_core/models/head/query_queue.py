"""The temporal query manager's explicit state: kept queries of past frames.

Each frame keeps its ``topk`` most confident queries (in training, with
probability ``random_sampling_probability``, a few top ones plus random
others) with embedding, reference point, velocity, label, score and object
id, plus the frame's timestamp and ego pose. Before use they are motion
compensated into the current ego frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from ..scene import MAX_TIME_GAP_S, frames_after_scene_check
from .boxes import STATIC_CLASSES


@dataclass(frozen=True)
class KeptQueries:
    """Queries kept from one frame. embeddings [B, k, C]; reference_points
    [B, k, 3] box centres in metres in that frame's ego frame; velocities
    [B, k, 3] m/s in that frame's ego axes; labels [B, k]; scores [B, k];
    ids [B, k] int64; timestamp_us [B] int64; ego2global [B, 4, 4] float64;
    valid [B] bool (False after a scene change for that sample)."""
    embeddings: Tensor
    reference_points: Tensor
    velocities: Tensor
    labels: Tensor
    scores: Tensor
    ids: Tensor
    timestamp_us: Tensor
    ego2global: Tensor
    valid: Tensor


@dataclass(frozen=True)
class CompensatedQueries:
    """History queries in the current ego frame, all kept frames concatenated
    (newest first): embeddings [B, N, C], reference_points [B, N, 3] metres
    (centre + velocity x dt, moved into the current ego frame), velocities
    [B, N, 3], labels [B, N], ids [B, N], valid [B, N] bool, dt_s [B, N]
    seconds since the query's frame, scores [B, N] when kept; frame_sizes:
    queries per frame."""
    embeddings: Tensor
    reference_points: Tensor
    velocities: Tensor
    labels: Tensor
    ids: Tensor
    valid: Tensor
    frame_sizes: tuple[int, ...]
    dt_s: Tensor | None = None
    scores: Tensor | None = None

    def per_frame(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Newest first: (reference_points, labels, ids, valid) of each frame."""
        return list(zip(*(x.split(self.frame_sizes, dim=1)
                          for x in (self.reference_points, self.labels, self.ids, self.valid))))


@dataclass(frozen=True)
class QueryQueue:
    """Newest-first kept queries of the last frames and the id counter."""
    frames: tuple[KeptQueries, ...] = ()
    sequence_ids: tuple | None = None
    next_id: int = 1
    max_gap_s: float = MAX_TIME_GAP_S

    def __len__(self) -> int:
        return len(self.frames)

    def checked_for_scene_change(self, timestamp_us: Tensor, sequence_ids: Sequence | None) -> "QueryQueue":
        """This queue with frames invalidated for samples whose scene changed (ids keep counting)."""
        frames = frames_after_scene_check(self.frames, self.sequence_ids, timestamp_us, sequence_ids, self.max_gap_s)
        if frames is self.frames:
            return self
        return replace(self, frames=frames, sequence_ids=self.sequence_ids if frames else None)

    def pushed(self, kept: KeptQueries, sequence_ids: Sequence | None, history_frames: int, next_id: int) -> "QueryQueue":
        return replace(self, frames=((kept,) + self.frames)[:history_frames], next_id=next_id,
                       sequence_ids=None if sequence_ids is None else tuple(sequence_ids))


def compensate(kept: KeptQueries, ego2global: Tensor, timestamp_us: Tensor) -> tuple[Tensor, Tensor]:
    """Reference points and velocities of ``kept`` moved to the current frame:
    point + velocity * dt in the past ego frame, then
    ``inv(ego2global_cur) @ ego2global_past``; velocities rotated alike.

    Returns reference_points [B, k, 3] (metres, current ego frame) and velocities [B, k, 3].
    """
    dt = ((timestamp_us.to(torch.int64) - kept.timestamp_us.to(torch.int64)).double() / 1e6)[:, None, None]
    predicted = kept.reference_points.double() + kept.velocities.double() * dt
    past2cur = torch.linalg.inv(ego2global.double()) @ kept.ego2global.double()          # [B, 4, 4]
    rotation, translation = past2cur[:, :3, :3], past2cur[:, :3, 3]
    points = predicted @ rotation.transpose(1, 2) + translation[:, None]
    velocities = kept.velocities.double() @ rotation.transpose(1, 2)
    return points.to(kept.reference_points.dtype), velocities.to(kept.velocities.dtype)


def compensated_history(queue: QueryQueue, ego2global: Tensor, timestamp_us: Tensor) -> CompensatedQueries | None:
    """All kept queries of the queue, motion compensated and concatenated (None when empty)."""
    if not queue.frames:
        return None
    parts = [compensate(f, ego2global, timestamp_us) for f in queue.frames]
    return CompensatedQueries(
        embeddings=torch.cat([f.embeddings for f in queue.frames], dim=1),
        reference_points=torch.cat([p for p, _ in parts], dim=1),
        velocities=torch.cat([v for _, v in parts], dim=1),
        labels=torch.cat([f.labels for f in queue.frames], dim=1),
        ids=torch.cat([f.ids for f in queue.frames], dim=1),
        valid=torch.cat([f.valid[:, None].expand(-1, f.ids.shape[1]) for f in queue.frames], dim=1),
        frame_sizes=tuple(f.ids.shape[1] for f in queue.frames),
        dt_s=torch.cat([((timestamp_us.to(torch.int64) - f.timestamp_us.to(torch.int64)).float() / 1e6)[:, None]
                        .expand(-1, f.ids.shape[1]) for f in queue.frames], dim=1),
        scores=torch.cat([f.scores for f in queue.frames], dim=1))


def select_queries(scores: Tensor, topk: int, random_sampling: bool, num_top_when_random: int,
                   generator: torch.Generator | None = None) -> Tensor:
    """Indices [B, topk] of the queries to keep from scores [B, Q]: the top-k,
    or (random_sampling) the top ``num_top_when_random`` plus random others."""
    order = scores.argsort(dim=1, descending=True)
    if not random_sampling:
        return order[:, :topk]
    top, rest = order[:, :num_top_when_random], order[:, num_top_when_random:]
    shuffle = torch.rand(rest.shape, generator=generator).to(rest.device).argsort(dim=1)
    return torch.cat([top, rest.gather(1, shuffle[:, :topk - num_top_when_random])], dim=1)


def zero_static_velocities(velocities: Tensor, labels: Tensor) -> Tensor:
    """velocities [B, k, 3] with those of static classes (barrier, pillar) set to 0."""
    static = torch.zeros_like(labels, dtype=torch.bool)
    for cls in STATIC_CLASSES:
        static |= labels == cls
    return velocities.masked_fill(static[..., None], 0.0)
