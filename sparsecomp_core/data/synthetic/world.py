"""A procedural road world: a winding road, an ego car with a varying speed,
and objects of the 8 classes moving along (or across) it.

Everything is a deterministic function of the seed and of time, so any
timestamp can be sampled exactly (positions, velocities, headings)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LANE_WIDTH = 3.5
# Class: (length, width, height), speed range m/s, where it lives.
CLASS_SPECS = {
    0: ((4.6, 1.9, 1.6), (4.0, 14.0)),     # car
    1: ((8.5, 2.5, 3.2), (3.0, 11.0)),     # truck
    2: ((11.5, 2.9, 3.3), (3.0, 10.0)),    # bus
    3: ((0.7, 0.7, 1.75), (0.6, 1.8)),     # person
    4: ((1.8, 0.7, 1.6), (2.5, 6.0)),      # non_motor (ridden)
    5: ((1.7, 0.6, 1.1), (0.0, 0.0)),      # riderless_non_motor (parked)
    6: ((2.0, 0.5, 1.0), (0.0, 0.0)),      # barrier
    7: ((0.4, 0.4, 0.8), (0.0, 0.0)),      # pillar (traffic cone / bollard)
}


@dataclass
class WorldConfig:
    road_length_m: float = 1500.0
    duration_s: float = 20.0
    max_ego_speed: float = 13.0
    vehicles_per_100m: float = 2.2          # per direction
    people_per_100m: float = 3.0
    cyclists_per_100m: float = 0.8
    parked_bikes_per_100m: float = 0.8
    barriers_per_100m: float = 1.2
    pillars_per_100m: float = 1.5


class Road:
    """Centreline sampled every 0.5 m; heading changes smoothly with arclength."""

    def __init__(self, rng: np.random.Generator, length: float):
        self.step = 0.5
        s = np.arange(0.0, length, self.step)
        curvature = np.zeros_like(s)
        for _ in range(3):
            amplitude = rng.uniform(0.002, 0.012)
            wavelength = rng.uniform(120.0, 400.0)
            curvature += amplitude * np.sin(2 * math.pi * s / wavelength + rng.uniform(0, 2 * math.pi))
        heading = np.cumsum(curvature) * self.step + rng.uniform(-math.pi, math.pi)
        xy = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1) * self.step, axis=0)
        self.s, self.heading, self.xy = s, heading, xy - xy[0] + rng.uniform(-500, 500, 2)

    def pose(self, s: np.ndarray, lateral: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global (x, y) [N, 2] and road heading [N] at arclength s, offset `lateral` to the left."""
        s = np.clip(s, 0.0, self.s[-1])
        heading = np.interp(s, self.s, np.unwrap(self.heading))
        base = np.stack([np.interp(s, self.s, self.xy[:, 0]), np.interp(s, self.s, self.xy[:, 1])], 1)
        normal = np.stack([-np.sin(heading), np.cos(heading)], 1)
        return base + normal * lateral[:, None], heading


@dataclass
class Actor:
    label: int
    size: tuple[float, float, float]
    s0: float              # arclength at t = 0
    speed: float           # along the road, signed
    lateral0: float        # offset from the centreline (left positive)
    lateral_speed: float   # crossing pedestrians
    heading_offset: float  # relative to the road heading (pi for oncoming traffic)
    colour_seed: int


class World:
    """Road, ego and actors of one sequence."""

    def __init__(self, seed: int, cfg: WorldConfig | None = None):
        self.cfg = cfg or WorldConfig()
        rng = np.random.default_rng(seed)
        self.road = Road(rng, self.cfg.road_length_m)
        # Ego speed: smooth random profile with occasional slow-downs.
        times = np.linspace(0, self.cfg.duration_s, 9)
        knots = rng.uniform(0.0, self.cfg.max_ego_speed, len(times))
        knots[rng.random(len(times)) < 0.2] = rng.uniform(0.0, 1.0)
        self._speed_t = np.linspace(0, self.cfg.duration_s + 5, 2000)
        self._speed_v = np.interp(self._speed_t, times, knots)
        self._s_ego = np.concatenate([[0.0], np.cumsum((self._speed_v[1:] + self._speed_v[:-1]) / 2 * np.diff(self._speed_t))])
        self.ego_s0 = 150.0
        self.actors = self._spawn(rng)

    def _spawn(self, rng: np.random.Generator) -> list[Actor]:
        cfg, length = self.cfg, self.cfg.road_length_m
        actors: list[Actor] = []

        def size_of(label: int) -> tuple[float, float, float]:
            base = np.array(CLASS_SPECS[label][0])
            return tuple(float(x) for x in base * rng.uniform(0.9, 1.1, 3))

        def count(per_100m: float) -> int:
            return rng.poisson(per_100m * length / 100.0)

        for direction, lanes in ((1, (-0.5, -1.5)), (-1, (0.5, 1.5))):       # right-hand traffic
            for _ in range(count(cfg.vehicles_per_100m)):
                label = int(rng.choice([0, 0, 0, 0, 1, 2]))
                lo, hi = CLASS_SPECS[label][1]
                parked = rng.random() < 0.1
                lateral = direction * -1 * 2.25 * LANE_WIDTH if parked else float(rng.choice(lanes)) * LANE_WIDTH
                actors.append(Actor(label, size_of(label), rng.uniform(0, length), 0.0 if parked else direction * rng.uniform(lo, hi),
                                    lateral + rng.normal(0, 0.2), 0.0, 0.0 if direction > 0 else math.pi, int(rng.integers(1 << 30))))
        for _ in range(count(cfg.people_per_100m)):
            side = rng.choice([-1, 1])
            crossing = rng.random() < 0.15
            speed = rng.uniform(*CLASS_SPECS[3][1])
            if crossing:
                actors.append(Actor(3, size_of(3), rng.uniform(0, length), 0.0, side * 9.0, -side * speed,
                                    -side * math.pi / 2, int(rng.integers(1 << 30))))
            else:
                direction = rng.choice([-1, 1])
                actors.append(Actor(3, size_of(3), rng.uniform(0, length), direction * speed, side * rng.uniform(8.5, 10.5), 0.0,
                                    0.0 if direction > 0 else math.pi, int(rng.integers(1 << 30))))
        for _ in range(count(cfg.cyclists_per_100m)):
            direction = rng.choice([-1, 1])
            actors.append(Actor(4, size_of(4), rng.uniform(0, length), direction * rng.uniform(*CLASS_SPECS[4][1]),
                                -direction * 7.3, 0.0, 0.0 if direction > 0 else math.pi, int(rng.integers(1 << 30))))
        for label, per_100m, offsets in ((5, cfg.parked_bikes_per_100m, (9.5, 10.5)), (6, cfg.barriers_per_100m, (7.9, 8.4)),
                                         (7, cfg.pillars_per_100m, (7.6, 8.2))):
            for _ in range(count(per_100m)):
                side = rng.choice([-1, 1])
                actors.append(Actor(label, size_of(label), rng.uniform(0, length), 0.0, side * rng.uniform(*offsets), 0.0,
                                    float(rng.uniform(-0.3, 0.3)), int(rng.integers(1 << 30))))
        return actors

    # --- ego -------------------------------------------------------------------------------
    def ego_state(self, t: float) -> tuple[np.ndarray, float, float]:
        """Global (x, y), heading and speed of the ego at time t (s). Before t = 0 (cameras that
        fire before a scene's first LiDAR time) the ego drives at its speed at t = 0."""
        s = self.ego_s0 + float(np.interp(t, self._speed_t, self._s_ego)) + min(t, 0.0) * float(self._speed_v[0])
        xy, heading = self.road.pose(np.array([s]), np.array([-0.5 * LANE_WIDTH]))
        return xy[0], float(heading[0]), float(np.interp(t, self._speed_t, self._speed_v))

    def ego2global(self, t: float) -> np.ndarray:
        xy, heading, _ = self.ego_state(t)
        pose = np.eye(4)
        pose[:2, :2] = [[math.cos(heading), -math.sin(heading)], [math.sin(heading), math.cos(heading)]]
        pose[:2, 3] = xy
        return pose

    # --- actors ----------------------------------------------------------------------------
    def actor_boxes(self, t: float) -> np.ndarray:
        """[N, 10] global boxes (x, y, z, l, w, h, yaw, vx, vy, vz) of all actors at t."""
        if not self.actors:
            return np.zeros((0, 10))

        def positions(time: float) -> tuple[np.ndarray, np.ndarray]:
            s = np.array([a.s0 + a.speed * time for a in self.actors])
            lateral = np.array([a.lateral0 + a.lateral_speed * time for a in self.actors])
            return self.road.pose(s, lateral)

        xy, heading = positions(t)
        xy_next, _ = positions(t + 0.05)
        xy_prev, _ = positions(t - 0.05)
        velocity = (xy_next - xy_prev) / 0.1
        sizes = np.array([a.size for a in self.actors])
        yaw = heading + np.array([a.heading_offset for a in self.actors])
        yaw = (yaw + math.pi) % (2 * math.pi) - math.pi
        return np.concatenate([xy, sizes[:, 2:3] / 2, sizes, yaw[:, None], velocity, np.zeros((len(xy), 1))], 1)

    def labels(self) -> np.ndarray:
        return np.array([a.label for a in self.actors], dtype=np.int64)
