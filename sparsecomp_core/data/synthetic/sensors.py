"""Synthetic cameras (z-buffered rendering) and LiDAR (ray casting).

Objects are boxes; the ground is the plane z = 0 of the ego frame, textured
in world coordinates (asphalt, lane markings, kerb, pavement, grass) so that
it moves consistently with the ego; objects have class-specific colours,
face shading, windows on vehicles and heads on people; each frame has
per-camera brightness noise and pixel noise."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from .raycast import GROUND, cast, visibility_counts
from .world import LANE_WIDTH, Road

CLASS_COLOURS = np.array([
    [0.75, 0.15, 0.12],   # car
    [0.20, 0.35, 0.75],   # truck
    [0.95, 0.75, 0.10],   # bus
    [0.55, 0.30, 0.60],   # person
    [0.10, 0.65, 0.35],   # non_motor
    [0.35, 0.75, 0.70],   # riderless_non_motor
    [0.95, 0.45, 0.05],   # barrier
    [0.98, 0.98, 0.98],   # pillar
])
FACE_SHADE = np.array([0.8, 0.62, 1.0])   # x faces, y faces, top/bottom
CLASS_REFLECTIVITY = np.array([120.0, 110.0, 110.0, 45.0, 60.0, 60.0, 90.0, 180.0])


class GroundTexture:
    """Colour of the ground at global (x, y) from the road's geometry."""

    def __init__(self, road: Road):
        self.road = road
        self.tree = cKDTree(road.xy)
        self.normals = np.stack([-np.sin(road.heading), np.cos(road.heading)], 1)

    def colours(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """RGB [N, 3] in [0, 1] and LiDAR intensity [N] for global points [N, 2]."""
        _, index = self.tree.query(xy)
        lateral = ((xy - self.road.xy[index]) * self.normals[index]).sum(1)
        s = self.road.s[index]
        cells = np.floor(xy * 2.0).astype(np.int64)
        noise = ((cells[:, 0] * 73856093) ^ (cells[:, 1] * 19349663)) % 1000 / 1000.0
        colour = np.empty((len(xy), 3))
        intensity = np.full(len(xy), 12.0)
        road = np.abs(lateral) < 2 * LANE_WIDTH + 0.3
        pavement = ~road & (np.abs(lateral) < 11.0)
        colour[road] = (0.28 + 0.06 * noise[road])[:, None]
        colour[pavement] = (0.55 + 0.08 * noise[pavement])[:, None] * np.array([1.0, 0.97, 0.9])
        grass = ~road & ~pavement
        colour[grass] = np.array([0.22, 0.45, 0.18]) * (0.8 + 0.4 * noise[grass])[:, None]
        centre = np.abs(lateral) < 0.12
        dashed = (np.abs(np.abs(lateral) - LANE_WIDTH) < 0.08) & ((s % 9.0) < 4.5)
        edge = np.abs(np.abs(lateral) - 2 * LANE_WIDTH) < 0.1
        colour[centre] = [0.9, 0.8, 0.2]
        colour[dashed | edge] = 0.92
        intensity[centre | dashed | edge] = 180.0
        intensity[grass] = 25.0
        return colour, intensity


def camera_rays(intrinsics: np.ndarray, cam2ego: np.ndarray, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ego-frame ray origins and unit directions [H*W, 3] through pixel centres."""
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    pixels = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1)
    directions = pixels @ np.linalg.inv(intrinsics).T @ cam2ego[:3, :3].T
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.broadcast_to(cam2ego[:3, 3], directions.shape)
    return torch.from_numpy(np.ascontiguousarray(origins)).float(), torch.from_numpy(directions).float()


def render_camera(boxes_ego: np.ndarray, labels: np.ndarray, tints: np.ndarray, intrinsics: np.ndarray,
                  cam2ego: np.ndarray, size: tuple[int, int], ego2global: np.ndarray, ground: GroundTexture,
                  rng: np.random.Generator, max_range: float = 200.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image [H, W, 3] uint8 and, per box, (visible pixels, pixels it would cover unoccluded)."""
    height, width = size
    origins, directions = camera_rays(intrinsics, cam2ego, height, width)
    hits = cast(origins, directions, torch.from_numpy(boxes_ego[:, :7]).float(), max_range)
    obj, t, axis = hits["object"].numpy(), hits["t"].numpy(), hits["axis"].numpy()
    dirs = directions.numpy()
    points = origins.numpy() + dirs * np.where(np.isfinite(t), t, 0.0)[:, None]
    image = np.empty((height * width, 3))
    # sky: brighter toward the horizon
    sky = obj < 0
    sky &= obj != GROUND
    elevation = np.clip(dirs[:, 2], 0.0, 1.0)
    image[sky] = np.array([0.62, 0.75, 0.92]) - elevation[sky, None] * np.array([0.3, 0.25, 0.1])
    is_ground = obj == GROUND
    if is_ground.any():
        world_xy = points[is_ground, :2] @ ego2global[:2, :2].T + ego2global[:2, 3]
        image[is_ground] = ground.colours(world_xy)[0]
    on_box = obj >= 0
    if on_box.any():
        idx = obj[on_box]
        colour = CLASS_COLOURS[labels[idx]] * tints[idx, None] * FACE_SHADE[axis[on_box]][:, None]
        rel_height = (points[on_box, 2] - (boxes_ego[idx, 2] - boxes_ego[idx, 5] / 2)) / boxes_ego[idx, 5]
        window = np.isin(labels[idx], [0, 1, 2]) & (rel_height > 0.55) & (rel_height < 0.92) & (axis[on_box] != 2)
        colour[window] = [0.15, 0.2, 0.28]
        head = (labels[idx] == 3) & (rel_height > 0.85)
        colour[head] = [0.85, 0.65, 0.5]
        image[on_box] = colour
    image *= rng.uniform(0.85, 1.15)                                        # exposure / lighting
    image += rng.normal(0.0, 0.015, image.shape)
    visible, reachable = visibility_counts(hits, len(boxes_ego), max_range)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8).reshape(height, width, 3), visible.numpy(), reachable.numpy()


def cast_lidar(boxes_ego: np.ndarray, labels: np.ndarray, lidar2ego: np.ndarray, ego2global: np.ndarray,
               ground: GroundTexture, rng: np.random.Generator, beams: int = 32, azimuth_steps: int = 1024,
               elevation_range: tuple[float, float] = (-25.0, 10.0), max_range: float = 70.0) -> tuple[np.ndarray, np.ndarray]:
    """Points [N, 5] (x, y, z, intensity 0-255, ring) in the LiDAR frame, and
    the number of points on each box [M]."""
    elevation = np.radians(np.linspace(*elevation_range, beams))
    azimuth = np.linspace(-math.pi, math.pi, azimuth_steps, endpoint=False)
    elev, azim = np.meshgrid(elevation, azimuth, indexing="ij")
    local = np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)], -1).reshape(-1, 3)
    directions = local @ lidar2ego[:3, :3].T
    origins = np.broadcast_to(lidar2ego[:3, 3], directions.shape)
    hits = cast(torch.from_numpy(np.ascontiguousarray(origins)).float(), torch.from_numpy(directions).float(),
                torch.from_numpy(boxes_ego[:, :7]).float(), max_range)
    obj, t = hits["object"].numpy(), hits["t"].numpy()
    keep = np.isfinite(t)
    t_noisy = t[keep] + rng.normal(0.0, 0.02, keep.sum())
    points_ego = origins[keep] + directions[keep] * t_noisy[:, None]
    intensity = np.empty(keep.sum())
    kept_obj = obj[keep]
    ground_hit = kept_obj == GROUND
    if ground_hit.any():
        world_xy = points_ego[ground_hit, :2] @ ego2global[:2, :2].T + ego2global[:2, 3]
        intensity[ground_hit] = ground.colours(world_xy)[1]
    box_hit = kept_obj >= 0
    intensity[box_hit] = CLASS_REFLECTIVITY[labels[kept_obj[box_hit]]]
    intensity = np.clip(intensity * (1.0 - t[keep] / (2 * max_range)) + rng.normal(0, 3.0, len(intensity)), 0, 255)
    ring = np.repeat(np.arange(beams), azimuth_steps)[keep]
    points_lidar = (points_ego - lidar2ego[:3, 3]) @ lidar2ego[:3, :3]
    counts = np.bincount(kept_obj[box_hit], minlength=len(boxes_ego))
    return np.concatenate([points_lidar, intensity[:, None], ring[:, None]], 1).astype(np.float32), counts
