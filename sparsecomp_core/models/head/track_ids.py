"""Object ids: outputs inherit the id of the kept query they continue.

A propagated query usually keeps predicting its object, but nothing forces a
decoder slot to: ids therefore follow geometry, not slots. Each confident
output is associated (scipy Hungarian, same class, centre distance within a
gate) with the motion-compensated kept queries of the newest past frame,
then of older frames for what is left; matched outputs inherit the id,
the others get fresh ids from the queue's counter.

Only kept queries that were confident themselves (score >= min_score when
kept) can hand an id on. The queue keeps the top-k queries, most of them far
below min_score, and each of those holds a throwaway id; when one sat nearer
to where an object is now than the object's own kept query (a duplicate, or
a velocity error), the object took the throwaway id and lost its own: most
of the shipped model's car id switches at the node's threshold were that.
Skipping them, an object missing one frame continues from an older frame.
"""
from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .query_queue import CompensatedQueries, QueryQueue


def inheritable_past(queue: QueryQueue, history: CompensatedQueries | None,
                     min_score: float) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Newest first, per kept frame of ``queue``: (centres [B, k, 3] compensated to now,
    labels [B, k], ids [B, k], usable [B, k] bool) for ``associate_ids``; usable: the frame
    is valid and the query scored at least ``min_score`` when kept (only those carry a
    real id). ``history``: the queue compensated to now (None when empty)."""
    if history is None:
        return []
    return [(centres, labels, ids, valid & (kept.scores >= min_score))
            for (centres, labels, ids, valid), kept in zip(history.per_frame(), queue.frames)]


def associate_ids(centres: Tensor, labels: Tensor, scores: Tensor, past: list[tuple[Tensor, Tensor, Tensor, Tensor]],
                  next_id: int, gate_m: float = 2.0, min_score: float = 0.1) -> tuple[Tensor, int]:
    """Ids [B, Q] for outputs with centres [B, Q, 3], labels [B, Q], scores [B, Q].

    past: newest first, per frame (centres [B, k, 3] compensated to now,
    labels [B, k], ids [B, k], usable [B, k] bool), as ``inheritable_past``
    gives it. Outputs scoring below min_score neither inherit an id nor, once
    kept, hand theirs on. Returns the ids and the next free id.
    """
    batch, queries = labels.shape
    ids = torch.arange(batch * queries, device=labels.device).reshape(batch, queries) + next_id
    next_id += batch * queries
    centres_cpu, labels_cpu, scores_cpu = centres.detach().cpu(), labels.cpu(), scores.detach().cpu()
    past_cpu = [tuple(t.detach().cpu() for t in frame) for frame in past]
    for b in range(batch):
        open_outputs = torch.nonzero(scores_cpu[b] >= min_score).flatten()
        used_ids: set[int] = set()
        for past_centres, past_labels, past_ids, usable in past_cpu:
            candidates = torch.nonzero(usable[b]).flatten()
            candidates = candidates[[int(past_ids[b, c]) not in used_ids for c in candidates]] if len(candidates) else candidates
            if not len(open_outputs) or not len(candidates):
                continue
            distance = torch.cdist(centres_cpu[b, open_outputs, :2], past_centres[b, candidates, :2])
            allowed = (distance < gate_m) & (labels_cpu[b, open_outputs, None] == past_labels[b, None, candidates])
            cost = torch.where(allowed, distance, torch.full_like(distance, 1e6))
            rows, cols = linear_sum_assignment(cost.numpy())
            matched = [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]
            for r, c in matched:
                inherited = int(past_ids[b, candidates[c]])
                ids[b, open_outputs[r]] = inherited
                used_ids.add(inherited)
            taken = torch.tensor([r for r, _ in matched], dtype=torch.long)
            keep = torch.ones(len(open_outputs), dtype=torch.bool)
            keep[taken] = False
            open_outputs = open_outputs[keep]
    return ids, next_id
