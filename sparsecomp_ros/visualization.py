"""RViz markers for detections, and the debug picture a person looks at:
camera thumbnails in the rig's layout around a BEV of LiDAR, detections and
ground truth, with failed cameras marked (drawn with PIL's ImageDraw)."""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Vector3
from PIL import Image, ImageDraw, ImageFont
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from sparsecomp_core.models.head.boxes import CLASS_NAMES, OCCLUSION_NAMES

from .camera_health import FAULT_NAMES
from .conversions import yaw_quaternion

if TYPE_CHECKING:
    from sparsecomp_core.rig import RigConfig

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


# ---------------------------------------------------------------------------
# Debug picture: camera thumbnails in rig layout around a BEV, drawn with PIL.
# ---------------------------------------------------------------------------

DEFAULT_BEV_RANGE = (-40.0, 62.4, -44.8, 44.8)   # x_min, x_max, y_min, y_max (m): the models' BEV grid
DEFAULT_SIZE = (1280, 900)                        # width, height of the debug picture
EGO_OUTLINE = (-1.0, 3.7, 0.95)                   # rear, front (m from the ego origin), half width
VELOCITY_ARROW_S = 1.0                            # a velocity arrow shows where the object is in this many s
RING_STEP_M = 10.0
MATCH_DISTANCE_M = 2.0                            # ground truth counts as detected: same class within this
BACKGROUND, BEV_BACKGROUND, PANEL_TEXT = (28, 30, 36), (12, 14, 18), (215, 218, 224)
POINT_GROUND, POINT_RAISED = (88, 92, 100), (205, 210, 218)
RING_COLOUR, RING_TEXT = (40, 72, 110), (95, 140, 190)
GT_COLOUR = (235, 235, 235)
FAILED_RGB, WARN_RGB, OK_RGB = (235, 50, 50), (245, 170, 40), (90, 200, 110)
FOV_FILL = (235, 45, 45, 70)
# The markers' class colours, but pillar tan instead of white (white is ground truth here).
CLASS_COLOURS = [tuple(int(round(v * 255)) for v in rgb) for rgb in CLASS_RGB[:-1]] + [(200, 160, 115)]
EGO_FILL = (225, 228, 235)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class BevMapping:
    """Ego metres -> picture pixels of a top view (x forward = up, y left = left)."""
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    px_per_m: float
    box: tuple[int, int, int, int]        # left, top, right, bottom of the drawn range in the picture

    def to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] ego (x, y) in m -> [..., 2] picture (column, row) in pixels (float)."""
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([self.box[0] + (self.y_range[1] - xy[..., 1]) * self.px_per_m,
                         self.box[1] + (self.x_range[1] - xy[..., 0]) * self.px_per_m], -1)

    def local(self) -> "BevMapping":
        """The same mapping for an image holding just ``box``."""
        return BevMapping(self.x_range, self.y_range, self.px_per_m,
                          (0, 0, self.box[2] - self.box[0], self.box[3] - self.box[1]))


@dataclass(frozen=True)
class ThumbLayout:
    """Where one camera's thumbnail goes: frame = caption strip + image; the
    reason band (failure text) lies over the bottom of the image."""
    name: str
    side: str                                  # top, left, right, bottom
    frame: tuple[int, int, int, int]           # left, top, right, bottom
    caption: tuple[int, int, int, int]
    image: tuple[int, int, int, int]
    reason: tuple[int, int, int, int]


@dataclass(frozen=True)
class DebugLayout:
    size: tuple[int, int]                      # width, height
    header: tuple[int, int, int, int]
    bev: BevMapping
    thumbs: dict[str, ThumbLayout]
    legend: tuple[int, int, int, int]


def _ray_side(origin: tuple[float, float], rect: tuple[int, int, int, int], yaw_deg: float) -> tuple[str, float, float]:
    """Which edge of ``rect`` a ray from ``origin`` along ego heading ``yaw_deg``
    leaves through (picture axes: forward = up, left = left), and where."""
    dx, dy = -math.sin(math.radians(yaw_deg)), -math.cos(math.radians(yaw_deg))
    hits = []
    if dx < -1e-9:
        hits.append(((rect[0] - origin[0]) / dx, "left"))
    if dx > 1e-9:
        hits.append(((rect[2] - origin[0]) / dx, "right"))
    if dy < -1e-9:
        hits.append(((rect[1] - origin[1]) / dy, "top"))
    if dy > 1e-9:
        hits.append(((rect[3] - origin[1]) / dy, "bottom"))
    t, side = min(hits)
    return side, origin[0] + t * dx, origin[1] + t * dy


def _spread(wanted: list[float], size: float, gap: float, low: float, high: float) -> list[float]:
    """Centres near ``wanted`` (sorted) for items of ``size`` that neither overlap nor leave [low, high]."""
    centres = [min(max(w, low + size / 2), high - size / 2) for w in wanted]
    for i in range(1, len(centres)):
        centres[i] = max(centres[i], centres[i - 1] + size + gap)
    if centres:
        centres[-1] = min(centres[-1], high - size / 2)
    for i in range(len(centres) - 2, -1, -1):
        centres[i] = min(centres[i], centres[i + 1] - size - gap)
    return centres


@lru_cache(maxsize=16)
def _layout(cameras: tuple[tuple[str, float], ...], aspect: float, size: tuple[int, int],
            bev_range: tuple[float, float, float, float]) -> DebugLayout:
    width, height = size
    gap, header_h = 6, 26
    legend_w = int(round(width * 0.2))
    area_w = width - legend_w
    thumb_w = int(round(area_w * 0.2))
    caption_h = 16
    image_h = int(round(thumb_w / aspect))
    thumb_h = caption_h + image_h
    bev_rect = (thumb_w + 2 * gap, header_h + thumb_h + 2 * gap, area_w - thumb_w - 2 * gap,
                height - thumb_h - 2 * gap)
    x_min, x_max, y_min, y_max = bev_range
    scale = min((bev_rect[2] - bev_rect[0]) / (y_max - y_min), (bev_rect[3] - bev_rect[1]) / (x_max - x_min))
    drawn_w, drawn_h = int(round((y_max - y_min) * scale)), int(round((x_max - x_min) * scale))
    left = bev_rect[0] + (bev_rect[2] - bev_rect[0] - drawn_w) // 2
    top = bev_rect[1] + (bev_rect[3] - bev_rect[1] - drawn_h) // 2
    bev = BevMapping((x_min, x_max), (y_min, y_max), scale, (left, top, left + drawn_w, top + drawn_h))
    ego = tuple(bev.to_pixel(np.zeros(2)))
    by_side: dict[str, list] = {}
    for index, (name, yaw) in enumerate(cameras):
        side, col, row = _ray_side(ego, bev.box, yaw)
        by_side.setdefault(side, []).append((col if side in ("top", "bottom") else row, index, name))
    thumbs = {}
    for side, entries in by_side.items():
        entries.sort()
        horizontal = side in ("top", "bottom")
        low, high = (gap, area_w - gap) if horizontal else (bev.box[1], bev.box[3])
        count = len(entries)
        along = thumb_w if horizontal else thumb_h
        shrink = min(1.0, (high - low - (count - 1) * gap) / (count * along))
        w, img_h = int(thumb_w * shrink), int(image_h * shrink)
        h = caption_h + img_h
        centres = _spread([e[0] for e in entries], w if horizontal else h, gap, low, high)
        for (_, _, name), centre in zip(entries, centres):
            if horizontal:
                l = int(round(centre - w / 2))
                t = header_h + gap if side == "top" else height - gap - h
            else:
                t = int(round(centre - h / 2))
                l = gap + (thumb_w - w) // 2 if side == "left" else area_w - gap - thumb_w + (thumb_w - w) // 2
            frame = (l, t, l + w, t + h)
            image = (l, t + caption_h, l + w, t + h)
            band = min(img_h, 30)
            thumbs[name] = ThumbLayout(name, side, frame, (l, t, l + w, t + caption_h), image,
                                       (l, t + h - band, l + w, t + h))
    return DebugLayout(size, (0, 0, width, header_h), bev, thumbs, (area_w, header_h, width, height))


def _bev_range(bev_range_m) -> tuple[float, float, float, float]:
    if np.isscalar(bev_range_m):
        r = float(bev_range_m)
        return (-r, r, -r, r)
    return tuple(float(v) for v in bev_range_m)


def debug_layout(rig: RigConfig, size: tuple[int, int] = DEFAULT_SIZE,
                 bev_range_m: float | tuple[float, float, float, float] = DEFAULT_BEV_RANGE) -> DebugLayout:
    """Where ``debug_picture`` puts things: the BEV's metre -> pixel mapping,
    each camera's thumbnail (placed around the BEV where a ray from the ego
    along the camera's heading leaves it), the header and the legend."""
    return _layout(tuple((c.name, float(c.yaw_deg)) for c in rig.cameras), rig.image_width / rig.image_height,
                   (int(size[0]), int(size[1])), _bev_range(bev_range_m))


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """[N, 4, 2] ego (x, y) corners of [N, >=7] boxes: front-left, front-right, rear-right, rear-left."""
    boxes = np.atleast_2d(np.asarray(boxes, dtype=np.float64))
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, -0.5], [-0.5, 0.5]])[None] * boxes[:, None, 3:5]
    x = local[..., 0] * c[:, None] - local[..., 1] * s[:, None] + boxes[:, None, 0]
    y = local[..., 0] * s[:, None] + local[..., 1] * c[:, None] + boxes[:, None, 1]
    return np.stack([x, y], -1)


def _matched_truth(detections: dict, truth_boxes: np.ndarray, truth_labels: np.ndarray | None) -> np.ndarray:
    """[M] bool: ground truth with a detection of its class (any class without
    ``truth_labels``) within MATCH_DISTANCE_M, greedy by score."""
    matched = np.zeros(len(truth_boxes), dtype=bool)
    boxes = np.asarray(detections.get("boxes", np.zeros((0, 10))), dtype=np.float64).reshape(-1, 10)
    if not len(boxes) or not len(truth_boxes):
        return matched
    labels = np.asarray(detections["labels"]).astype(int)
    scores = np.asarray(detections.get("scores", np.ones(len(boxes))), dtype=np.float64)
    distance = np.linalg.norm(boxes[:, None, :2] - truth_boxes[None, :, :2], axis=-1)
    if truth_labels is not None:
        distance[labels[:, None] != truth_labels[None, :]] = np.inf
    for i in np.argsort(-scores, kind="stable"):
        candidates = np.where(~matched & (distance[i] <= MATCH_DISTANCE_M))[0]
        if len(candidates):
            matched[candidates[np.argmin(distance[i, candidates])]] = True
    return matched


def _arrow(draw: ImageDraw.ImageDraw, start, end, fill, width: int = 2, head: float = 7.0) -> None:
    start, end = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    draw.line([tuple(start), tuple(end)], fill=fill, width=width)
    direction = end - start
    length = float(np.hypot(*direction))
    if length < 1e-6:
        return
    direction /= length
    normal = np.array([-direction[1], direction[0]])
    head = min(head, length * 0.6)
    base = end - direction * head
    draw.polygon([tuple(end), tuple(base + normal * head * 0.45), tuple(base - normal * head * 0.45)], fill=fill)


def _dashed_polygon(draw: ImageDraw.ImageDraw, corners: np.ndarray, fill, width: int = 1,
                    dash: float = 5.0, gap: float = 3.0) -> None:
    for k in range(len(corners)):
        a, b = corners[k], corners[(k + 1) % len(corners)]
        length = float(np.hypot(*(b - a)))
        if length < 1e-6:
            continue
        step = (b - a) / length
        t = 0.0
        while t < length:
            t1 = min(t + dash, length)
            draw.line([tuple(a + step * t), tuple(a + step * t1)], fill=fill, width=width)
            t += dash + gap


def _text(draw: ImageDraw.ImageDraw, xy, text: str, fill, size: int = 12, anchor: str = "la", stroke: int = 0) -> None:
    draw.text(xy, text, fill=fill, font=_font(size), anchor=anchor, stroke_width=stroke, stroke_fill=(0, 0, 0))


def _camera_axes(rig: RigConfig, cam2ego) -> dict[str, tuple[float, float, float]]:
    """name -> (x, y, heading rad) of each camera in the ego frame (from cam2ego when given)."""
    axes = {}
    for index, camera in enumerate(rig.cameras):
        x, y, heading = camera.position[0], camera.position[1], math.radians(camera.yaw_deg)
        transform = None
        if isinstance(cam2ego, dict):
            transform = cam2ego.get(camera.name)
        elif cam2ego is not None:
            transform = np.asarray(cam2ego)[index]
        if transform is not None:
            transform = np.asarray(transform, dtype=np.float64)
            x, y, heading = transform[0, 3], transform[1, 3], math.atan2(transform[1, 2], transform[0, 2])
        axes[camera.name] = (float(x), float(y), heading)
    return axes


def _draw_bev(image: Image.Image, bev: BevMapping, detections: dict, cloud: np.ndarray | None,
              truth: dict | None, failed_fovs: list[tuple[str, float, float, float, float]]) -> int | None:
    """Draw the top view onto ``image`` (which holds exactly ``bev.box``; ``bev``
    is its local mapping). Returns how many ground-truth boxes were matched (None without ground truth)."""
    width, height = image.size
    if cloud is not None and len(cloud):
        points = np.asarray(cloud)
        points = points[np.isfinite(points[:, :3]).all(1)]
        pix = bev.to_pixel(points[:, :2]).astype(np.int32)
        keep = (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
        canvas = np.asarray(image).copy()
        raised = points[keep, 2] > 0.3
        canvas[pix[keep][~raised, 1], pix[keep][~raised, 0]] = POINT_GROUND
        canvas[pix[keep][raised, 1], pix[keep][raised, 0]] = POINT_RAISED
        image.paste(Image.fromarray(canvas))
    draw = ImageDraw.Draw(image, "RGBA")
    scale = bev.px_per_m
    reach = math.hypot(max(map(abs, bev.x_range)), max(map(abs, bev.y_range))) * 1.5
    for name, x, y, heading, hfov in failed_fovs:
        angles = np.linspace(heading - hfov / 2, heading + hfov / 2, 24)
        wedge = np.concatenate([[[x, y]], np.stack([x + reach * np.cos(angles), y + reach * np.sin(angles)], 1)])
        pix = bev.to_pixel(wedge)
        draw.polygon([tuple(p) for p in pix], fill=FOV_FILL)
        draw.line([tuple(pix[0]), tuple(pix[1])], fill=FAILED_RGB + (170,), width=1)
        draw.line([tuple(pix[0]), tuple(pix[-1])], fill=FAILED_RGB + (170,), width=1)
        label_at = bev.to_pixel(np.array([x + 22 * math.cos(heading), y + 22 * math.sin(heading)]))
        _text(draw, tuple(label_at), name, FAILED_RGB, 12, "mm", stroke=2)
    ego = bev.to_pixel(np.zeros(2))
    rings = np.arange(RING_STEP_M, reach / 1.5 + RING_STEP_M, RING_STEP_M)
    for radius in rings:
        r = radius * scale
        draw.ellipse([ego[0] - r, ego[1] - r, ego[0] + r, ego[1] + r], outline=RING_COLOUR + (255,), width=1)
        if ego[1] - r > 10:
            _text(draw, (ego[0] + 4, ego[1] - r - 1), f"{radius:.0f} m", RING_TEXT, 11, "lb")
    rear, front, half_w = EGO_OUTLINE
    ego_box = bev.to_pixel(np.array([[front, half_w], [rear, -half_w]]))
    draw.rectangle([tuple(ego_box[0]), tuple(ego_box[1])], fill=EGO_FILL + (255,), outline=(90, 95, 105, 255))
    tip = bev.to_pixel(np.array([front + 6.0, 0.0]))
    _arrow(draw, bev.to_pixel(np.array([front, 0.0])), tip, EGO_FILL, 2, 7)
    _text(draw, (tip[0] - 5, tip[1] + 2), "x", EGO_FILL, 12, "rt", stroke=2)
    bar_m = RING_STEP_M
    bar = np.array([12.0, height - 14.0])
    draw.line([tuple(bar), tuple(bar + [bar_m * scale, 0])], fill=(235, 235, 235), width=3)
    for tick in (0.0, bar_m * scale):
        draw.line([(bar[0] + tick, bar[1] - 5), (bar[0] + tick, bar[1] + 5)], fill=(235, 235, 235), width=1)
    _text(draw, (bar[0] + bar_m * scale + 6, bar[1]), f"{bar_m:.0f} m", (235, 235, 235), 12, "lm")

    matched_count = None
    if truth is not None:
        truth_boxes = np.asarray(truth["boxes"], dtype=np.float64).reshape(-1, 10)
        truth_labels = None if truth.get("labels") is None else np.asarray(truth["labels"]).astype(int)
        matched = _matched_truth(detections, truth_boxes, truth_labels)
        matched_count = int(matched.sum())
        for corners, hit in zip(bev.to_pixel(box_corners(truth_boxes)), matched):
            _dashed_polygon(draw, corners, GT_COLOUR + ((150,) if hit else (255,)), width=1 if hit else 2)
    boxes = np.asarray(detections.get("boxes", np.zeros((0, 10))), dtype=np.float64).reshape(-1, 10)
    if len(boxes):
        labels = np.asarray(detections["labels"]).astype(int)
        ids = detections.get("ids")
        corners_px = bev.to_pixel(box_corners(boxes))
        centres = bev.to_pixel(boxes[:, :2])
        fronts = corners_px[:, :2].mean(1)
        ends = bev.to_pixel(boxes[:, :2] + boxes[:, 7:9] * VELOCITY_ARROW_S)
        speeds = np.hypot(boxes[:, 7], boxes[:, 8])
        for i in range(len(boxes)):
            colour = CLASS_COLOURS[labels[i] % len(CLASS_COLOURS)]
            polygon = [tuple(p) for p in corners_px[i]]
            draw.polygon(polygon, fill=colour + (60,), outline=colour + (255,), width=2)
            draw.line([tuple(centres[i]), tuple(fronts[i])], fill=colour + (255,), width=2)
            if speeds[i] > 0.5:
                _arrow(draw, centres[i], ends[i], (255, 255, 255, 230), 1, 6)
            if ids is not None:
                anchor = corners_px[i].min(0)
                _text(draw, (float(corners_px[i][:, 0].max()) + 2, float(anchor[1])), f"#{int(ids[i])}",
                      (230, 230, 230), 10, "lt")
    return matched_count


def _fit(image: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The image resized to fit ``size`` (width, height), keeping its aspect, centred on black."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, 2)
    source = Image.fromarray(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    scale = min(size[0] / source.width, size[1] / source.height)
    resized = source.resize((max(1, int(source.width * scale)), max(1, int(source.height * scale))),
                            Image.BILINEAR, reducing_gap=2.0)
    out = Image.new("RGB", size, (0, 0, 0))
    out.paste(resized, ((size[0] - resized.width) // 2, (size[1] - resized.height) // 2))
    return out


def _wrap(text: str, width: float, font, max_lines: int = 2) -> list[str]:
    """``text`` in lines no wider than ``width``; the last line ends in "..." when cut."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines += [line] if line else []
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        while lines[-1] and font.getlength(lines[-1] + " ...") > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] = lines[-1].rstrip() + " ..."
    return lines


def status_text(status: dict | None) -> tuple[str, tuple[int, int, int]]:
    """(short verdict, colour) of a camera status: "ok", "failed: black, 99% of pixels dark",
    "suspect: frozen" (a fault not yet confirmed), "failed: recovering"."""
    if status is None:
        return "no status", (150, 150, 150)
    reason = int(status.get("reason", 0))
    name = FAULT_NAMES.get(reason, f"reason {reason}")
    message = str(status.get("message", "") or "")
    detail = f"{name}, {message}" if message and message != name else name
    if status.get("failed"):
        return ("failed: recovering" if reason == 0 else f"failed: {detail}"), FAULT_COLOUR["failed"]
    if reason:
        return f"suspect: {detail}", FAULT_COLOUR["suspect"]
    return "ok", FAULT_COLOUR["ok"]


FAULT_COLOUR = {"failed": FAILED_RGB, "suspect": WARN_RGB, "ok": OK_RGB}


def _draw_thumb(canvas: Image.Image, draw: ImageDraw.ImageDraw, thumb: ThumbLayout, image: np.ndarray | None,
                status: dict | None) -> None:
    l, t, r, b = thumb.image
    size = (r - l, b - t)
    failed = bool(status and status.get("failed"))
    verdict, colour = status_text(status)
    if image is None or np.ndim(image) < 2 or min(np.shape(image)[:2]) == 0:
        placeholder = Image.new("RGB", size, (44, 46, 52))
        hatch = ImageDraw.Draw(placeholder)
        for k in range(-size[1], size[0], 14):        # hatching: there is no picture
            hatch.line([(k, size[1]), (k + size[1], 0)], fill=(62, 64, 72), width=1)
        canvas.paste(placeholder, (l, t))
        _text(draw, ((l + r) / 2, t + size[1] * 0.3), "no image", (190, 190, 190), 13, "mm", stroke=2)
    else:
        picture = _fit(np.asarray(image), size)
        if failed:
            picture = Image.eval(picture.convert("L"), lambda v: 40 + v // 3).convert("RGB")
        canvas.paste(picture, (l, t))
    if failed:
        draw.line([(l, t), (r - 1, b - 1)], fill=FAILED_RGB, width=3)
        draw.line([(l, b - 1), (r - 1, t)], fill=FAILED_RGB, width=3)
    if verdict != "ok":
        font = _font(11)
        lines = _wrap(verdict, size[0] - 6, font, 2)
        rl, rt, rr, rb = thumb.reason
        draw.rectangle(thumb.reason, fill=(0, 0, 0, 190))
        for k, line in enumerate(lines):
            draw.text((rl + 3, rt + 2 + 13 * k), line, fill=colour, font=font)
    draw.rectangle(thumb.caption, fill=(50, 20, 20) if failed else (40, 43, 50))
    _text(draw, (thumb.caption[0] + 4, thumb.caption[1] + 8), thumb.name, PANEL_TEXT, 12, "lm")
    state = "FAILED" if failed else ("suspect" if verdict != "ok" and status is not None else
                                     ("ok" if status is not None else "?"))
    _text(draw, (thumb.caption[2] - 4, thumb.caption[1] + 8), state, colour, 12, "rm")
    frame_colour, frame_width = ((FAILED_RGB, 3) if failed else (WARN_RGB, 2) if state == "suspect"
                                 else ((95, 100, 112), 1))
    draw.rectangle(thumb.frame, outline=frame_colour, width=frame_width)


LEGEND_CLASS_TOP, LEGEND_ROW = 30, 17


@lru_cache(maxsize=4)
def _legend_static(width: int, height: int) -> tuple[Image.Image, int]:
    """The legend's unchanging part (keys and headings) and where the camera list starts."""
    image = Image.new("RGB", (width, height), (22, 24, 29))
    draw = ImageDraw.Draw(image, "RGBA")
    x, y = 12, 10
    _text(draw, (x, y), "classes   detected / truth", PANEL_TEXT, 13)
    y = LEGEND_CLASS_TOP
    for k, name in enumerate(CLASS_NAMES):
        colour = CLASS_COLOURS[k]
        draw.rectangle([x, y + 2, x + 22, y + 12], fill=colour + (60,), outline=colour, width=2)
        _text(draw, (x + 30, y + 7), name, PANEL_TEXT, 12, "lm")
        y += LEGEND_ROW
    y += 8
    draw.polygon([(x, y + 12), (x + 22, y + 12), (x + 22, y + 2), (x, y + 2)], outline=CLASS_COLOURS[0], width=2)
    draw.line([(x + 11, y + 7), (x + 22, y + 7)], fill=CLASS_COLOURS[0], width=2)
    _text(draw, (x + 30, y + 7), "detection, heading line, #id", PANEL_TEXT, 12, "lm")
    y += 18
    key = np.array([[x, y + 2], [x + 22, y + 2], [x + 22, y + 12], [x, y + 12]], dtype=float)
    _dashed_polygon(draw, key, GT_COLOUR, 2)
    _text(draw, (x + 30, y + 7), "ground truth, missed", PANEL_TEXT, 12, "lm")
    y += 18
    _dashed_polygon(draw, key + [0, 18], GT_COLOUR + (150,), 1)
    _text(draw, (x + 30, y + 7), f"ground truth, detected (<{MATCH_DISTANCE_M:.0f} m)", PANEL_TEXT, 12, "lm")
    y += 18
    _arrow(draw, (x, y + 7), (x + 22, y + 7), (255, 255, 255), 1, 6)
    _text(draw, (x + 30, y + 7), f"velocity: position in {VELOCITY_ARROW_S:g} s", PANEL_TEXT, 12, "lm")
    y += 18
    draw.polygon([(x, y + 14), (x + 24, y), (x + 24, y + 14)], fill=FOV_FILL, outline=FAILED_RGB + (170,))
    _text(draw, (x + 30, y + 7), "failed camera's field of view", PANEL_TEXT, 12, "lm")
    y += 18
    for k in range(6):
        draw.point((x + 3 + 4 * k, y + 5 + (k % 2) * 4), fill=POINT_RAISED)
        draw.point((x + 1 + 4 * k, y + 11), fill=POINT_GROUND)
    _text(draw, (x + 30, y + 7), "LiDAR, above / at ground", PANEL_TEXT, 12, "lm")
    y += 18
    draw.rectangle([x + 8, y + 1, x + 14, y + 13], fill=EGO_FILL, outline=(90, 95, 105))
    _text(draw, (x + 30, y + 7), f"ego vehicle; rings every {RING_STEP_M:.0f} m", PANEL_TEXT, 12, "lm")
    y += 28
    _text(draw, (x, y), "cameras", PANEL_TEXT, 13)
    return image, y + 20


def _draw_legend(canvas: Image.Image, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rig: RigConfig,
                 statuses: dict[str, dict], detections: dict, truth: dict | None) -> None:
    l, t, r, b = box
    static, y = _legend_static(r - l, b - t)
    canvas.paste(static, (l, t))
    labels = np.asarray(detections.get("labels", np.zeros(0))).astype(int)
    truth_labels = None if truth is None else np.asarray(truth.get("labels", np.zeros(0))).astype(int)
    for k in range(len(CLASS_NAMES)):
        count = f"{int((labels == k).sum())}" + ("" if truth_labels is None else f" / {int((truth_labels == k).sum())}")
        _text(draw, (r - 14, t + LEGEND_CLASS_TOP + LEGEND_ROW * k + 7), count, PANEL_TEXT, 12, "rm")
    x, y = l + 12, t + y
    font = _font(11)
    for camera in rig.cameras:
        if y > b - 30:
            break
        verdict, colour = status_text(statuses.get(camera.name))
        draw.ellipse([x, y + 2, x + 9, y + 11], fill=colour)
        _text(draw, (x + 16, y + 7), camera.name, PANEL_TEXT, 12, "lm")
        y += 15
        if verdict != "ok":
            for line in _wrap(verdict, r - x - 30, font, 3):
                draw.text((x + 16, y), line, fill=colour, font=font)
                y += 13
        y += 3


def debug_picture(detections: dict, cloud: np.ndarray | None, rig: RigConfig,
                  camera_images: dict[str, np.ndarray | None], statuses: list[dict],
                  ground_truth: dict | None = None,
                  bev_range_m: float | tuple[float, float, float, float] = DEFAULT_BEV_RANGE,
                  cam2ego: np.ndarray | dict[str, np.ndarray] | None = None, *,
                  frame_index: int | None = None, time_s: float | None = None,
                  size: tuple[int, int] = DEFAULT_SIZE) -> np.ndarray:
    """[H, W, 3] uint8 debug picture of one frame, for a person.

    - Camera thumbnails around the BEV where each camera looks (``debug_layout``);
      a failed camera's is greyed, crossed and framed red with the reason
      ("failed: no frame, last image 0.80 s old"); a missing image is a hatched
      placeholder; a fault not yet confirmed is framed amber ("suspect: ...").
    - The BEV (x forward = up, y left = left): LiDAR points (brighter above
      0.3 m), range rings and a scale bar, the ego vehicle with its forward
      axis, failed cameras' fields of view shaded red (rig heading / hfov, or
      heading and position from ``cam2ego``), detections as class-coloured
      outlines with a heading line, velocity arrow (position in 1 s) and id,
      ground truth dashed (bright and thick where no detection of its class is
      within 2 m, dim where one is).
    - A legend with per-class counts and each camera's verdict; a header with
      frame / time (when given), counts and the failed cameras.

    detections: numpy ``boxes`` [N, 10] (x, y, z, l, w, h, yaw, vx, vy, vz; ego
    frame), ``labels`` [N] (indices into CLASS_NAMES), optional ``scores``,
    ``ids``. cloud: [M, >=3] ego-frame points or None. camera_images: name ->
    RGB uint8 [H, W, 3] (or grey [H, W]) or None. statuses: per camera dicts
    with "name", "failed", "reason" (FAULT_*), "message" (the camera-health
    monitor's output). ground_truth: like detections (boxes, labels) or None.
    bev_range_m: (x_min, x_max, y_min, y_max) or r for a square +-r.
    cam2ego: [V, 4, 4] (rig order) or name -> [4, 4] camera (optical) -> ego.
    """
    layout = debug_layout(rig, size, bev_range_m)
    by_name = {str(s["name"]): s for s in statuses}
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    bev = layout.bev
    panel = Image.new("RGB", (bev.box[2] - bev.box[0], bev.box[3] - bev.box[1]), BEV_BACKGROUND)
    axes = _camera_axes(rig, cam2ego)
    failed_fovs = [(c.name, *axes[c.name], math.radians(c.hfov_deg)) for c in rig.cameras
                   if by_name.get(c.name, {}).get("failed")]
    matched = _draw_bev(panel, bev.local(), detections, cloud, ground_truth, failed_fovs)
    canvas.paste(panel, bev.box[:2])
    draw = ImageDraw.Draw(canvas, "RGBA")
    draw.rectangle(bev.box, outline=(80, 86, 98), width=1)
    for camera in rig.cameras:
        _draw_thumb(canvas, draw, layout.thumbs[camera.name], camera_images.get(camera.name),
                    by_name.get(camera.name))
    _draw_legend(canvas, draw, layout.legend, rig, by_name, detections, ground_truth)
    draw.rectangle(layout.header, fill=(16, 18, 22))
    parts = []
    if frame_index is not None:
        parts.append(f"frame {frame_index}")
    if time_s is not None:
        parts.append(f"t = {time_s:.1f} s")
    count = len(np.asarray(detections.get("labels", np.zeros(0))))
    parts.append(f"{count} detections")
    if ground_truth is not None:
        parts.append(f"ground truth {len(np.asarray(ground_truth['boxes']).reshape(-1, 10))}, "
                     f"{matched} detected")
    header = "   |   ".join(parts)
    _text(draw, (10, 13), header, PANEL_TEXT, 14, "lm")
    failed = [c.name for c in rig.cameras if by_name.get(c.name, {}).get("failed")]
    x = 10 + _font(14).getlength(header + "   |   ")
    _text(draw, (x, 13), ("cameras failed: " + ", ".join(failed)) if failed else "all cameras ok",
          FAILED_RGB if failed else OK_RGB, 14, "lm")
    return np.asarray(canvas)


def bev_image(detections: dict, points: np.ndarray | None, x_range=(-40.0, 62.4), y_range=(-44.8, 44.8),
              resolution: float = 0.2, ground_truth: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 top view only (x up, y left), drawn as in ``debug_picture``
    (no cameras): LiDAR, rings, ego, ground-truth outlines (boxes [M, 10]),
    detections with heading, velocity and id."""
    width = int(round((y_range[1] - y_range[0]) / resolution))
    height = int(round((x_range[1] - x_range[0]) / resolution))
    mapping = BevMapping(tuple(x_range), tuple(y_range), 1.0 / resolution, (0, 0, width, height))
    image = Image.new("RGB", (width, height), BEV_BACKGROUND)
    truth = None
    if ground_truth is not None:
        truth_boxes = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 10)
        truth = {"boxes": truth_boxes}
    _draw_bev(image, mapping, detections, points, truth, [])
    return np.asarray(image)
