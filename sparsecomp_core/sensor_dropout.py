"""Whole-sensor fault simulation for training: a stream's LiDAR, or all its cameras, removed.

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
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .camera_dropout import apply_cam_mask
from .models.scene import scene_changed

KEPT, LIDAR_DROPPED, CAMERAS_DROPPED = 0, 1, 2


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
        self.sequence_ids: list[str] = []
        self.timestamp_us: list[int] = []
        self.decisions: list[int] = []

    def __call__(self, sequence_ids: Sequence, timestamp_us: Tensor) -> tuple[Tensor, Tensor]:
        if len(sequence_ids) != len(timestamp_us):
            raise ValueError(f"{len(sequence_ids)} sequence ids, {len(timestamp_us)} stamps")
        sequence_ids = [str(s) for s in sequence_ids]
        if len(self.decisions) != len(sequence_ids):          # the first call (or a new batch size): every slot draws
            redraw, self.decisions = [True] * len(sequence_ids), [KEPT] * len(sequence_ids)
        else:
            redraw = scene_changed(torch.tensor(self.timestamp_us), self.sequence_ids, timestamp_us.cpu(),
                                   sequence_ids).tolist()
        for slot, new_stream in enumerate(redraw):
            if new_stream:
                u = float(torch.rand((), generator=self.generator))
                self.decisions[slot] = (LIDAR_DROPPED if u < self.lidar else
                                        CAMERAS_DROPPED if u < self.lidar + self.cameras else KEPT)
        self.sequence_ids, self.timestamp_us = sequence_ids, [int(t) for t in timestamp_us]
        decisions = torch.tensor(self.decisions)
        return decisions == LIDAR_DROPPED, decisions == CAMERAS_DROPPED

    def state_dict(self) -> dict:
        return {"sequence_ids": list(self.sequence_ids), "timestamp_us": list(self.timestamp_us),
                "decisions": list(self.decisions)}

    def load_state_dict(self, state: dict) -> None:
        self.sequence_ids, self.timestamp_us = list(state["sequence_ids"]), list(state["timestamp_us"])
        self.decisions = [int(d) for d in state["decisions"]]


def drop_lidar(clouds: list[Tensor], dropped: Tensor) -> list[Tensor]:
    """The B clouds [N_i, C] with the dropped slots' clouds empty [0, C] (same dtype and device)."""
    return [cloud[:0] if drop else cloud for cloud, drop in zip(clouds, dropped.tolist())]


def drop_cameras(images: Tensor, cam_mask: Tensor, dropped: Tensor) -> tuple[Tensor, Tensor]:
    """images [B, V, 3, H, W] and cam_mask [B, V] with every camera of the dropped slots [B] failed
    (pixels zero, as camera dropout fails one). The teacher's full images are the caller's to keep."""
    cam_mask = cam_mask | dropped.to(cam_mask.device)[:, None]
    return apply_cam_mask(images, cam_mask), cam_mask
