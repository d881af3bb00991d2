"""LiDAR fault simulation for training: the whole LiDAR input removed.

Camera dropout (camera_dropout.py) teaches the model to live without some
cameras; a camera + LiDAR model trained only with its LiDAR leans on it so
hard that it collapses without it (the first default: held-out mAP 0.350 ->
0.026). As MetaBEV, UniBEV and MoME do, a sample's whole LiDAR input is
removed with a probability during training, so the camera path must detect
on its own too. The removal is decided once per stream: a LiDAR that fails
stays failed while the stream goes on, as on a vehicle (and as the
robustness protocol's ``no_lidar`` variant runs it); in stage 1 every frame
is its own stream, so there it is decided per frame.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .models.scene import scene_changed


class LidarDropout:
    """``__call__(clouds: B clouds [N_i, C], sequence_ids: B ids, timestamp_us
    [B] int64)`` -> (clouds with the dropped samples' clouds empty [0, C] (same
    dtype and device), dropped [B] bool). A batch slot draws again
    (``probability``) when its stream starts anew: a new sequence id, time not
    moving forward or a gap over 2 s (``models.scene.scene_changed``, the rule
    the temporal state follows)."""

    def __init__(self, probability: float, generator: torch.Generator | None = None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"LiDAR dropout probability must be in [0, 1], got {probability}")
        self.probability, self.generator = probability, generator
        self.sequence_ids: list[str] = []
        self.timestamp_us: list[int] = []
        self.dropped: list[bool] = []

    def __call__(self, clouds: list[Tensor], sequence_ids: Sequence, timestamp_us: Tensor) -> tuple[list[Tensor], Tensor]:
        if not len(sequence_ids) == len(timestamp_us) == len(clouds):
            raise ValueError(f"{len(clouds)} clouds, {len(sequence_ids)} sequence ids, {len(timestamp_us)} stamps")
        sequence_ids = [str(s) for s in sequence_ids]
        if len(self.dropped) != len(clouds):               # the first call (or a new batch size): every slot draws
            redraw, self.dropped = [True] * len(clouds), [False] * len(clouds)
        else:
            redraw = scene_changed(torch.tensor(self.timestamp_us), self.sequence_ids, timestamp_us.cpu(),
                                   sequence_ids).tolist()
        for slot, new_stream in enumerate(redraw):
            if new_stream:
                self.dropped[slot] = bool(torch.rand((), generator=self.generator) < self.probability)
        self.sequence_ids, self.timestamp_us = sequence_ids, [int(t) for t in timestamp_us]
        kept = [cloud[:0] if drop else cloud for cloud, drop in zip(clouds, self.dropped)]
        return kept, torch.tensor(self.dropped, dtype=torch.bool)

    def state_dict(self) -> dict:
        return {"sequence_ids": list(self.sequence_ids), "timestamp_us": list(self.timestamp_us),
                "dropped": list(self.dropped)}

    def load_state_dict(self, state: dict) -> None:
        self.sequence_ids, self.timestamp_us = list(state["sequence_ids"]), list(state["timestamp_us"])
        self.dropped = [bool(d) for d in state["dropped"]]
