"""Conversions between ROS messages and arrays, with validation.

Decoding raises ``BadMessage`` with a clear reason; the node drops such a
message, counts it and reports it, and keeps running."""
from __future__ import annotations

import io
import math

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, TransformStamped, Vector3
from PIL import Image as PILImage
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from sparsecomp.msg import CameraHealth, CameraStatus, DynamicObject, DynamicObjectArray
from std_msgs.msg import Header

from .camera_health import FAULT_NAMES

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


class BadMessage(ValueError):
    """A message that cannot be used; the text says why."""


def stamp_to_us(stamp: Time) -> int:
    return stamp.sec * 1_000_000 + stamp.nanosec // 1000


def us_to_stamp(microseconds: int) -> Time:
    return Time(sec=microseconds // 1_000_000, nanosec=(microseconds % 1_000_000) * 1000)


def image_to_rgb(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """[H, W, 3] uint8 RGB view/copy of an Image; BadMessage on a wrong encoding,
    size, step or truncated data."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise BadMessage(f"encoding {msg.encoding!r} not supported (use one of {sorted(CHANNELS)})")
    if msg.height == 0 or msg.width == 0:
        raise BadMessage("empty image")
    if expected_size is not None and (msg.height, msg.width) != tuple(expected_size):
        raise BadMessage(f"size {msg.height}x{msg.width}, expected {expected_size[0]}x{expected_size[1]}")
    if msg.step < msg.width * channels:
        raise BadMessage(f"step {msg.step} < width {msg.width} x {channels} channels")
    if len(msg.data) < msg.step * msg.height:
        raise BadMessage(f"truncated: {len(msg.data)} bytes for step {msg.step} x height {msg.height}")
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    pixels = raw[:, : msg.width * channels].reshape(msg.height, msg.width, channels)
    if channels == 1:
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return pixels[..., 2::-1] if channels == 3 else pixels[..., [2, 1, 0]]
    return pixels[..., :3]


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a CompressedImage (jpeg, png, ...); BadMessage if it does not decode."""
    try:
        with PILImage.open(io.BytesIO(bytes(msg.data))) as image:
            return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadMessage(f"compressed image ({msg.format or 'unknown format'}) does not decode: {exc}") from exc


def rgb_to_compressed(rgb: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return CompressedImage(header=header, format="rgb8; jpeg compressed bgr8", data=buffer.getvalue())


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    height, width = rgb.shape[:2]
    return Image(header=header, height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                 data=np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())


_FIELD_TYPES = {PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64, PointField.UINT8: np.uint8,
                PointField.UINT16: np.uint16, PointField.INT16: np.int16, PointField.UINT32: np.uint32,
                PointField.INT32: np.int32, PointField.INT8: np.int8}


def cloud_to_array(msg: PointCloud2) -> np.ndarray:
    """[N, 4] float32 (x, y, z, intensity; intensity 0 if absent), a new array the
    caller may modify. Non-finite points are kept: the model drops them.
    BadMessage on a malformed cloud."""
    fields = {f.name: f for f in msg.fields}
    for name in ("x", "y", "z"):
        if name not in fields:
            raise BadMessage(f"point cloud has no field {name!r} (fields: {sorted(fields)})")
    count = msg.width * msg.height
    if msg.point_step == 0 and count:
        raise BadMessage("point_step is 0")
    if len(msg.data) < count * msg.point_step:
        raise BadMessage(f"truncated: {len(msg.data)} bytes for {count} points of {msg.point_step} bytes")
    if msg.is_bigendian:
        raise BadMessage("big-endian clouds are not supported")
    present = [name for name in ("x", "y", "z", "intensity") if name in fields]
    dtypes = {}
    for name in present:
        dtype = _FIELD_TYPES.get(fields[name].datatype)
        if dtype is None or fields[name].offset + np.dtype(dtype).itemsize > msg.point_step:
            raise BadMessage(f"field {name!r} has an unsupported type or offset")
        dtypes[name] = np.dtype(dtype)
    spans = sorted((fields[n].offset, fields[n].offset + dtypes[n].itemsize, n) for n in present)
    for (_, end, name), (start, _, following) in zip(spans, spans[1:]):
        if start < end:
            raise BadMessage(f"point fields do not form a valid layout: {name!r} overlaps {following!r}")
    # One strided view of the buffer with the fields where the message says they are.
    layout = np.dtype({"names": present, "formats": [dtypes[n] for n in present],
                       "offsets": [fields[n].offset for n in present], "itemsize": msg.point_step})
    points = np.frombuffer(msg.data, dtype=layout, count=count)
    out = np.zeros((count, 4), dtype=np.float32)
    for column, name in enumerate(present):
        out[:, column] = points[name]
    return out


def array_to_cloud(points: np.ndarray, header: Header) -> PointCloud2:
    points = np.ascontiguousarray(points[:, :4], dtype=np.float32)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate(("x", "y", "z", "intensity"))]
    return PointCloud2(header=header, height=1, width=len(points), fields=fields, is_bigendian=False, point_step=16,
                       row_step=16 * len(points), data=points.tobytes(), is_dense=bool(np.isfinite(points).all()))


def to_transform(parent: str, child: str, matrix: np.ndarray, stamp: Time) -> TransformStamped:
    """TransformStamped parent <- child from a 4x4 matrix."""
    x, y, z, w = Rotation.from_matrix(matrix[:3, :3]).as_quat()
    out = TransformStamped(header=Header(stamp=stamp, frame_id=parent), child_frame_id=child)
    out.transform = Transform(translation=Vector3(x=float(matrix[0, 3]), y=float(matrix[1, 3]), z=float(matrix[2, 3])),
                              rotation=Quaternion(x=float(x), y=float(y), z=float(z), w=float(w)))
    return out


def transform_to_matrix(transform: Transform) -> np.ndarray:
    """4x4 matrix of a geometry_msgs/Transform."""
    t, q = transform.translation, transform.rotation
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    matrix[:3, 3] = [t.x, t.y, t.z]
    return matrix


def yaw_quaternion(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def detections_to_msg(detections: dict, header: Header, failed_cameras: list[str]) -> DynamicObjectArray:
    """Post-processed detections of one frame (numpy arrays or tensors) -> DynamicObjectArray."""
    def arr(key):
        value = detections[key]
        return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
    boxes, scores, labels, ids = arr("boxes"), arr("scores"), arr("labels"), arr("ids")
    class_probs, occlusion, occlusion_probs = arr("class_probabilities"), arr("occlusion"), arr("occlusion_probabilities")
    objects = []
    for i in range(len(scores)):
        x, y, z, length, width, height, yaw, vx, vy, vz = (float(v) for v in boxes[i])
        objects.append(DynamicObject(
            id=int(ids[i]), label=int(labels[i]), score=float(scores[i]),
            class_probabilities=class_probs[i].astype(np.float32), pose=Pose(position=Point(x=x, y=y, z=z),
                                                                             orientation=yaw_quaternion(yaw)),
            size=Vector3(x=length, y=width, z=height), velocity=Vector3(x=vx, y=vy, z=vz),
            occlusion=int(occlusion[i]), occlusion_probabilities=occlusion_probs[i].astype(np.float32)))
    return DynamicObjectArray(header=header, failed_cameras=list(failed_cameras), objects=objects)


def health_to_msg(statuses: list[dict], header: Header) -> CameraHealth:
    """CameraHealth (one CameraStatus per camera) from CameraHealth.assess results."""
    return CameraHealth(header=header, cameras=[CameraStatus(
        name=status["name"], failed=bool(status["failed"]), reason=int(status["reason"]), message=status["message"],
        image_age_s=float(min(status["image_age_s"], 1e9)), rate_hz=float(status["rate_hz"]),
        sync_offset_s=float(status["sync_offset_s"]), mean_intensity=float(status["mean_intensity"]),
        dark_fraction=float(status["dark_fraction"]), saturated_fraction=float(status["saturated_fraction"]),
        textureless_fraction=float(status["textureless_fraction"]),
        frame_difference=float(status["frame_difference"]), unchanged_frames=int(status["unchanged_frames"]),
        consecutive_faults=int(status["consecutive_faults"]), consecutive_ok=int(status["consecutive_ok"]))
        for status in statuses])


def health_to_diagnostics(statuses: list[dict], header: Header, node_name: str) -> DiagnosticArray:
    """A DiagnosticArray with one status per camera (ERROR failed, WARN faulty, OK)."""
    diagnostics = []
    for status in statuses:
        level = DiagnosticStatus.ERROR if status["failed"] else (
            DiagnosticStatus.WARN if status["reason"] else DiagnosticStatus.OK)
        text = "failed: " if status["failed"] else ""
        diagnostics.append(DiagnosticStatus(
            level=level, name=f"{node_name}: camera {status['name']}", hardware_id=status["name"],
            message=text + (status["message"] or FAULT_NAMES[status["reason"]]),
            values=[KeyValue(key=k, value=f"{status[k]:.4g}" if isinstance(status[k], float) else str(status[k]))
                    for k in ("reason", "image_age_s", "rate_hz", "sync_offset_s", "mean_intensity", "dark_fraction",
                              "saturated_fraction", "textureless_fraction", "unchanged_frames")]))
    return DiagnosticArray(header=header, status=diagnostics)
