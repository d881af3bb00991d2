"""LiDAR faults: no sweep, undecodable, empty or NaN sweeps; hysteresis."""
from __future__ import annotations

import numpy as np
import pytest

from sparsecomp_ros.lidar_health import (LIDAR_BAD_FORMAT, LIDAR_NO_CLOUD, LIDAR_OK, LIDAR_TOO_FEW_POINTS, LidarHealth,
                                         finite_points)


def sweep(points: int, nan_fraction: float = 0.0, seed: int = 0) -> np.ndarray:
    cloud = np.random.default_rng(seed).normal(0, 10, (points, 4)).astype(np.float32)
    cloud[: int(points * nan_fraction), 1] = np.nan
    return cloud


def test_finite_points_are_counted_exactly_where_the_verdict_depends_on_it():
    assert finite_points(sweep(0), 100) == 0
    assert finite_points(sweep(1000, nan_fraction=0.95), 100) == 50       # near the threshold: exact
    cloud = sweep(1000, nan_fraction=0.9)
    cloud[-1, 2] = np.inf
    assert finite_points(cloud, 100) == 99
    assert finite_points(sweep(120_000), 100) == 120_000                  # far above: estimated


def test_empty_or_nan_sweeps_fail_the_lidar_and_good_ones_recover_it():
    health = LidarHealth()
    verdicts = []
    for step in range(12):
        t = step * 0.1
        health.observe(t, sweep(20_000) if step < 2 or step >= 5 else
                       (np.zeros((0, 4), np.float32) if step % 2 else sweep(500, nan_fraction=1.0)))
        verdicts.append(health.assess(t + 0.01))
    assert [v["reason"] for v in verdicts[:5]] == [LIDAR_OK] * 2 + [LIDAR_TOO_FEW_POINTS] * 3
    assert [v["failed"] for v in verdicts[2:6]] == [False, True, True, True]
    assert "recovering" in verdicts[5]["message"] and not verdicts[-1]["failed"]


def test_a_silent_or_undecodable_lidar_is_reported_as_such():
    health = LidarHealth()
    assert health.assess(1.0)["reason"] == LIDAR_NO_CLOUD
    health.observe_bad(1.0, "truncated: 8 bytes for 10 points of 16 bytes")
    status = health.assess(1.01)
    assert status["reason"] == LIDAR_BAD_FORMAT and "truncated" in status["detail"]
    health.observe(1.1, sweep(5000))
    assert health.assess(1.8)["reason"] == LIDAR_NO_CLOUD                  # 0.7 s old
    assert health.assess(1.8)["cloud_age_s"] == pytest.approx(0.7)
