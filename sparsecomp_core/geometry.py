"""Camera geometry: intrinsics, extrinsics, projection, camera neighbourhoods.

Conventions (used by the model, the data generator and the ROS nodes):
- ego frame: x forward, y left, z up; camera frame: x right, y down, z forward.
- ``intrinsics`` map camera coordinates to continuous pixel coordinates in
  which pixel ``i`` spans ``[i, i + 1)`` (its centre is ``i + 0.5``). With
  this convention a feature map of stride ``s`` has intrinsics ``K / s``
  (first two rows) exactly.
- ``cam2ego`` is a 4x4 rigid transform, camera -> ego.
- A box is [x, y, z, l, w, h, yaw, vx, vy, vz] (``transform_boxes``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


def pinhole_intrinsics(hfov_deg: float, width: int, height: int) -> Tensor:
    """[3, 3] intrinsics of a centred pinhole with square pixels and the given horizontal FOV."""
    focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def cam2ego_from_heading(yaw_deg: float, pitch_deg: float = 0.0,
                         position: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    """[4, 4] camera -> ego for a camera whose optical axis has heading ``yaw_deg``
    (counter-clockwise from ego +x) and is pitched down by ``pitch_deg``; no roll."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    forward = torch.tensor([math.cos(yaw) * math.cos(pitch), math.sin(yaw) * math.cos(pitch), -math.sin(pitch)])
    right = torch.tensor([math.sin(yaw), -math.cos(yaw), 0.0])
    down = torch.linalg.cross(forward, right)
    transform = torch.eye(4)
    transform[:3, 0], transform[:3, 1], transform[:3, 2] = right, down, forward
    transform[:3, 3] = torch.tensor(position)
    return transform


def scale_intrinsics(intrinsics: Tensor, scale: float) -> Tensor:
    """Intrinsics [..., 3, 3] of an image resized by ``scale`` (e.g. 1/stride)."""
    scaled = intrinsics.clone()
    scaled[..., :2, :] = scaled[..., :2, :] * scale
    return scaled


def transform_points(transform: Tensor, points: Tensor) -> Tensor:
    """Apply [..., 4, 4] transforms to [..., N, 3] points (broadcasting batch dims)."""
    return points @ transform[..., :3, :3].transpose(-1, -2) + transform[..., None, :3, 3]


def transform_boxes(boxes: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Boxes [N, 10] (x, y, z, l, w, h, yaw, vx, vy, vz) moved by the rigid transform
    [4, 4]: ``ego2global`` takes ego-frame boxes to the global frame, its inverse takes
    them back. Centres are transformed, velocities rotated (NaN, an unknown velocity,
    stays NaN), yaw turned by the transform's heading atan2(R[1, 0], R[0, 0]), sizes
    kept. The yaw rule is exact for rotations about z (generated poses; real vehicle
    poses tilt by a degree or two). The one box transform of the generator, the
    loader and the node. Returns a new float64 array [N, 10]."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 10)
    transform = np.asarray(transform, dtype=np.float64)
    out = boxes.copy()
    out[:, :3] = boxes[:, :3] @ transform[:3, :3].T + transform[:3, 3]
    out[:, 6] = boxes[:, 6] + math.atan2(transform[1, 0], transform[0, 0])
    out[:, 7:10] = boxes[:, 7:10] @ transform[:3, :3].T
    return out


def project_points(intrinsics: Tensor, points_cam: Tensor, min_depth: float = 0.1) -> tuple[Tensor, Tensor]:
    """Project [..., N, 3] camera-frame points with [..., 3, 3] intrinsics.

    Returns pixel coordinates [..., N, 2] and ``in_front`` [..., N] (depth > min_depth).
    Points behind the camera get finite but meaningless coordinates.
    """
    depth = points_cam[..., 2]
    in_front = depth > min_depth
    safe_depth = torch.where(in_front, depth, torch.ones_like(depth))
    pixels = points_cam @ intrinsics.transpose(-1, -2)
    return pixels[..., :2] / safe_depth[..., None], in_front


def horizontal_fov_interval(intrinsics: Tensor, cam2ego: Tensor, width: int) -> tuple[float, float]:
    """(start, end) headings in radians, counter-clockwise, covered by one camera's
    image columns, from its [3, 3] intrinsics and [4, 4] cam2ego."""
    fx, cx = float(intrinsics[0, 0]), float(intrinsics[0, 2])
    edges = []
    for u in (float(width), 0.0):  # right edge is clockwise of the left edge
        ray_cam = torch.tensor([(u - cx) / fx, 0.0, 1.0], dtype=cam2ego.dtype)
        ray_ego = cam2ego[:3, :3] @ ray_cam
        edges.append(math.atan2(float(ray_ego[1]), float(ray_ego[0])))
    start, end = edges
    if end < start:
        end += 2 * math.pi
    return start, end


def _arc_overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Length (rad) of the intersection of two counter-clockwise arcs."""
    best = 0.0
    for shift in (-2 * math.pi, 0.0, 2 * math.pi):
        lo, hi = max(a[0], b[0] + shift), min(a[1], b[1] + shift)
        best = max(best, hi - lo)
    return best


def _heading_distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    diff = abs((a[0] + a[1]) / 2 - (b[0] + b[1]) / 2) % (2 * math.pi)
    return min(diff, 2 * math.pi - diff)


def camera_neighbours(intrinsics: Tensor, cam2ego: Tensor, width: int, group_size: int = 3) -> Tensor:
    """For every camera, itself and its ``group_size - 1`` neighbours.

    Neighbours are the cameras whose horizontal field of view overlaps the
    camera's most; ties (e.g. no overlap) go to the closer optical-axis
    heading, then to the lower index.

    Args: intrinsics [V, 3, 3], cam2ego [V, 4, 4], image width in pixels.
    Returns: LongTensor [V, group_size], column 0 = the camera itself.
    """
    num_cameras = intrinsics.shape[0]
    group_size = min(group_size, num_cameras)
    arcs = [horizontal_fov_interval(intrinsics[i], cam2ego[i], width) for i in range(num_cameras)]
    table = []
    for i in range(num_cameras):
        others = sorted((j for j in range(num_cameras) if j != i),
                        key=lambda j: (-round(_arc_overlap(arcs[i], arcs[j]), 9),
                                       round(_heading_distance(arcs[i], arcs[j]), 9), j))
        table.append([i] + others[:group_size - 1])
    return torch.tensor(table, dtype=torch.long)


@dataclass
class Calibration:
    """Camera calibration of a batch at model-input resolution.

    intrinsics: [B, V, 3, 3] float32; cam2ego: [B, V, 4, 4] float32;
    image_size: (H, W) of the model input. Derived tables (camera
    neighbourhoods) are cached on the object: build a new Calibration when the
    calibration changes.
    """
    intrinsics: Tensor
    cam2ego: Tensor
    image_size: tuple[int, int]
    _neighbour_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.intrinsics.dim() != 4 or self.intrinsics.shape[-2:] != (3, 3):
            raise ValueError(f"intrinsics must be [B, V, 3, 3], got {tuple(self.intrinsics.shape)}")
        if self.cam2ego.shape[:2] != self.intrinsics.shape[:2] or self.cam2ego.shape[-2:] != (4, 4):
            raise ValueError(f"cam2ego must be [B, V, 4, 4] matching intrinsics, got {tuple(self.cam2ego.shape)}")

    @property
    def num_cameras(self) -> int:
        return self.intrinsics.shape[1]

    def at_stride(self, stride: float) -> Tensor:
        """Intrinsics [B, V, 3, 3] of a feature map with this stride."""
        return scale_intrinsics(self.intrinsics, 1.0 / stride)

    def neighbours(self, group_size: int) -> Tensor:
        """[V, group_size] camera groups (self first) from the first sample's calibration;
        a batch shares one rig."""
        if group_size not in self._neighbour_cache:
            self._neighbour_cache[group_size] = camera_neighbours(
                self.intrinsics[0].detach().cpu().double(), self.cam2ego[0].detach().cpu().double(),
                self.image_size[1], group_size).to(self.intrinsics.device)
        return self._neighbour_cache[group_size]

    def to(self, device: torch.device | str) -> "Calibration":
        return Calibration(self.intrinsics.to(device), self.cam2ego.to(device), self.image_size)
