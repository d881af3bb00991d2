"""RViz markers and a BEV debug image for detections (numpy only)."""
from __future__ import annotations

from collections import deque

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Vector3
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from sparsecomp_core.models.head.boxes import CLASS_NAMES, OCCLUSION_NAMES

from .conversions import yaw_quaternion

CLASS_RGB = np.array([[0.9, 0.2, 0.2], [0.2, 0.4, 0.9], [0.95, 0.75, 0.1], [0.7, 0.3, 0.8],
                      [0.1, 0.75, 0.4], [0.4, 0.8, 0.8], [1.0, 0.5, 0.0], [0.95, 0.95, 0.95]])
OCCLUSION_ALPHA = (0.8, 0.6, 0.4, 0.25)   # more occluded: more transparent


class Trails:
    """Short per-id position history (in a fixed frame) for trail markers."""

    def __init__(self, length: int = 10):
        self.length = length
        self._trails: dict[int, deque] = {}

    def update(self, ids: np.ndarray, positions_fixed: np.ndarray) -> None:
        alive = set(int(i) for i in ids)
        for i, position in zip(ids, positions_fixed):
            self._trails.setdefault(int(i), deque(maxlen=self.length)).append(np.asarray(position, dtype=np.float64))
        for stale in [i for i in self._trails if i not in alive]:
            del self._trails[stale]

    def get(self, object_id: int) -> list[np.ndarray]:
        return list(self._trails.get(int(object_id), ()))

    def clear(self) -> None:
        self._trails.clear()


def markers(detections: dict, header: Header, velocity_scale: float = 5.0, trails: Trails | None = None,
            fixed_to_frame: np.ndarray | None = None, lifetime_s: float = 0.3) -> MarkerArray:
    """Boxes (class colour, alpha by occlusion), velocity arrows (length = speed x
    velocity_scale x 0.1 s), text (id, class, score, occlusion) and trails."""
    boxes, labels, scores = detections["boxes"], detections["labels"], detections["scores"]
    ids, occlusion = detections["ids"], detections["occlusion"]
    out = [Marker(header=header, action=Marker.DELETEALL)]
    lifetime = Duration(sec=int(lifetime_s), nanosec=int((lifetime_s % 1) * 1e9))
    for i in range(len(scores)):
        x, y, z, length, width, height, yaw, vx, vy, vz = (float(v) for v in boxes[i])
        rgb = CLASS_RGB[int(labels[i])]
        colour = ColorRGBA(r=float(rgb[0]), g=float(rgb[1]), b=float(rgb[2]), a=OCCLUSION_ALPHA[int(occlusion[i])])
        box = Marker(header=header, ns="boxes", id=int(i), type=Marker.CUBE, action=Marker.ADD, color=colour,
                     scale=Vector3(x=length, y=width, z=height), lifetime=lifetime)
        box.pose.position.x, box.pose.position.y, box.pose.position.z = x, y, z
        box.pose.orientation = yaw_quaternion(yaw)
        out.append(box)
        arrow = Marker(header=header, ns="velocity", id=int(i), type=Marker.ARROW, action=Marker.ADD, lifetime=lifetime,
                       color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.9), scale=Vector3(x=0.15, y=0.3, z=0.3),
                       points=[Point(x=x, y=y, z=z + height / 2),
                               Point(x=x + vx * velocity_scale * 0.1, y=y + vy * velocity_scale * 0.1,
                                     z=z + height / 2 + vz * velocity_scale * 0.1)])
        out.append(arrow)
        text = Marker(header=header, ns="labels", id=int(i), type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                      lifetime=lifetime, color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0), scale=Vector3(z=0.6),
                      text=f"#{int(ids[i])} {CLASS_NAMES[int(labels[i])]} {float(scores[i]):.2f}\n"
                           f"{OCCLUSION_NAMES[int(occlusion[i])]}")
        text.pose.position.x, text.pose.position.y, text.pose.position.z = x, y, z + height / 2 + 0.6
        out.append(text)
        if trails is not None and fixed_to_frame is not None:
            history = trails.get(int(ids[i]))
            if len(history) > 1:
                points = np.array(history) @ fixed_to_frame[:3, :3].T + fixed_to_frame[:3, 3]
                out.append(Marker(header=header, ns="trails", id=int(i), type=Marker.LINE_STRIP, action=Marker.ADD,
                                  lifetime=lifetime, color=colour, scale=Vector3(x=0.1),
                                  points=[Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points]))
    return MarkerArray(markers=out)


def bev_image(detections: dict, points: np.ndarray | None, x_range=(-40.0, 62.4), y_range=(-44.8, 44.8),
              resolution: float = 0.2, ground_truth: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 top view (x up, y left): LiDAR points grey, ground-truth
    box outlines white, detections filled in class colours with a velocity line."""
    height = int(round((x_range[1] - x_range[0]) / resolution))
    width = int(round((y_range[1] - y_range[0]) / resolution))
    image = np.full((height, width, 3), 18, dtype=np.uint8)

    def to_pixel(xy: np.ndarray) -> np.ndarray:
        rows = (x_range[1] - xy[:, 0]) / resolution
        cols = (y_range[1] - xy[:, 1]) / resolution
        return np.stack([rows, cols], 1)

    if points is not None and len(points):
        finite = points[np.isfinite(points[:, :3]).all(1)]
        pix = to_pixel(finite[:, :2]).astype(int)
        keep = (pix[:, 0] >= 0) & (pix[:, 0] < height) & (pix[:, 1] >= 0) & (pix[:, 1] < width)
        image[pix[keep, 0], pix[keep, 1]] = 110

    def corners(box: np.ndarray) -> np.ndarray:
        c, s = np.cos(box[6]), np.sin(box[6])
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * box[3:5] / 2
        return local @ np.array([[c, s], [-s, c]]) + box[:2]

    def fill(polygon_px: np.ndarray, colour) -> None:
        r0, c0 = np.floor(polygon_px.min(0)).astype(int)
        r1, c1 = np.ceil(polygon_px.max(0)).astype(int)
        r0, c0, r1, c1 = max(r0, 0), max(c0, 0), min(r1, height - 1), min(c1, width - 1)
        if r1 < r0 or c1 < c0:
            return
        rr, cc = np.mgrid[r0:r1 + 1, c0:c1 + 1]
        crosses = [(polygon_px[(k + 1) % 4][0] - polygon_px[k][0]) * (cc - polygon_px[k][1])
                   - (polygon_px[(k + 1) % 4][1] - polygon_px[k][1]) * (rr - polygon_px[k][0]) for k in range(4)]
        inside = np.all([c <= 0 for c in crosses], axis=0) | np.all([c >= 0 for c in crosses], axis=0)
        image[rr[inside], cc[inside]] = colour

    if ground_truth is not None:
        for box in ground_truth:
            for p in to_pixel(corners(box)).astype(int):
                if 0 <= p[0] < height and 0 <= p[1] < width:
                    image[max(p[0] - 1, 0):p[0] + 2, max(p[1] - 1, 0):p[1] + 2] = 255
    boxes = np.asarray(detections["boxes"])
    for box, label in zip(boxes, np.asarray(detections["labels"])):
        fill(to_pixel(corners(box)), (CLASS_RGB[int(label)] * 255).astype(np.uint8))
        start, end = to_pixel(box[None, :2])[0], to_pixel(box[None, :2] + box[None, 7:9] * 0.5)[0]
        for t in np.linspace(0, 1, 12):
            r, c = (start + (end - start) * t).astype(int)
            if 0 <= r < height and 0 <= c < width:
                image[r, c] = 255
    return image
