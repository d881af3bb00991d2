"""Multi-sweep LiDAR: the last N sweeps in the current ego frame, with a time channel.

One sweep carries no speed; several do: a moving object's points of successive
sweeps lie along its path, a static object's on one spot once the ego motion
is compensated. As CenterPoint and BEVFusion do (mmdet3d's
``LoadPointsFromMultiSweeps``), every sweep is moved into the reference
(current) frame through the poses and each point gets its time lag
``t_ref - t_sweep`` in seconds, so the pillar encoder can tell old points from
new. ``merge_sweeps`` is the one implementation: the data loader calls it with
the previous sweeps of a data set, the perception node with its rolling buffer
of clouds and their tf poses.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

SWEEP_POINT_CHANNELS = 5          # x, y, z, intensity, dt_s


def merge_sweeps(sweeps: Sequence[tuple[np.ndarray, np.ndarray, int]], ego2global_ref: np.ndarray,
                 timestamp_us_ref: int) -> np.ndarray:
    """Sweeps merged into the reference ego frame, with each point's time lag.

    sweeps: (points, ego2global, timestamp_us) per sweep, in any order (normally
      the reference sweep first, then older ones):
      - points [N_i, >=4]: x, y, z in metres in *that sweep's* ego frame
        (base_link at the sweep's time), intensity as the sensor gives it
        (0-255); further columns (e.g. ring) are ignored;
      - ego2global [4, 4]: that sweep's pose, ego -> odom/map;
      - timestamp_us: the sweep's stamp, integer microseconds.
    ego2global_ref [4, 4], timestamp_us_ref: the frame the model runs on.

    Returns [M, 5] float32, M = sum of N_i, the sweeps concatenated in the
    given order: x, y, z = inv(ego2global_ref) @ ego2global_i @ (x, y, z, 1)
    (computed in float64; a sweep whose pose equals the reference pose is
    copied exactly), intensity unchanged, and
    dt_s = (timestamp_us_ref - timestamp_us_i) / 1e6, in seconds: 0 for the
    reference sweep, positive for older ones. Non-finite points stay non-finite
    (the LiDAR branch drops them). Raises ValueError for a sweep stamped after
    the reference (negative dt) or points with fewer than 4 columns.
    """
    ego2global_ref = np.asarray(ego2global_ref, dtype=np.float64)
    ref_inverse = np.linalg.inv(ego2global_ref)
    merged = []
    for points, ego2global, timestamp_us in sweeps:
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] < 4:
            raise ValueError(f"sweep points must be [N, >=4] (x, y, z, intensity), got shape {points.shape}")
        lag_us = int(timestamp_us_ref) - int(timestamp_us)
        if lag_us < 0:
            raise ValueError(f"a sweep stamped {timestamp_us} us is newer than the reference "
                             f"({timestamp_us_ref} us): sweeps must not come from the future")
        ego2global = np.asarray(ego2global, dtype=np.float64)
        out = np.empty((len(points), SWEEP_POINT_CHANNELS), dtype=np.float32)
        if np.array_equal(ego2global, ego2global_ref):     # the reference sweep: copied exactly
            out[:, :3] = points[:, :3]
        else:
            sweep2ref = ref_inverse @ ego2global
            out[:, :3] = points[:, :3].astype(np.float64) @ sweep2ref[:3, :3].T + sweep2ref[:3, 3]
        out[:, 3] = points[:, 3]
        out[:, 4] = lag_us / 1e6
        merged.append(out)
    if not merged:
        return np.zeros((0, SWEEP_POINT_CHANNELS), dtype=np.float32)
    return np.concatenate(merged)


def previous_sweeps(layout, reference: dict, count: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The reference LiDAR sample_data record and up to ``count - 1`` sweeps
    before it, newest first, as ``merge_sweeps`` takes them: (points in that
    sweep's ego frame [N, 4], its ego2global [4, 4], timestamp_us).

    Follows the ``prev`` links of the LiDAR's sample_data: in nuScenes they
    pass through the non-key-frame sweeps between samples; in generated data
    every sweep is a key frame, so they are the previous frames of the 10 Hz
    sequence. The chain ends at the start of a scene (fewer sweeps there).
    ``layout``: a ``NuScenesLayout``."""
    table = layout.tables["sample_data"]
    sweeps, record = [], reference
    while record is not None and len(sweeps) < count:
        sweeps.append((layout.lidar_points(record), layout.ego2global(record), int(record["timestamp"])))
        record = table.get(record.get("prev") or "")
    return sweeps
