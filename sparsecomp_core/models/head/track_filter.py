"""Track filter: each object's velocity from its whole track, and its id across short misses.

One frame's detection gives a centre good to a few decimetres and a velocity
good to metres per second (bench/velocity_breakdown.py: finite differences one
frame apart err by ~5 m/s, eight frames apart by ~1 m/s). An object that keeps
its id (track_ids.py) has a history of centres far longer than the head's
query queue, so a constant-velocity Kalman filter per id, in the global frame
(ego motion out), measuring the detected centre and the head's velocity, gives
the velocity of the whole track: the filter trusts the head's velocity on a
new track and the displacement of the centres as the track grows, as the
Kalman filters of AB3DMOT and SimpleTrack do.

Ids: the head continues an id only from the kept queries of its last few
frames, so an object missed for longer comes back under a new id. The filter
keeps a track for ``max_gap_s``; a confident detection (score >= ``reid_min_score``)
under an id the filter has no track for takes over the id of a lost track of its
class (one not seen this frame, confirmed by ``reid_min_hits`` confident frames)
whose prediction lies within ``reid_gate_m`` (Hungarian on the distance). The
head's new id is remembered as an alias of the old one, so its next frames keep
the old id too. ``reid_gate_m`` 0 turns this off.

The filter never creates or drops a detection; it rewrites the velocity (with
``smooth_centres`` the centre too; with ``heading_speed_sigmas`` the heading of a
box that surely moves, which then faces its motion, as AB3DMOT corrects
orientation; with ``velocity_along_heading_classes`` the velocity keeps only its
component along the box's axis) and, by re-identification, the id. Static
classes keep velocity 0 and get no track. A detection whose centre falls
farther than ``gate_m`` from where its id's track was predicted restarts the
track (an id handed on to another object must not average two objects). A
scene change (time going backwards, a gap over ``max_gap_s``, another sequence
id) forgets everything.

The state is explicit (``TrackFilterState``, one per sample of a batch), like
every other piece of temporal state in the model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .boxes import CLASS_NAMES, STATIC_CLASSES
from .sweep_velocity import SweepVelocityConfig, sweep_velocities as measure_sweep_velocities


@dataclass
class TrackFilterConfig:
    enabled: bool = True
    position_noise_m: float = 0.5          # std of a detected centre
    velocity_noise_mps: float = 3.0        # std of the head's velocity
    # Per class name, where the head's velocity is far better than velocity_noise_mps: a parked
    # cycle's is ~0.1 m/s off, and centres jittering by decimetres must not make it move
    # (docs/model.md, "Per-class velocity noise").
    class_velocity_noise_mps: dict[str, float] = field(default_factory=lambda: {"riderless_non_motor": 0.3})
    acceleration_noise_mps2: float = 0.5   # std of the unmodelled acceleration (process noise)
    gate_m: float = 4.0                    # an id's centre this far from its prediction: a new track
    max_gap_s: float = 2.0                 # a track unseen this long is forgotten
    smooth_centres: bool = True            # also replace the centre by the filtered one (docs/model.md)
    reid_gate_m: float = 3.0               # a new id this near a lost track's prediction takes its id (0: off)
    reid_min_score: float = 0.3            # only detections this confident take over or confirm a track
    reid_min_hits: int = 3                 # confident frames before a lost track can be taken over
    # Heading from motion: a box of heading_from_motion_classes (things that move forward: car,
    # truck, bus, person, ridden cycle) whose track's filtered speed is at least
    # heading_min_speed_mps and heading_speed_sigmas standard deviations faces the way it moves:
    # heading_is_motion_classes (people: a square footprint shows no heading) take the direction
    # of the velocity, the others only their heading's sign (the box's length shows the axis).
    # Riderless cycles only move when pushed. heading_speed_sigmas 0: off (docs/model.md).
    heading_speed_sigmas: float = 1.0
    heading_min_speed_mps: float = 0.5
    heading_from_motion_classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    heading_is_motion_classes: list[int] = field(default_factory=lambda: [3])
    # These classes publish only the velocity's component along the box's heading axis. Off ([]):
    # it helps clean (vehicles move along their length) but ruins the velocity where the axis is
    # wrong, under camera faults and in the camera-only model (docs/model.md).
    velocity_along_heading_classes: list[int] = field(default_factory=list)
    # Velocity measured by registering each box's LiDAR points across the merged sweeps
    # (sweep_velocity.py; docs/model.md, "Velocity from the sweeps").
    sweep_velocity: SweepVelocityConfig = field(default_factory=SweepVelocityConfig)

    def __post_init__(self) -> None:
        for name in ("position_noise_m", "velocity_noise_mps", "acceleration_noise_mps2", "gate_m", "max_gap_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"track_filter.{name} must be > 0 (got {getattr(self, name)})")
        if self.heading_speed_sigmas < 0 or self.heading_min_speed_mps < 0:
            raise ValueError("track_filter.heading_speed_sigmas and heading_min_speed_mps must be >= 0")
        if not set(self.heading_is_motion_classes) <= set(self.heading_from_motion_classes):
            raise ValueError("track_filter.heading_is_motion_classes must be among heading_from_motion_classes")
        unknown = set(self.class_velocity_noise_mps) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"track_filter.class_velocity_noise_mps: unknown classes {sorted(unknown)}; "
                             f"known: {list(CLASS_NAMES)}")
        if any(v <= 0 for v in self.class_velocity_noise_mps.values()):
            raise ValueError("track_filter.class_velocity_noise_mps values must be > 0")
        if self.reid_gate_m < 0 or self.reid_min_hits < 1:
            raise ValueError("track_filter.reid_gate_m must be >= 0 and reid_min_hits >= 1")


def _empty(shape: tuple, dtype=np.float64):
    return field(default_factory=lambda: np.zeros(shape, dtype))


@dataclass(frozen=True)
class TrackFilterState:
    """One sample's tracks: ids [N] int64 (the published id), labels [N] int64, means
    [N, 4] (x, y, vx, vy; global frame, metres and m/s), covariances [N, 4, 4],
    last_seen_us [N] int64, hits [N] int64 (confident frames); aliases: the head's id ->
    the published id it continues; the last frame's time and sequence id (None
    before the first frame)."""
    ids: np.ndarray = _empty((0,), np.int64)
    labels: np.ndarray = _empty((0,), np.int64)
    means: np.ndarray = _empty((0, 4))
    covariances: np.ndarray = _empty((0, 4, 4))
    last_seen_us: np.ndarray = _empty((0,), np.int64)
    hits: np.ndarray = _empty((0,), np.int64)
    aliases: dict = field(default_factory=dict)
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


def filter_sample(boxes: Tensor, labels: Tensor, ids: Tensor, scores: Tensor, ego2global: Tensor, timestamp_us: int,
                  state: TrackFilterState | None, cfg: TrackFilterConfig, sequence_id: object = None,
                  sweep_velocities: np.ndarray | None = None) -> tuple[Tensor, Tensor, TrackFilterState]:
    """One sample's detections: boxes [K, 10] (ego frame: centre, size, yaw, velocity),
    labels [K], ids [K] (the head's; unique within the frame), scores [K], ego2global
    [4, 4], timestamp_us; sweep_velocities [K, 2] (ego frame, NaN: none) measured from
    the LiDAR sweeps (sweep_velocity.py), which replace the head's velocity as the
    measurement, with std ``cfg.sweep_velocity.noise_mps``. Returns the boxes with
    filtered velocities (centres with ``smooth_centres``, headings of surely moving boxes
    with ``heading_speed_sigmas``), the published ids [K] (same dtype and device as given)
    and the new state."""
    state = state or TrackFilterState()
    gap_s = None if state.timestamp_us is None else (timestamp_us - state.timestamp_us) * 1e-6
    if gap_s is None or gap_s <= 0 or gap_s > cfg.max_gap_s or (
            sequence_id is not None and state.sequence_id is not None and sequence_id != state.sequence_id):
        state = TrackFilterState()
    live = (timestamp_us - state.last_seen_us) * 1e-6 <= cfg.max_gap_s
    track_ids, track_labels, means, covariances, last_seen, hits = (
        state.ids[live], state.labels[live], state.means[live], state.covariances[live], state.last_seen_us[live],
        state.hits[live])
    live_ids = set(track_ids.tolist())
    aliases = {head: own for head, own in state.aliases.items() if own in live_ids}

    pose = ego2global.detach().cpu().double().numpy()
    rotation, translation = pose[:2, :2], pose[:2, 3]
    box_np = boxes.detach().cpu().double().numpy()
    label_np, score_np = labels.cpu().numpy(), scores.detach().cpu().numpy()
    head_ids = ids.cpu().numpy().astype(np.int64)
    out_ids = np.array([aliases.get(int(i), int(i)) for i in head_ids], dtype=np.int64)
    aliased = out_ids != head_ids
    for i in np.nonzero(aliased)[0]:       # the head continued the old id itself as well: it keeps it
        if (out_ids[~aliased] == out_ids[i]).any():
            out_ids[i] = head_ids[i]
            aliases.pop(int(head_ids[i]), None)
    centres = box_np[:, :2] @ rotation.T + translation                      # [K, 2] global
    velocity_noise = np.array([cfg.class_velocity_noise_mps.get(name, cfg.velocity_noise_mps)
                               for name in CLASS_NAMES])[label_np]                # [K] per detection
    ego_velocities = box_np[:, 7:9].copy()
    if sweep_velocities is not None:                                        # measured from the LiDAR sweeps
        from_sweeps = np.isfinite(sweep_velocities).all(axis=1)
        ego_velocities[from_sweeps] = sweep_velocities[from_sweeps]
        velocity_noise = np.where(from_sweeps, cfg.sweep_velocity.noise_mps, velocity_noise)
    velocities = ego_velocities @ rotation.T                                # [K, 2] global axes
    measured = np.concatenate([centres, velocities], axis=1)               # [K, 4]
    R = np.zeros((len(measured), 4, 4))                                    # [K, 4, 4] measurement noise
    R[:, 0, 0] = R[:, 1, 1] = cfg.position_noise_m ** 2
    R[:, 2, 2] = R[:, 3, 3] = velocity_noise ** 2

    moving = ~np.isin(label_np, STATIC_CLASSES)
    F, Q = _transition((timestamp_us - last_seen) * 1e-6, cfg.acceleration_noise_mps2)
    predicted = np.einsum("nij,nj->ni", F, means)                          # every live track, now
    predicted_cov = F @ covariances @ F.transpose(0, 2, 1) + Q
    track_of = np.full(len(measured), -1, dtype=np.int64)                  # detection -> track row
    row_of = {int(t): r for r, t in enumerate(track_ids)}
    for k in np.nonzero(moving)[0]:                                        # its id's track, unless it jumped
        r = row_of.get(int(out_ids[k]), -1)
        if r >= 0 and np.linalg.norm(measured[k, :2] - predicted[r, :2]) <= cfg.gate_m:
            track_of[k] = r
    if cfg.reid_gate_m > 0:                                                # a new id near a lost track
        newcomers = np.nonzero(moving & (score_np >= cfg.reid_min_score) & ~np.isin(out_ids, track_ids))[0]
        lost = np.setdiff1d(np.nonzero(hits >= cfg.reid_min_hits)[0], track_of[track_of >= 0])
        lost = lost[~np.isin(track_ids[lost], out_ids)]
        if len(newcomers) and len(lost):
            distance = np.linalg.norm(measured[newcomers, None, :2] - predicted[None, lost, :2], axis=-1)
            allowed = (distance < cfg.reid_gate_m) & (label_np[newcomers, None] == track_labels[None, lost])
            for r, c in zip(*linear_sum_assignment(np.where(allowed, distance, 1e6))):
                if allowed[r, c]:
                    k, row = newcomers[r], lost[c]
                    track_of[k], out_ids[k] = row, track_ids[row]
                    aliases[int(head_ids[k])] = int(track_ids[row])
    out_means = measured.copy()                                            # unmatched: a new track
    out_covariances = R.copy()
    out_hits = (score_np >= cfg.reid_min_score).astype(np.int64)
    matched = np.nonzero(track_of >= 0)[0]
    if len(matched):
        r = track_of[matched]
        P = predicted_cov[r]
        gain = P @ np.linalg.inv(P + R[matched])
        out_means[matched] = predicted[r] + np.einsum("nij,nj->ni", gain, measured[matched] - predicted[r])
        out_covariances[matched] = (np.eye(4) - gain) @ P
        out_hits[matched] += hits[r]

    result = box_np.copy()
    result[moving, 7:9] = out_means[moving, 2:4] @ rotation
    result[~moving, 7:9] = 0.0
    if cfg.heading_speed_sigmas > 0:
        result[:, 6] = heading_from_motion(result[:, 6], result[:, 7:9], out_covariances[:, 2:4, 2:4], label_np,
                                           moving, cfg)
    along = moving & np.isin(label_np, cfg.velocity_along_heading_classes)
    if along.any():
        axis = np.stack([np.cos(result[along, 6]), np.sin(result[along, 6])], axis=1)
        result[along, 7:9] = (result[along, 7:9] * axis).sum(1, keepdims=True) * axis
    if cfg.smooth_centres:
        result[moving, :2] = (out_means[moving, :2] - translation) @ rotation

    unseen = ~np.isin(track_ids, out_ids[moving])                         # a jumped id's old track ends too
    new_state = TrackFilterState(
        ids=np.concatenate([track_ids[unseen], out_ids[moving]]),
        labels=np.concatenate([track_labels[unseen], label_np[moving]]),
        means=np.concatenate([means[unseen], out_means[moving]]),
        covariances=np.concatenate([covariances[unseen], out_covariances[moving]]),
        last_seen_us=np.concatenate([last_seen[unseen], np.full(int(moving.sum()), timestamp_us, np.int64)]),
        hits=np.concatenate([hits[unseen], out_hits[moving]]),
        aliases=aliases, timestamp_us=int(timestamp_us), sequence_id=sequence_id)
    return (torch.as_tensor(result, dtype=boxes.dtype, device=boxes.device),
            torch.as_tensor(out_ids, dtype=ids.dtype, device=ids.device), new_state)


def heading_from_motion(yaw: np.ndarray, velocity: np.ndarray, velocity_cov: np.ndarray, labels: np.ndarray,
                        moving: np.ndarray, cfg: TrackFilterConfig) -> np.ndarray:
    """yaw [K] (rad) with the boxes of heading_from_motion_classes that surely move (``moving``
    [K], filtered speed >= heading_min_speed_mps and >= heading_speed_sigmas x its std, from
    velocity_cov [K, 2, 2]) turned to face their velocity [K, 2] (same frame as yaw):
    heading_is_motion_classes take its direction, the others are turned by pi where they face
    more than 90 degrees away from it."""
    speed = np.linalg.norm(velocity, axis=1)
    sigma = np.sqrt(np.maximum(np.trace(velocity_cov, axis1=1, axis2=2) / 2, 0.0))
    sure = (moving & np.isin(labels, cfg.heading_from_motion_classes) & (speed >= cfg.heading_min_speed_mps)
            & (speed >= cfg.heading_speed_sigmas * sigma))
    direction = np.arctan2(velocity[:, 1], velocity[:, 0])
    away = np.abs((yaw - direction + np.pi) % (2 * np.pi) - np.pi) > np.pi / 2
    follows = np.isin(labels, cfg.heading_is_motion_classes)
    out = yaw.copy()
    out[sure & follows] = direction[sure & follows]
    flip = sure & ~follows & away
    out[flip] = (yaw[flip] + 2 * np.pi) % (2 * np.pi) - np.pi     # yaw + pi, in [-pi, pi)
    return out


def filter_detections(detections: list[dict[str, Tensor]], ego2global: Tensor, timestamp_us: Tensor,
                      states: tuple, cfg: TrackFilterConfig, sequence_ids: Sequence | None = None,
                      lidar_points: Sequence[Tensor] | None = None) -> tuple[list[dict[str, Tensor]], tuple]:
    """``filter_sample`` per sample of a batch: detections as head.postprocess gives them
    (boxes [K, 10], labels [K], ids [K], ...), ego2global [B, 4, 4], timestamp_us [B],
    states: one TrackFilterState per sample (() before the first frame), lidar_points:
    the model's LiDAR input per sample ([N, 5] merged sweeps give velocities measured
    from the sweeps; None, or one sweep: none). Returns the
    detections with filtered boxes and published ids, and the new states; with ``cfg.enabled`` false,
    both unchanged."""
    if not cfg.enabled:
        return detections, states
    if len(states) != len(detections):             # first frame, or a new stream with another batch size
        states = (None,) * len(detections)
    filtered, new_states = [], []
    for b, (detection, state) in enumerate(zip(detections, states)):
        measured = None
        if lidar_points is not None and cfg.sweep_velocity.enabled:
            measured = measure_sweep_velocities(lidar_points[b].detach().cpu().numpy(),
                                                detection["boxes"].detach().cpu().numpy(),
                                                detection["labels"].cpu().numpy(),
                                                detection["scores"].detach().cpu().numpy(), cfg.sweep_velocity)
        boxes, ids, state = filter_sample(detection["boxes"], detection["labels"], detection["ids"],
                                          detection["scores"], ego2global[b], int(timestamp_us[b]), state, cfg,
                                          None if sequence_ids is None else sequence_ids[b], measured)
        filtered.append({**detection, "boxes": boxes, "ids": ids})
        new_states.append(state)
    return filtered, tuple(new_states)
