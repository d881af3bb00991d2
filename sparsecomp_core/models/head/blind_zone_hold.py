"""Blind-zone hold: an object that moves into the view of failed cameras only is still published.

With two crashed cameras, part of the ring around the vehicle is seen by no
live camera (on the default rig, 111-150 deg behind the left side camera when
CAM_FRONT_WIDE and CAM_REAR_LEFT are down). A camera-only model cannot see an
object there, however well the failed images are completed: the cascade has
a short queue of frames, and most of what it lost lies in that arc
(docs/completion.md, "Where a crash costs"). A tracker coasts a track through
such a gap; this does the same for the published objects, as multi-object
trackers keep an unmatched track alive for a while (Autoware's
multi_object_tracker, AB3DMOT's max_age).

Every frame, each published object of score >= ``min_score`` is remembered
under its id (its box in the global frame, class probabilities, score,
time). An object remembered within
``max_age_s`` but not published this frame is published again, as a *held*
object, when its predicted centre (constant velocity in the global frame,
back into the current ego frame) projects into at least one failed camera and
into no live one, lies inside the BEV grid, and no published object of its
class lies within ``duplicate_radius_m``. Its score decays as
``score * exp(-score_decay_per_s * age)`` and its occlusion is HeavilyOccluded
(no live sensor sees it); its id is the one it was published under. An object
in a live camera's view that the model no longer finds is not held: the model
had the chance to see it. Nothing is held while no camera is failed, nor while
the sample has a live LiDAR: it sees all around, and for the camera + LiDAR
model holding only added ghosts (docs/completion.md, "Blind-zone hold"). A held
object is not remembered again (its age counts from when it was last
detected). A scene change (time not increasing, a gap over ``max_age_s``,
another sequence id) forgets everything.

The state is explicit (``HeldObjectsState``, one per sample of a batch), like
every other piece of temporal state in the model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ...geometry import project_points, transform_boxes, transform_points
from ..bev.grid import BEVGrid
from .boxes import BOX_SIZE, NUM_OCCLUSION_STATES

HEAVILY_OCCLUDED = NUM_OCCLUSION_STATES - 1
MIN_DEPTH_M = 0.5                 # a point nearer the camera plane than this is not in its image


@dataclass
class BlindZoneHoldConfig:
    enabled: bool = True
    max_age_s: float = 1.5            # held at most this long after the last detection
    score_decay_per_s: float = 0.2    # held score = last score * exp(-decay * age)
    min_score: float = 0.3            # only objects published this confidently (the node's threshold) are held
    duplicate_radius_m: float = 2.0   # not held where an object of its class is published this near

    def __post_init__(self) -> None:
        for name in ("max_age_s", "duplicate_radius_m"):
            if getattr(self, name) <= 0:
                raise ValueError(f"blind_zone_hold.{name} must be > 0 (got {getattr(self, name)})")
        if self.score_decay_per_s < 0:
            raise ValueError(f"blind_zone_hold.score_decay_per_s must be >= 0 (got {self.score_decay_per_s})")
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"blind_zone_hold.min_score must be in [0, 1] (got {self.min_score})")


def _empty(shape: tuple, dtype=np.float64):
    return field(default_factory=lambda: np.zeros(shape, dtype))


@dataclass(frozen=True)
class HeldObjectsState:
    """One sample's remembered objects, N of them: ids [N] int64, labels [N] int64,
    boxes [N, 10] in the global frame (geometry.transform_boxes of the published ego-frame
    boxes), scores [N], class_probabilities [N, C], last_seen_us [N] int64; the last
    frame's time and sequence id (None before the first frame)."""
    ids: np.ndarray = _empty((0,), np.int64)
    labels: np.ndarray = _empty((0,), np.int64)
    boxes: np.ndarray = _empty((0, BOX_SIZE))
    scores: np.ndarray = _empty((0,))
    class_probabilities: np.ndarray = _empty((0, 0))
    last_seen_us: np.ndarray = _empty((0,), np.int64)
    timestamp_us: int | None = None
    sequence_id: object = None


def seen_by_cameras(points: np.ndarray, intrinsics: np.ndarray, cam2ego: np.ndarray,
                    image_size: tuple[int, int]) -> np.ndarray:
    """[N, V] bool: point n (ego frame, [N, 3]) projects inside camera v's image
    (intrinsics [V, 3, 3], cam2ego [V, 4, 4], image_size (H, W)), in front of it."""
    height, width = image_size
    ego2cam = torch.linalg.inv(torch.as_tensor(cam2ego, dtype=torch.float64))
    in_camera = transform_points(ego2cam, torch.as_tensor(points, dtype=torch.float64))      # [V, N, 3]
    pixels, in_front = project_points(torch.as_tensor(intrinsics, dtype=torch.float64), in_camera, MIN_DEPTH_M)
    u, v = pixels[..., 0], pixels[..., 1]
    return (in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)).T.numpy()


def hold_sample(detection: dict[str, Tensor], failed: np.ndarray, intrinsics: np.ndarray, cam2ego: np.ndarray,
                image_size: tuple[int, int], ego2global: np.ndarray, timestamp_us: int,
                state: HeldObjectsState | None, cfg: BlindZoneHoldConfig, sequence_id: object = None,
                grid: BEVGrid | None = None, score_threshold: float = 0.0,
                lidar_live: bool = False) -> tuple[dict[str, Tensor], HeldObjectsState]:
    """One sample: ``detection`` as head.postprocess and the track filter give it (boxes
    [K, 10] ego frame, scores [K], labels [K], ids [K], class_probabilities [K, C],
    occlusion [K], occlusion_probabilities [K, 4]), failed [V] bool (cam_mask), the
    sample's calibration, ego2global [4, 4], timestamp_us; a held object outside
    ``grid`` (the model's BEV grid) or whose decayed score falls below
    ``score_threshold`` (the post-processing's) is not published; with ``lidar_live``
    (the model has a LiDAR and this sample's cloud has points) nothing is held, but
    the objects are remembered. Returns the detection with the held objects appended
    (same keys, sorted by score) and the new state."""
    state = state or HeldObjectsState()
    if lidar_live:
        failed = np.zeros_like(failed)          # a live LiDAR sees the failed cameras' zone
    gap_us = None if state.timestamp_us is None else timestamp_us - state.timestamp_us
    if gap_us is None or gap_us <= 0 or gap_us * 1e-6 > cfg.max_age_s or (
            sequence_id is not None and state.sequence_id is not None and sequence_id != state.sequence_id):
        state = HeldObjectsState()
    boxes = detection["boxes"].detach().cpu().double().numpy()
    scores = detection["scores"].detach().cpu().double().numpy()
    labels = detection["labels"].cpu().numpy().astype(np.int64)
    ids = detection["ids"].cpu().numpy().astype(np.int64)
    class_probabilities = detection["class_probabilities"].detach().cpu().double().numpy()

    age_s = (timestamp_us - state.last_seen_us) * 1e-6
    decayed = state.scores * np.exp(-cfg.score_decay_per_s * np.maximum(age_s, 0.0))
    candidates = (age_s > 0) & (age_s <= cfg.max_age_s) & ~np.isin(state.ids, ids) & (decayed >= score_threshold)
    held = np.zeros(0, dtype=np.int64)
    held_boxes = np.zeros((0, BOX_SIZE))
    if failed.any() and candidates.any():
        rows = np.nonzero(candidates)[0]
        predicted = state.boxes[rows].copy()
        predicted[:, :2] += predicted[:, 7:9] * age_s[rows, None]              # constant velocity, global frame
        now = transform_boxes(predicted, np.linalg.inv(ego2global))            # [M, 10] ego frame
        seen = seen_by_cameras(now[:, :3], intrinsics, cam2ego, image_size)     # [M, V]
        blind = seen[:, failed].any(axis=1) & ~seen[:, ~failed].any(axis=1)
        if grid is not None:
            blind &= grid.contains(torch.from_numpy(now[:, :2])).numpy()
        published = scores >= cfg.min_score
        for m in np.nonzero(blind)[0]:
            same_class = published & (labels == state.labels[rows[m]])
            if same_class.any() and np.hypot(*(boxes[same_class, :2] - now[m, :2]).T).min() < cfg.duplicate_radius_m:
                continue
            held = np.append(held, rows[m])
            held_boxes = np.concatenate([held_boxes, now[m:m + 1]])

    remembered = scores >= cfg.min_score
    kept = ~np.isin(state.ids, ids[remembered]) & (age_s <= cfg.max_age_s)   # older memories of other ids
    num_classes = class_probabilities.shape[1]
    old_probabilities = state.class_probabilities if state.class_probabilities.shape[1] == num_classes else \
        np.zeros((len(state.ids), num_classes))
    new_state = HeldObjectsState(
        ids=np.concatenate([state.ids[kept], ids[remembered]]),
        labels=np.concatenate([state.labels[kept], labels[remembered]]),
        boxes=np.concatenate([state.boxes[kept], transform_boxes(boxes[remembered], ego2global)]),
        scores=np.concatenate([state.scores[kept], scores[remembered]]),
        class_probabilities=np.concatenate([old_probabilities[kept], class_probabilities[remembered]]),
        last_seen_us=np.concatenate([state.last_seen_us[kept],
                                     np.full(int(remembered.sum()), timestamp_us, dtype=np.int64)]),
        timestamp_us=timestamp_us, sequence_id=sequence_id)
    if not len(held):
        return detection, new_state
    return _appended(detection, state, held, held_boxes, age_s[held], cfg), new_state


def _appended(detection: dict[str, Tensor], state: HeldObjectsState, rows: np.ndarray, boxes: np.ndarray,
              age_s: np.ndarray, cfg: BlindZoneHoldConfig) -> dict[str, Tensor]:
    """``detection`` with the held objects ``rows`` of ``state`` (their ego-frame boxes [M, 10])
    appended, sorted by score."""
    decay = np.exp(-cfg.score_decay_per_s * age_s)
    boxes = boxes.copy()
    boxes[:, 6] = np.remainder(boxes[:, 6] + math.pi, 2 * math.pi) - math.pi
    occlusion_probabilities = np.zeros((len(rows), NUM_OCCLUSION_STATES))
    occlusion_probabilities[:, HEAVILY_OCCLUDED] = 1.0
    reference = detection["boxes"]
    added = {"boxes": boxes, "scores": state.scores[rows] * decay, "labels": state.labels[rows],
             "ids": state.ids[rows], "class_probabilities": state.class_probabilities[rows] * decay[:, None],
             "occlusion": np.full(len(rows), HEAVILY_OCCLUDED), "occlusion_probabilities": occlusion_probabilities}
    merged = {key: torch.cat([value, torch.as_tensor(added[key], dtype=value.dtype).to(reference.device)])
              for key, value in detection.items() if key in added}
    order = merged["scores"].argsort(descending=True, stable=True)
    return {**detection, **{key: value[order] for key, value in merged.items()}}


def hold_detections(detections: list[dict[str, Tensor]], cam_mask: Tensor, intrinsics: Tensor, cam2ego: Tensor,
                    image_size: tuple[int, int], ego2global: Tensor, timestamp_us: Tensor, states: tuple,
                    cfg: BlindZoneHoldConfig, sequence_ids: Sequence | None = None, grid: BEVGrid | None = None,
                    score_threshold: float = 0.0,
                    lidar_points: Sequence[Tensor] | None = None) -> tuple[list[dict[str, Tensor]], tuple]:
    """``hold_sample`` per sample of a batch: cam_mask [B, V] (True: failed), intrinsics
    [B, V, 3, 3], cam2ego [B, V, 4, 4], ego2global [B, 4, 4], timestamp_us [B]; states:
    one HeldObjectsState per sample (() before the first frame); lidar_points: the
    model's LiDAR input per sample (None: a camera-only model), a cloud with points
    being a live LiDAR. With ``cfg.enabled`` false, both unchanged."""
    if not cfg.enabled:
        return detections, states
    if len(states) != len(detections):
        states = (None,) * len(detections)
    held, new_states = [], []
    for b, (detection, state) in enumerate(zip(detections, states)):
        out, state = hold_sample(detection, cam_mask[b].cpu().numpy().astype(bool),
                                 intrinsics[b].detach().cpu().double().numpy(),
                                 cam2ego[b].detach().cpu().double().numpy(), image_size,
                                 ego2global[b].detach().cpu().double().numpy(), int(timestamp_us[b]), state, cfg,
                                 None if sequence_ids is None else sequence_ids[b], grid, score_threshold,
                                 lidar_points is not None and len(lidar_points[b]) > 0)
        held.append(out)
        new_states.append(state)
    return held, tuple(new_states)
