"""Whole-sensor fault simulation for training: a stream's LiDAR, all its cameras, or a
few crashed cameras removed.

Camera dropout (camera_dropout.py) teaches the model to live without one or
two cameras. A camera + LiDAR model trained only with its LiDAR leans on it so
hard that it collapses without it (the first default: held-out mAP 0.350 ->
0.026), and one trained with LiDAR dropout but never without its cameras
collapses when they all fail although its LiDAR still works (the first
issue-14 model: mAP 0.340 -> 0.027 with every camera lost,
``bench/fault_count_sweep.py``). As MetaBEV, UniBEV and MoME do, a stream
loses one whole modality with a probability during training, so each path
must detect on its own. The removal is decided once per stream: a sensor that
fails stays failed while the stream goes on, as on a vehicle (and as the
robustness protocol's ``no_lidar`` variant runs it); in stage 1 every frame is
its own stream, so there it is decided per frame. At most one modality is
removed per stream: one without either teaches nothing.

``CameraCrash`` is the same for single cameras: with a probability a stream
runs with 1-2 cameras failed from its first frame to its last, as nuScenes-C's
Camera Crash and a dead camera are. Per-frame camera dropout (RandCamMask)
almost always leaves a failed camera's own previous frame in the history, so
temporal completion learns to copy it, a skill that does nothing for a camera
that stays dead (docs/completion.md, "Where a crash costs, and crashed cameras in
training").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .camera_dropout import apply_cam_mask
from .models.scene import scene_changed

KEPT, LIDAR_DROPPED, CAMERAS_DROPPED = 0, 1, 2


class StreamStarts:
    """Which batch slots start a new stream at each call: the first call, a new batch
    size, a new sequence id, time not moving forward or a gap over 2 s
    (``models.scene.scene_changed``, the rule the temporal state follows).

    ``__call__(sequence_ids: B ids, timestamp_us [B] int64)`` -> B bools."""

    def __init__(self):
        self.sequence_ids: list[str] = []
        self.timestamp_us: list[int] = []

    def __call__(self, sequence_ids: Sequence, timestamp_us: Tensor) -> list[bool]:
        if len(sequence_ids) != len(timestamp_us):
            raise ValueError(f"{len(sequence_ids)} sequence ids, {len(timestamp_us)} stamps")
        sequence_ids = [str(s) for s in sequence_ids]
        if len(self.sequence_ids) != len(sequence_ids):
            starts = [True] * len(sequence_ids)
        else:
            starts = scene_changed(torch.tensor(self.timestamp_us), self.sequence_ids, timestamp_us.cpu(),
                                   sequence_ids).tolist()
        self.sequence_ids, self.timestamp_us = sequence_ids, [int(t) for t in timestamp_us]
        return starts

    def state_dict(self) -> dict:
        return {"sequence_ids": list(self.sequence_ids), "timestamp_us": list(self.timestamp_us)}

    def load_state_dict(self, state: dict) -> None:
        self.sequence_ids, self.timestamp_us = list(state["sequence_ids"]), list(state["timestamp_us"])


class SensorDropout:
    """Per stream: the LiDAR removed with probability ``lidar``, else every
    camera failed with probability ``cameras`` (so ``lidar + cameras <= 1``).

    ``__call__(clouds: B clouds [N_i, C], sequence_ids: B ids, timestamp_us
    [B] int64)`` -> (lidar_dropped [B] bool, cameras_dropped [B] bool) for
    this frame's batch slots. A slot draws again when its stream starts anew: a
    new sequence id, time not moving forward or a gap over 2 s
    (``models.scene.scene_changed``, the rule the temporal state follows).
    ``drop_lidar`` and ``drop_cameras`` apply a decision to the inputs.
    """

    def __init__(self, lidar: float = 0.0, cameras: float = 0.0, generator: torch.Generator | None = None):
        for name, probability in (("LiDAR", lidar), ("camera", cameras)):
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"{name} dropout probability must be in [0, 1], got {probability}")
        if lidar + cameras > 1.0:
            raise ValueError(f"LiDAR dropout {lidar} + camera-stream dropout {cameras} exceeds 1: "
                             "a stream loses at most one modality")
        self.lidar, self.cameras, self.generator = lidar, cameras, generator
        self.starts = StreamStarts()
        self.decisions: list[int] = []

    def __call__(self, sequence_ids: Sequence, timestamp_us: Tensor) -> tuple[Tensor, Tensor]:
        starts = self.starts(sequence_ids, timestamp_us)
        if len(self.decisions) != len(starts):
            self.decisions = [KEPT] * len(starts)
        for slot, new_stream in enumerate(starts):
            if new_stream:
                u = float(torch.rand((), generator=self.generator))
                self.decisions[slot] = (LIDAR_DROPPED if u < self.lidar else
                                        CAMERAS_DROPPED if u < self.lidar + self.cameras else KEPT)
        decisions = torch.tensor(self.decisions)
        return decisions == LIDAR_DROPPED, decisions == CAMERAS_DROPPED

    def state_dict(self) -> dict:
        return {**self.starts.state_dict(), "decisions": list(self.decisions)}

    def load_state_dict(self, state: dict) -> None:
        self.starts.load_state_dict(state)
        self.decisions = [int(d) for d in state["decisions"]]


class CameraCrash:
    """Per stream, with probability ``probability``: ``n`` cameras (``n`` uniform in
    [n_min, n_max], chosen at random) failed for the whole stream.

    ``__call__(sequence_ids: B ids, timestamp_us [B] int64)`` -> crashed [B, V] bool for
    this frame's batch slots, drawn again when a slot's stream starts anew
    (``StreamStarts``); apply with ``drop_cameras``.
    """

    def __init__(self, probability: float, num_cameras: int, n_min: int = 1, n_max: int = 2,
                 generator: torch.Generator | None = None):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"camera crash probability must be in [0, 1], got {probability}")
        if not 1 <= n_min <= n_max <= num_cameras:
            raise ValueError(f"need 1 <= n_min <= n_max <= {num_cameras} cameras, got {n_min}, {n_max}")
        self.probability, self.num_cameras, self.n_min, self.n_max = probability, num_cameras, n_min, n_max
        self.generator = generator
        self.starts = StreamStarts()
        self.crashed: list[list[bool]] = []

    def __call__(self, sequence_ids: Sequence, timestamp_us: Tensor) -> Tensor:
        starts = self.starts(sequence_ids, timestamp_us)
        if len(self.crashed) != len(starts):
            self.crashed = [[False] * self.num_cameras for _ in starts]
        for slot, new_stream in enumerate(starts):
            if new_stream:
                crashed = torch.zeros(self.num_cameras, dtype=torch.bool)
                if float(torch.rand((), generator=self.generator)) < self.probability:
                    count = int(torch.randint(self.n_min, self.n_max + 1, (), generator=self.generator))
                    crashed[torch.randperm(self.num_cameras, generator=self.generator)[:count]] = True
                self.crashed[slot] = crashed.tolist()
        return torch.tensor(self.crashed, dtype=torch.bool).reshape(len(starts), self.num_cameras)

    def state_dict(self) -> dict:
        return {**self.starts.state_dict(), "crashed": [list(c) for c in self.crashed]}

    def load_state_dict(self, state: dict) -> None:
        self.starts.load_state_dict(state)
        self.crashed = [[bool(c) for c in row] for row in state["crashed"]]


def drop_lidar(clouds: list[Tensor], dropped: Tensor) -> list[Tensor]:
    """The B clouds [N_i, C] with the dropped slots' clouds empty [0, C] (same dtype and device)."""
    return [cloud[:0] if drop else cloud for cloud, drop in zip(clouds, dropped.tolist())]


def drop_cameras(images: Tensor, cam_mask: Tensor, dropped: Tensor) -> tuple[Tensor, Tensor]:
    """images [B, V, 3, H, W] and cam_mask [B, V] with every camera of the dropped slots [B] failed,
    or the dropped cameras [B, V] (pixels zero, as camera dropout fails one). The teacher's full
    images are the caller's to keep."""
    dropped = dropped.to(cam_mask.device)
    cam_mask = cam_mask | (dropped[:, None] if dropped.dim() == 1 else dropped)
    return apply_cam_mask(images, cam_mask), cam_mask
