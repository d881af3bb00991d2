"""Velocity of a detected box measured from the LiDAR sweeps merged into its frame.

The merged cloud (data/sweeps.py) holds the current sweep and the few before it,
ego motion compensated, each point with its time lag. A moving object's older
points lie behind it along its path, a static one's on the same spot. Shifting
the older points by ``velocity x lag`` onto the current sweep's points inside
the box measures the velocity directly, the way a LiDAR tracker registers an
object's points between scans. The network's own velocity regression has to
learn this from pillars of 1.6 m (docs/model.md, "Velocity from time"); the
registration needs no training. On the generated held-out set its median error
for matched cars is 0.35 m/s on the detected boxes (0.05 m/s on the true
boxes), against 2.6 m/s for the head where the sweeps say nothing. Where they
say nothing (too few points, a surface that slides along itself) it gives NaN,
and the track filter (track_filter.py) keeps the head's velocity there; elsewhere
the filter takes it as the velocity measurement in place of the head's.

The search: for each candidate velocity (in the box's frame: along its axis and
across it), every older point inside the box's reach is moved by
``velocity x lag`` and scored by its distance to the nearest current point of the
box (a distance transform of the current points on a fine grid), truncated at
``truncate_m``. The lowest sum wins: coarsely along the axis, then finely in both
directions, a sideways speed paying ``lateral_penalty`` (a face across the axis
slides along itself sideways). Classes whose footprint shows no heading (people)
search a disc, unpenalised. The winner must put most older points of the box on
its current ones (``min_inlier_fraction``), fit clearly better than speeds
``sharpness_step_mps`` away (``min_sharpness_m``) and lie inside the search, not
at its edge (there the minimum is outside it, or another object's).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .boxes import CLASS_NAMES, STATIC_CLASSES


@dataclass
class SweepVelocityConfig:
    enabled: bool = True                   # only acts where the LiDAR input holds several sweeps
    # Classes measured. Riderless cycles stand parked, and the head's velocity for them is good
    # to ~0.1 m/s (track_filter.class_velocity_noise_mps); barriers and pillars never move.
    classes: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    min_score: float = 0.1                 # boxes scored lower are not measured (time; no AVE change)
    max_speed_mps: float = 20.0            # along the box's axis, either way
    max_lateral_mps: float = 2.0           # across it
    isotropic_classes: list[int] = field(default_factory=lambda: [3])   # people: no axis, search a disc
    isotropic_max_speed_mps: float = 4.0
    box_margin_m: float = 0.5              # a detected box is this far off, or its points are
    length_margin_fraction: float = 0.2    # and this much shorter (a bus's ends must stay in)
    ground_clearance_m: float = 0.2        # points this close above the box's bottom are ground
    cell_m: float = 0.05                   # distance-transform grid
    truncate_m: float = 0.5                # an older point farther than this from the box's points counts as this
    coarse_step_mps: float = 0.5
    # A box seen from behind shows a line across its axis, which slides along itself: the data
    # cannot tell a sideways speed there. Each older point pays lateral_penalty x the distance its
    # sideways shift moves it, so a sideways speed is taken only where the points show it.
    lateral_penalty: float = 1.0
    max_old_points: int = 300              # older points scored (an even subsample beyond)
    fine_step_mps: float = 0.1
    min_points: int = 5                    # current points in the box, and older points landing on it per sweep
    min_sweeps: int = 2                    # older sweeps that must land on the box
    inlier_distance_m: float = 0.2
    # Of the older points the winner puts on the box, this many lie within inlier_distance_m of a
    # current one (surfaces seen in one sweep and not another keep it below 1).
    min_inlier_fraction: float = 0.4
    # Moving the winner by sharpness_step_mps along the axis (either way; both axes for isotropic
    # classes) must raise the mean distance of its points on the box by min_sharpness_m: a face
    # seen along its own motion (the side of a car alongside) slides along itself, and the
    # sweeps cannot say how fast.
    sharpness_step_mps: float = 1.5
    min_sharpness_m: float = 0.03
    noise_mps: float = 0.5                 # its std as the track filter's velocity measurement

    def __post_init__(self) -> None:
        for name in ("max_speed_mps", "isotropic_max_speed_mps", "cell_m", "truncate_m", "coarse_step_mps",
                     "fine_step_mps", "inlier_distance_m", "sharpness_step_mps", "noise_mps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sweep_velocity.{name} must be > 0 (got {getattr(self, name)})")
        if min(self.max_lateral_mps, self.box_margin_m, self.length_margin_fraction, self.lateral_penalty,
               self.min_sharpness_m) < 0 \
                or self.min_points < 1 or self.min_sweeps < 1:
            raise ValueError("sweep_velocity: max_lateral_mps, box_margin_m, length_margin_fraction, lateral_penalty "
                             "and min_sharpness_m must be >= 0, min_points and min_sweeps >= 1")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError("sweep_velocity.min_inlier_fraction must be in [0, 1]")
        known = range(len(CLASS_NAMES))
        if not set(self.classes) <= set(known) or not set(self.isotropic_classes) <= set(known):
            raise ValueError(f"sweep_velocity.classes and isotropic_classes are class indices 0-{len(known) - 1}")
        if set(self.classes) & set(STATIC_CLASSES):
            raise ValueError(f"sweep_velocity.classes: {sorted(set(self.classes) & set(STATIC_CLASSES))} never move")


def _grid(extent: float, step: float) -> np.ndarray:
    count = int(np.floor(extent / step + 1e-9))
    return np.arange(-count, count + 1) * step


def sweep_velocities(points: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                     cfg: SweepVelocityConfig) -> np.ndarray:
    """points [M, 5] merged sweeps (x, y, z, intensity, lag_s; current ego frame; fewer
    columns: one sweep, nothing measured); boxes [K, >=7] (x, y, z centre, l, w, h, yaw;
    same frame); labels [K]; scores [K]. Returns velocities [K, 2] (vx, vy over ground in
    the same frame, m/s), NaN where not measured: a class not in ``classes``, a score
    under ``min_score``, or a box whose sweeps fail the checks in the module docstring
    (``min_points`` current points, ``min_sweeps`` older sweeps registered onto them with
    ``min_inlier_fraction`` inliers, a sharp fit, not at the search's edge)."""
    velocities = np.full((len(boxes), 2), np.nan)
    points = np.asarray(points)
    measured = np.isin(labels, cfg.classes) & (np.asarray(scores) >= cfg.min_score)
    if not cfg.enabled or points.ndim != 2 or points.shape[1] < 5 or not measured.any():
        return velocities
    boxes = np.asarray(boxes, dtype=np.float64)
    lowest = float(np.min(boxes[measured, 2] - boxes[measured, 5] / 2)) + cfg.ground_clearance_m
    # Ground and non-finite points out first, in the input's precision: most of a cloud is ground.
    keep = (points[:, 2] > lowest) & np.isfinite(points[:, :5]).all(axis=1)
    points = points[keep].astype(np.float64)
    lags = points[:, 4]
    older = np.unique(lags[lags > 1e-6])
    if len(older) < cfg.min_sweeps:
        return velocities
    tree = cKDTree(points[:, :2])
    max_lag = float(older.max())
    for k in np.nonzero(measured)[0]:
        result = _register(points, tree, boxes[k], int(labels[k]) in cfg.isotropic_classes, max_lag, cfg)
        if result is not None:
            velocities[k] = result
    return velocities


def _register(points: np.ndarray, tree: cKDTree, box: np.ndarray, isotropic: bool, max_lag: float,
              cfg: SweepVelocityConfig) -> np.ndarray | None:
    """One box's velocity [2] in the points' frame, or None where the sweeps do not show it."""
    x, y, z, length, width, height, yaw = box[:7]
    along_max = cfg.isotropic_max_speed_mps if isotropic else cfg.max_speed_mps
    across_max = cfg.isotropic_max_speed_mps if isotropic else cfg.max_lateral_mps
    penalty = 0.0 if isotropic else cfg.lateral_penalty
    half_l = (1 + cfg.length_margin_fraction) * length / 2 + cfg.box_margin_m
    half_w = width / 2 + cfg.box_margin_m
    reach = np.hypot(half_l + along_max * max_lag, half_w + across_max * max_lag)
    # Sorted: in cloud order (sweep by sweep), so the even subsample below keeps each sweep's share
    # whatever order the tree stores the points in.
    near = np.asarray(tree.query_ball_point([x, y], reach, return_sorted=True), dtype=np.int64)
    if len(near) == 0:
        return None
    p = points[near]
    bottom = z - height / 2
    p = p[(p[:, 2] > bottom + cfg.ground_clearance_m) & (p[:, 2] < bottom + height + cfg.box_margin_m)]
    cos, sin = np.cos(yaw), np.sin(yaw)
    dx, dy = p[:, 0] - x, p[:, 1] - y
    local = np.stack([dx * cos + dy * sin, -dx * sin + dy * cos], axis=1)       # [n, 2] along, across
    lag = p[:, 4]
    current = (lag <= 1e-6) & (np.abs(local[:, 0]) <= half_l) & (np.abs(local[:, 1]) <= half_w)
    if current.sum() < cfg.min_points:
        return None
    old = (lag > 1e-6) & (np.abs(local[:, 0]) <= half_l + along_max * lag) \
        & (np.abs(local[:, 1]) <= half_w + across_max * lag)
    old_xy, old_lag = local[old], lag[old]
    if len(old_xy) > cfg.max_old_points:          # an even subsample keeps every sweep's share
        keep = np.linspace(0, len(old_xy) - 1, cfg.max_old_points).round().astype(int)
        old_xy, old_lag = old_xy[keep], old_lag[keep]
    if len(old_xy) < cfg.min_points * cfg.min_sweeps:
        return None

    # Distance (m) from every cell of a fine grid over the box to the nearest current point,
    # framed by one cell of truncate_m for whatever lands outside.
    cell, pad = cfg.cell_m, cfg.truncate_m
    lo = np.array([-half_l - pad, -half_w - pad]) - cell
    shape = np.ceil((2 * np.array([half_l, half_w]) + 2 * pad) / cell).astype(int) + 3
    occupied = np.ones(shape, dtype=bool)
    cells = np.floor((local[current] - lo) / cell).astype(int)
    occupied[cells[:, 0], cells[:, 1]] = False
    distance = np.minimum(ndimage.distance_transform_edt(occupied) * cell, cfg.truncate_m)
    distance[[0, -1], :] = distance[:, [0, -1]] = cfg.truncate_m
    flat_distance = distance.ravel()

    def cell_index(moved: np.ndarray) -> np.ndarray:      # [..., 2] positions -> [...] flat cell, border outside
        ix = np.clip(np.floor((moved[..., 0] - lo[0]) / cell), 0, shape[0] - 1).astype(np.intp)
        iy = np.clip(np.floor((moved[..., 1] - lo[1]) / cell), 0, shape[1] - 1).astype(np.intp)
        return ix * shape[1] + iy

    def distances(candidates: np.ndarray) -> np.ndarray:      # [S, 2] -> [S] summed truncated distance
        moved = old_xy[None] + candidates[:, None, :] * old_lag[None, :, None]          # [S, n, 2]
        return flat_distance[cell_index(moved)].sum(axis=1)

    def costs(candidates: np.ndarray) -> np.ndarray:
        return distances(candidates) + penalty * np.abs(candidates[:, 1]) * old_lag.sum()

    # Coarse along the axis (a disc for isotropic classes), then fine in both directions.
    lateral = _grid(across_max, cfg.coarse_step_mps) if isotropic else np.zeros(1)
    along, across = np.meshgrid(_grid(along_max, cfg.coarse_step_mps), lateral, indexing="ij")
    coarse = np.stack([along.ravel(), across.ravel()], axis=1)
    best = coarse[np.argmin(costs(coarse))]
    fine_lateral = cfg.coarse_step_mps if isotropic else across_max
    along, across = np.meshgrid(best[0] + _grid(cfg.coarse_step_mps, cfg.fine_step_mps),
                                np.clip(best[1] + _grid(fine_lateral, cfg.fine_step_mps), -across_max, across_max),
                                indexing="ij")
    fine = np.unique(np.stack([along.ravel(), across.ravel()], axis=1), axis=0)
    best = fine[np.argmin(costs(fine))]

    # Quality: the older points the winner puts on the box mostly sit on its current points,
    # and a neighbouring velocity fits clearly worse.
    moved = old_xy + best * old_lag[:, None]
    on_box = (np.abs(moved[:, 0]) <= half_l) & (np.abs(moved[:, 1]) <= half_w)
    inlier = on_box & (flat_distance[cell_index(moved)] <= cfg.inlier_distance_m)
    registered = [t for t in np.unique(old_lag) if (on_box & (old_lag == t)).sum() >= cfg.min_points]
    if len(registered) < cfg.min_sweeps or inlier.sum() < cfg.min_inlier_fraction * on_box.sum():
        return None
    edge = cfg.coarse_step_mps       # the best fit at the search's edge: no minimum inside (another object)
    if abs(best[0]) >= along_max - edge or (across_max > 0 and abs(best[1]) >= across_max - edge):
        return None
    step = cfg.sharpness_step_mps
    shifts = np.array([[step, 0.0], [-step, 0.0]] + ([[0.0, step], [0.0, -step]] if isotropic else []))
    sharpness = (distances(best + shifts).min() - distances(best[None])[0]) / on_box.sum()
    if sharpness < cfg.min_sharpness_m:
        return None
    return np.array([best[0] * cos - best[1] * sin, best[0] * sin + best[1] * cos])
