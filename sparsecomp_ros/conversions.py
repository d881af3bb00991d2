"""Conversions between ROS messages and arrays, with validation.

Decoding raises ``BadMessage`` with a clear reason; the node drops such a
message, counts it and reports it, and keeps running."""
from __future__ import annotations

import io
import math

import cv2
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


class BadMessage(ValueError):
    """A message that cannot be used; the text says why."""


def stamp_to_us(stamp: Time) -> int:
    return stamp.sec * 1_000_000 + stamp.nanosec // 1000


def us_to_stamp(microseconds: int) -> Time:
    return Time(sec=microseconds // 1_000_000, nanosec=(microseconds % 1_000_000) * 1000)


# --- camera images ------------------------------------------------------------------------------
# ROS 2's cv_bridge (not on PyPI, so absent from pip-built environments) converts the encodings that
# need OpenCV when a ROS install provides it; otherwise OpenCV directly does the same conversions with
# the same codes (our API-compatible fallback). Encodings that are a strided view of the message are
# never converted by either: a view costs nothing, cv_bridge would copy.
try:
    from cv_bridge import CvBridge
except ImportError:
    CvBridge = None
USING_CV_BRIDGE = CvBridge is not None
_cv_bridge = CvBridge() if USING_CV_BRIDGE else None

# Encodings read as a view of the message: encoding -> (channels, bytes per channel, order of the
# first three channels). 16-bit values become 8-bit as value >> 8 (their high byte).
_PACKED = {"rgb8": (3, 1, "rgb"), "bgr8": (3, 1, "bgr"), "rgba8": (4, 1, "rgb"), "bgra8": (4, 1, "bgr"),
           "mono8": (1, 1, "grey"), "rgb16": (3, 2, "rgb"), "bgr16": (3, 2, "bgr"), "rgba16": (4, 2, "rgb"),
           "bgra16": (4, 2, "bgr"), "mono16": (1, 2, "grey")}
# ROS names a Bayer pattern by its top-left 2x2 block read row by row; OpenCV by the second and third
# pixels of its second row, so the names are shifted: ROS rggb is OpenCV's BG (as in cv_bridge).
_BAYER_TO_OPENCV = {"rggb": cv2.COLOR_BayerBG2RGB, "bggr": cv2.COLOR_BayerRG2RGB,
                    "gbrg": cv2.COLOR_BayerGR2RGB, "grbg": cv2.COLOR_BayerGB2RGB}
_BAYER = {f"bayer_{pattern}{bits}": code for pattern, code in _BAYER_TO_OPENCV.items() for bits in (8, 16)}
# YUV 4:2:2, two bytes a pixel. ROS "yuv422" is UYVY (U Y0 V Y1), "yuv422_yuy2" is YUYV (Y0 U Y1 V);
# newer ROS releases also name them "uyvy" and "yuyv". BT.601 video range, as OpenCV decodes it.
_YUV422 = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "uyvy": cv2.COLOR_YUV2RGB_UYVY,
           "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2, "yuyv": cv2.COLOR_YUV2RGB_YUY2}
# What cv_bridge converts when it is there: the names its releases since Humble know.
_CV_BRIDGE_ENCODINGS = {"bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8", "yuv422", "yuv422_yuy2"}

# Channels per pixel in the message of every supported encoding.
CHANNELS = {**{encoding: layout[0] for encoding, layout in _PACKED.items()},
            **{encoding: 1 for encoding in _BAYER}, **{encoding: 2 for encoding in _YUV422}}


def image_to_rgb(msg: Image, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an Image in any encoding of CHANNELS.

    rgb8, bgr8, rgba8, bgra8 and the 16-bit colour encodings give a (strided) view of the message, no
    copy; mono becomes grey RGB, Bayer is demosaiced, YUV 4:2:2 converted (new arrays). 16-bit values
    are scaled as value >> 8, honouring ``is_bigendian``. BadMessage on an unsupported encoding, an
    empty image, a size other than ``expected_size`` (height, width), a step shorter than a row,
    truncated data, an odd width (YUV 4:2:2) or odd dimensions (Bayer)."""
    encoding = msg.encoding
    channels = CHANNELS.get(encoding)
    if channels is None:
        raise BadMessage(f"encoding {encoding!r} not supported (use one of {sorted(CHANNELS)})")
    height, width = msg.height, msg.width
    if height == 0 or width == 0:
        raise BadMessage("empty image")
    if expected_size is not None and (height, width) != tuple(expected_size):
        raise BadMessage(f"size {height}x{width}, expected {expected_size[0]}x{expected_size[1]}")
    depth = 2 if encoding.endswith("16") else 1
    row_bytes = width * channels * depth
    if msg.step < row_bytes:
        raise BadMessage(f"step {msg.step} < width {width} x {channels} channels x {depth} bytes")
    if len(msg.data) < msg.step * height:
        raise BadMessage(f"truncated: {len(msg.data)} bytes for step {msg.step} x height {height}")
    if encoding in _YUV422 and width % 2:
        raise BadMessage(f"{encoding} needs an even width (two pixels share their chroma), got {width}")
    if encoding in _BAYER and (width % 2 or height % 2):
        raise BadMessage(f"{encoding} needs even dimensions (whole 2x2 Bayer blocks), got {height}x{width}")
    if USING_CV_BRIDGE and encoding in _CV_BRIDGE_ENCODINGS:
        try:
            return _cv_bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as exc:    # whatever cv_bridge raises, the message is dropped, not the node
            raise BadMessage(f"cv_bridge cannot convert {encoding}: {exc}") from exc
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * height).reshape(height, msg.step)[:, :row_bytes]
    if depth == 2:
        rows = rows[:, (0 if msg.is_bigendian else 1)::2]       # the high byte of each value: value >> 8
    if encoding in _BAYER:
        return cv2.cvtColor(rows, _BAYER[encoding])
    if encoding in _YUV422:
        return cv2.cvtColor(rows.reshape(height, width, 2), _YUV422[encoding])
    pixels = rows.reshape(height, width, channels)
    order = _PACKED[encoding][2]
    if order == "grey":
        return cv2.cvtColor(pixels[..., 0], cv2.COLOR_GRAY2RGB)
    return pixels[..., :3] if order == "rgb" else pixels[..., 2::-1]


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """[H, W, 3] uint8 RGB from a CompressedImage (JPEG, PNG, ...; the format field is not trusted, the
    bytes are), decoded on the CPU; BadMessage if it does not decode."""
    encoded = np.frombuffer(msg.data, dtype=np.uint8)
    try:
        # The sensor's orientation, not an EXIF tag's, is what the calibration describes.
        rgb = cv2.imdecode(encoded, cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION) if encoded.size else None
    except cv2.error as exc:
        raise BadMessage(f"compressed image ({msg.format or 'unknown format'}) does not decode: {exc}") from exc
    if rgb is None:
        raise BadMessage(f"compressed image ({msg.format or 'unknown format'}) does not decode "
                         f"({len(encoded)} bytes)")
    return rgb


_JPEG_START = b"\xff\xd8\xff"


class CompressedDecoder:
    """Decodes CompressedImage messages for a model on ``device``.

    On a CUDA device with torchvision importable, JPEG is decoded on the GPU with nvjpeg and ``decode``
    returns an [H, W, 3] uint8 torch tensor on ``device`` (a view of torchvision's CHW result), which
    ImageBatcher.build and health_view take as they are. Anything else (a CPU device, no torchvision,
    PNG, a JPEG nvjpeg refuses) is decoded on the CPU: an [H, W, 3] uint8 numpy array."""

    def __init__(self, device):
        import torch    # here, not at module level: the message conversions do not need torch
        self._torch = torch
        self.device = torch.device(device)
        self._decode_jpeg = None
        self.cpu_fallbacks = 0      # JPEGs nvjpeg refused and the CPU decoded
        if self.device.type == "cuda":
            try:
                from torchvision.io import ImageReadMode, decode_jpeg
            except (ImportError, RuntimeError, OSError):   # absent, or built for another torch
                pass
            else:
                self._decode_jpeg = lambda data: decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)

    @property
    def uses_nvjpeg(self) -> bool:
        return self._decode_jpeg is not None

    def decode(self, msg: CompressedImage):
        """[H, W, 3] uint8 RGB: a torch tensor on the CUDA device (nvjpeg) or a numpy array (CPU).
        BadMessage if it does not decode."""
        if self._decode_jpeg is not None and bytes(msg.data[:3]) == _JPEG_START:
            # decode_jpeg reads a writable CPU tensor: a copy of the compressed bytes (small) gives one.
            encoded = self._torch.frombuffer(bytearray(msg.data), dtype=self._torch.uint8)
            try:
                return self._decode_jpeg(encoded).permute(1, 2, 0)
            except RuntimeError:
                self.cpu_fallbacks += 1     # e.g. a JPEG flavour nvjpeg lacks; a corrupt one fails below too
        return compressed_to_rgb(msg)


HEALTH_VIEW_MIN_SIDE = 120


def health_view(image) -> np.ndarray:
    """[h, w, 3] (or [h, w]) uint8 numpy array for the camera-health figures: ``image`` ([H, W, 3] or
    [H, W] uint8, numpy or torch) subsampled by a whole step so that min(h, w) is 120..239 px (smaller
    images unchanged). A strided view of a numpy array (no copy); a CUDA tensor is subsampled on the
    GPU and only the small image is copied to the host."""
    step = max(1, min(image.shape[0], image.shape[1]) // HEALTH_VIEW_MIN_SIDE)
    small = image[::step, ::step]
    if hasattr(small, "detach"):        # a torch tensor
        small = small.detach()
        return small.numpy() if small.device.type == "cpu" else small.contiguous().cpu().numpy()
    return small


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
        name=status["name"], failed=bool(status["failed"]), reason=int(status["reason"]),
        message=status.get("detail", status["message"]),
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
        diagnostics.append(DiagnosticStatus(
            level=level, name=f"{node_name}: camera {status['name']}", hardware_id=status["name"],
            message=status["message"] or FAULT_NAMES[status["reason"]],
            values=[KeyValue(key=k, value=f"{status[k]:.4g}" if isinstance(status[k], float) else str(status[k]))
                    for k in ("reason", "image_age_s", "rate_hz", "sync_offset_s", "mean_intensity", "dark_fraction",
                              "saturated_fraction", "textureless_fraction", "unchanged_frames", "bad_images")
                    if k in status]))
    return DiagnosticArray(header=header, status=diagnostics)
