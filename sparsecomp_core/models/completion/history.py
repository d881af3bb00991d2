"""Explicit temporal state of level-1 completion: a queue of past frames."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

from ...geometry import Calibration
from ..scene import MAX_TIME_GAP_S, frames_after_scene_check


@dataclass(frozen=True)
class HistoryFrame:
    """One past frame as observed (never completed content).

    features: [B, V, C, h, w] 1/32 features, detached; cam_mask: [B, V] bool
    (True = failed then); ego2global: [B, 4, 4] float64; timestamp_us: [B]
    int64; calibration of that frame; valid: [B] bool, False once a scene
    change made the frame unusable for that sample.
    """
    features: Tensor
    cam_mask: Tensor
    ego2global: Tensor
    timestamp_us: Tensor
    calibration: Calibration
    valid: Tensor


@dataclass(frozen=True)
class FeatureHistory:
    """Newest-first queue of HistoryFrames plus the sequence ids of the newest."""
    frames: tuple[HistoryFrame, ...] = ()
    sequence_ids: tuple | None = None
    max_gap_s: float = MAX_TIME_GAP_S

    def __len__(self) -> int:
        return len(self.frames)

    def valid_frames(self) -> Tensor | None:
        """[B, T] bool: which frames each sample may use (None when empty)."""
        if not self.frames:
            return None
        return torch.stack([f.valid for f in self.frames], dim=1)

    def has_evidence(self) -> bool:
        valid = self.valid_frames()
        return valid is not None and bool(valid.any())

    def checked_for_scene_change(self, timestamp_us: Tensor, sequence_ids: Sequence | None) -> "FeatureHistory":
        """This history with frames invalidated for samples whose scene changed;
        empty when no sample keeps any frame."""
        frames = frames_after_scene_check(self.frames, self.sequence_ids, timestamp_us, sequence_ids, self.max_gap_s)
        if frames is self.frames:
            return self
        return replace(self, frames=frames, sequence_ids=self.sequence_ids if frames else None)

    def pushed(self, frame: HistoryFrame, sequence_ids: Sequence | None, queue_length: int) -> "FeatureHistory":
        """A new history with ``frame`` as the newest, at most ``queue_length`` frames."""
        frames = (frame,) + self.frames[:max(queue_length - 1, 0)]
        return replace(self, frames=frames, sequence_ids=None if sequence_ids is None else tuple(sequence_ids))
