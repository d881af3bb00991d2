"""Scene-change detection shared by every piece of temporal state."""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch
from torch import Tensor

MAX_TIME_GAP_S = 2.0


def scene_changed(last_timestamp_us: Tensor, last_sequence_ids: Sequence | None,
                  timestamp_us: Tensor, sequence_ids: Sequence | None,
                  max_gap_s: float = MAX_TIME_GAP_S) -> Tensor:
    """Per sample, whether temporal state from ``last_*`` must be dropped.

    True where the time gap exceeds ``max_gap_s``, time did not move forward
    (a repeated or earlier stamp: the state would be compensated with a
    non-positive dt), or the sequence id differs (when both are given).

    Args: timestamps [B] int64 microseconds; sequence ids: length-B sequences.
    Returns: BoolTensor [B].
    """
    gap_us = timestamp_us.to(torch.int64) - last_timestamp_us.to(torch.int64)
    changed = (gap_us <= 0) | (gap_us > int(max_gap_s * 1e6))
    if sequence_ids is not None and last_sequence_ids is not None:
        if len(sequence_ids) != len(last_sequence_ids):
            raise ValueError("sequence_ids changed length: the batch size of a stream must stay fixed")
        differs = torch.tensor([a != b for a, b in zip(last_sequence_ids, sequence_ids)],
                               device=changed.device)
        changed = changed | differs
    return changed


def frames_after_scene_check(frames: tuple, last_sequence_ids: Sequence | None, timestamp_us: Tensor,
                             sequence_ids: Sequence | None, max_gap_s: float = MAX_TIME_GAP_S) -> tuple:
    """A newest-first queue of frame records (dataclasses with ``timestamp_us``
    [B] and ``valid`` [B]) with each sample whose scene changed marked invalid
    in every frame. Returns ``frames`` itself when nothing changed and ()
    when no frame is usable any more (or the batch size changed: a new stream)."""
    if not frames:
        return frames
    newest = frames[0]
    if newest.timestamp_us.shape != timestamp_us.shape:
        return ()
    changed = scene_changed(newest.timestamp_us, last_sequence_ids, timestamp_us.to(newest.timestamp_us.device),
                            None if sequence_ids is None else tuple(sequence_ids), max_gap_s)
    if not bool(changed.any()):
        return frames
    updated = tuple(replace(f, valid=f.valid & ~changed) for f in frames)
    return updated if any(bool(f.valid.any()) for f in updated) else ()
