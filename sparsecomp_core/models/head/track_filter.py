"""Track filter: each object id's velocity (and optionally centre) from its whole track.

One frame's detection gives a centre good to a few decimetres and a velocity
good to metres per second (bench/velocity_breakdown.py: finite differences one
frame apart err by ~5 m/s, eight frames apart by ~1 m/s). An object that keeps
its id (track_ids.py) has a history of centres far longer than the head's
query queue, so a constant-velocity Kalman filter per id, in the global frame
(ego motion out), measuring the detected centre and the head's velocity, gives
the velocity of the whole track: the filter trusts the head's velocity on a
new track and the displacement of the centres as the track grows, as the
Kalman filters of AB3DMOT and SimpleTrack do.

The filter never creates, drops or moves a detection between ids; it rewrites
the velocity (and with ``smooth_centres`` the centre) of the detections it is
given. Static classes keep velocity 0. A detection whose centre falls farther
than ``gate_m`` from where its track was predicted restarts the track (an id
handed on to another object must not average two objects). Tracks unseen for
``max_gap_s`` are forgotten; a scene change (time going backwards, a gap over
``max_gap_s``, another sequence id) forgets all.

The state is explicit (``TrackFilterState``, one per sample of a batch), like
every other piece of temporal state in the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .boxes import STATIC_CLASSES


@dataclass
class TrackFilterConfig:
    enabled: bool = True
    position_noise_m: float = 0.5          # std of a detected centre
    velocity_noise_mps: float = 3.0        # std of the head's velocity
    acceleration_noise_mps2: float = 0.5   # std of the unmodelled acceleration (process noise)
    gate_m: float = 4.0                    # an id's centre this far from its prediction: a new track
    max_gap_s: float = 2.0                 # a track unseen this long is forgotten
    smooth_centres: bool = False           # also replace the centre by the filtered one

    def __post_init__(self) -> None:
        for name in ("position_noise_m", "velocity_noise_mps", "acceleration_noise_mps2", "gate_m", "max_gap_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"track_filter.{name} must be > 0 (got {getattr(self, name)})")


@dataclass(frozen=True)
class TrackFilterState:
    """One sample's tracks: ids [N] int64, means [N, 4] (x, y, vx, vy; global frame,
    metres and m/s), covariances [N, 4, 4], last_seen_us [N] int64; and the last
    frame's time and sequence id (None before the first frame)."""
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    means: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    covariances: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 4)))
    last_seen_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamp_us: int | None = None
    sequence_id: object = None


def _transition(dt: np.ndarray, acceleration_noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity transition F [N, 4, 4] and white-acceleration process noise Q [N, 4, 4] for dt [N] s."""
    n = len(dt)
    F = np.tile(np.eye(4), (n, 1, 1))
    F[:, 0, 2] = F[:, 1, 3] = dt
    q = acceleration_noise ** 2
    Q = np.zeros((n, 4, 4))
    for axis in (0, 1):
        p, v = axis, axis + 2
        Q[:, p, p] = q * dt ** 4 / 4
        Q[:, p, v] = Q[:, v, p] = q * dt ** 3 / 2
        Q[:, v, v] = q * dt ** 2
    return F, Q


def filter_sample(boxes: Tensor, labels: Tensor, ids: Tensor, ego2global: Tensor, timestamp_us: int,
                  state: TrackFilterState | None, cfg: TrackFilterConfig,
                  sequence_id: object = None) -> tuple[Tensor, TrackFilterState]:
    """One sample's detections: boxes [K, 10] (ego frame: centre, size, yaw, velocity),
    labels [K], ids [K] (unique within the frame), ego2global [4, 4], timestamp_us.
    Returns the boxes with filtered velocities (and centres with ``smooth_centres``),
    same dtype and device, and the new state."""
    state = state or TrackFilterState()
    gap_s = None if state.timestamp_us is None else (timestamp_us - state.timestamp_us) * 1e-6
    if gap_s is None or gap_s <= 0 or gap_s > cfg.max_gap_s or (
            sequence_id is not None and state.sequence_id is not None and sequence_id != state.sequence_id):
        state = TrackFilterState()
    keep = (timestamp_us - state.last_seen_us) * 1e-6 <= cfg.max_gap_s
    track_ids, means, covariances, last_seen = (state.ids[keep], state.means[keep], state.covariances[keep],
                                                state.last_seen_us[keep])

    pose = ego2global.detach().cpu().double().numpy()
    rotation, translation = pose[:2, :2], pose[:2, 3]
    box_np = boxes.detach().cpu().double().numpy()
    label_np, id_np = labels.cpu().numpy(), ids.cpu().numpy().astype(np.int64)
    centres = box_np[:, :2] @ rotation.T + translation                      # [K, 2] global
    velocities = box_np[:, 7:9] @ rotation.T                                # [K, 2] global axes
    measured = np.concatenate([centres, velocities], axis=1)               # [K, 4]
    R = np.diag([cfg.position_noise_m ** 2] * 2 + [cfg.velocity_noise_mps ** 2] * 2)

    moving = ~np.isin(label_np, STATIC_CLASSES)
    # Every live track predicted to now.
    F, Q = _transition((timestamp_us - last_seen) * 1e-6, cfg.acceleration_noise_mps2)
    predicted = np.einsum("nij,nj->ni", F, means)
    predicted_cov = F @ covariances @ F.transpose(0, 2, 1) + Q
    track_of = np.full(len(measured), -1, dtype=np.int64)         # detection -> track row
    row_of = {int(t): r for r, t in enumerate(track_ids)}
    for k in np.nonzero(moving)[0]:                               # its id's track, unless it jumped
        r = row_of.get(int(id_np[k]), -1)
        if r >= 0 and np.linalg.norm(measured[k, :2] - predicted[r, :2]) <= cfg.gate_m:
            track_of[k] = r
    out_means = measured.copy()                                   # unmatched: a new track from the detection
    out_covariances = np.tile(R, (len(measured), 1, 1))
    matched = np.nonzero(track_of >= 0)[0]
    if len(matched):
        r = track_of[matched]
        P = predicted_cov[r]
        gain = P @ np.linalg.inv(P + R)
        out_means[matched] = predicted[r] + np.einsum("nij,nj->ni", gain, measured[matched] - predicted[r])
        out_covariances[matched] = (np.eye(4) - gain) @ P

    result = box_np.copy()
    inverse = rotation.T
    result[moving, 7:9] = (out_means[moving, 2:4]) @ inverse.T
    result[~moving, 7:9] = 0.0
    if cfg.smooth_centres:
        result[moving, :2] = (out_means[moving, :2] - translation) @ inverse.T

    unseen = ~np.isin(track_ids, id_np[moving])                  # a jumped id's old track ends too
    new_state = TrackFilterState(
        ids=np.concatenate([track_ids[unseen], id_np[moving]]),
        means=np.concatenate([means[unseen], out_means[moving]]),
        covariances=np.concatenate([covariances[unseen], out_covariances[moving]]),
        last_seen_us=np.concatenate([last_seen[unseen], np.full(int(moving.sum()), timestamp_us, np.int64)]),
        timestamp_us=int(timestamp_us), sequence_id=sequence_id)
    return torch.as_tensor(result, dtype=boxes.dtype, device=boxes.device), new_state


def filter_detections(detections: list[dict[str, Tensor]], ego2global: Tensor, timestamp_us: Tensor,
                      states: tuple, cfg: TrackFilterConfig,
                      sequence_ids: Sequence | None = None) -> tuple[list[dict[str, Tensor]], tuple]:
    """``filter_sample`` per sample of a batch: detections as head.postprocess gives them
    (boxes [K, 10], labels [K], ids [K], ...), ego2global [B, 4, 4], timestamp_us [B],
    states: one TrackFilterState per sample (() before the first frame). Returns the
    detections with filtered boxes and the new states; with ``cfg.enabled`` false,
    both unchanged."""
    if not cfg.enabled:
        return detections, states
    if len(states) != len(detections):             # first frame, or a new stream with another batch size
        states = (None,) * len(detections)
    filtered, new_states = [], []
    for b, (detection, state) in enumerate(zip(detections, states)):
        boxes, state = filter_sample(detection["boxes"], detection["labels"], detection["ids"], ego2global[b],
                                     int(timestamp_us[b]), state, cfg,
                                     None if sequence_ids is None else sequence_ids[b])
        filtered.append({**detection, "boxes": boxes})
        new_states.append(state)
    return filtered, tuple(new_states)
