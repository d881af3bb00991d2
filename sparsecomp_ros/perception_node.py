"""The perception node: cameras + LiDAR + tf -> camera health, completion,
3D dynamic objects with velocity, occlusion and ids.

Inputs (remappable): ~/input/<camera>/image (sensor_msgs/Image) and
~/input/<camera>/camera_info for every camera of the model's rig (lower-case
names), ~/input/points (PointCloud2), optional ~/input/path (nav_msgs/Path),
/tf and /tf_static. Outputs: ~/output/objects (sparsecomp/DynamicObjectArray),
~/output/camera_health (sparsecomp/CameraHealth), /diagnostics,
~/output/markers (MarkerArray), ~/output/bev_image (Image),
~/output/timing (diagnostic_msgs/DiagnosticStatus with per-stage times).

Two threads. The executor thread only ingests: it decodes images, judges
each one's content, caches it per camera, records clouds, tf and
CameraInfo, and offers every reference stamp (LiDAR sweep, or an image of
the reference camera) to a one-slot mailbox. The inference worker takes the
newest reference when it is free, waits (bounded) for cameras that fire just
after it, assembles the frame from each camera's nearest image, judges the
cameras and the LiDAR on what they delivered, runs the model and publishes.
A reference replaced in the mailbox is a frame skipped because the model was
busy; it is counted, and a node slower than its sensors reports itself
overloaded in /diagnostics instead of blaming its cameras. Bad messages are
dropped, counted by reason and reported; the node keeps publishing.
"""
from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import rclpy
import rclpy.executors
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from rclpy.time import Time as RclpyTime
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from sparsecomp.msg import CameraHealth as CameraHealthMsg
from sparsecomp.msg import DynamicObjectArray
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from sparsecomp_core.data.sweeps import merge_sweeps
from sparsecomp_core.deploy.runner import DEFAULT_LIDAR_BUCKET, FixedShapeRunner
from sparsecomp_core.geometry import Calibration, transform_boxes
from sparsecomp_core.models.detector import CheckpointError, load_detector
from sparsecomp_core.models.inputs import FrameInputs

from .camera_health import CameraHealth, HealthThresholds
from .conversions import (BadMessage, CompressedDecoder, cloud_to_array, detections_to_msg, health_to_diagnostics,
                          health_to_msg, health_view, image_to_rgb, rgb_to_image, transform_to_matrix)
from .frame_assembler import AssembledFrame, FrameAssembler, time_to_ns
from .frame_scheduler import FrameRequest, LatestFrameMailbox, LoadMonitor
from .image_batch import ImageBatcher
from .lidar_health import LidarHealth, LidarThresholds
from .resources import default_checkpoint
from .tf_compat import Buffer, TransformException, TransformListener
from .visualization import Trails, debug_picture, markers

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ParameterError(ValueError):
    """A parameter value the node cannot run with; the text names the parameter."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"parameter '{name}': {problem}")
        self.parameter = name


@dataclass
class CloudEntry:
    stamp_ns: int
    frame_id: str                 # the cloud's frame (the LiDAR's, or the ego frame)
    points: np.ndarray            # [N, 4] in frame_id


def ns_to_s(stamp_ns: int) -> float:
    return stamp_ns * 1e-9


def resolve_device(device: str) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' -> a usable device; ParameterError otherwise."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ParameterError("model.device", f"{device!r} is not one of 'auto', 'cpu', 'cuda', 'cuda:N'")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParameterError("model.device", f"{device!r} requested but CUDA is not available")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ParameterError("model.device", f"{device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def resolve_lidar_fallback(fallback: str, reference: str, cameras: list[str]) -> str | None:
    """The camera that builds frames while the reference LiDAR is silent; None: none (or the
    reference is a camera already)."""
    if reference != "lidar" or fallback.lower() == "none":
        return None
    if fallback.lower() == "auto":
        return cameras[0]
    by_lower = {name.lower(): name for name in cameras}
    if fallback.lower() not in by_lower:
        raise ParameterError("sync.lidar_fallback", f"{fallback!r} is neither 'auto', 'none' nor a camera of the rig "
                                                    f"{cameras}")
    return by_lower[fallback.lower()]


def resolve_reference(reference: str, cameras: list[str]) -> str:
    """'lidar' or a rig camera, in any case -> 'lidar' or the camera's rig name."""
    if reference.lower() == "lidar":
        return "lidar"
    by_lower = {name.lower(): name for name in cameras}
    if reference.lower() not in by_lower:
        raise ParameterError("sync.reference", f"{reference!r} is neither 'lidar' nor a camera of the rig {cameras}")
    return by_lower[reference.lower()]


def check_range(name: str, value, low=None, high=None, low_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ParameterError(name, f"{value!r} is not a number")
    if low is not None and (value <= low if low_open else value < low):
        raise ParameterError(name, f"{value} must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise ParameterError(name, f"{value} must be <= {high}")


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sparsecomp_perception", **kwargs)

        def param(name, default, description):
            return self.declare_parameter(name, default, ParameterDescriptor(description=description)).value

        checkpoint = param("model.checkpoint", "", "trained model file (weights + model config); '' = shipped default")
        device = param("model.device", "auto", "'auto' (cuda when available), 'cuda', 'cuda:N' or 'cpu'")
        self.precision = param("model.precision", "fp32", "fp32, bf16 or fp16 (autocast on CUDA)")
        fast_path = param("model.fast_path", False, "run the fixed-shape path (state in static buffers, LiDAR padded "
                          "to model.lidar_bucket; for torch.compile / CUDA graphs): docs/deployment.md")
        compile_graph = param("model.compile", False, "torch.compile the fixed-shape path (needs model.fast_path; "
                              "the first frame waits for the compilation)")
        lidar_bucket = param("model.lidar_bucket", DEFAULT_LIDAR_BUCKET, "LiDAR points per frame in the fixed-shape "
                             "path (merged sweeps); points past it are dropped with a warning")
        expected_cameras = self.declare_parameter(
            "cameras", Parameter.Type.STRING_ARRAY, ParameterDescriptor(
                description="the cameras this vehicle has, in model order; unset = the checkpoint's rig. "
                            "A checkpoint trained for other cameras is refused.")).value
        reference = param("sync.reference", "lidar", "'lidar' or a camera name (any case): whose arrival builds a frame")
        lidar_fallback = param("sync.lidar_fallback", "auto",
                               "with sync.reference lidar: the camera whose images build frames while the LiDAR has "
                               "been silent longer than health.timeout_s (camera name, any case; 'auto' = the rig's "
                               "first camera; 'none' = no frames without the LiDAR)")
        slop_s = param("sync.slop_s", 0.06, "largest |image stamp - reference stamp| used for a frame, s")
        self.sync_wait_s = param("sync.wait_s", 0.05, "longest wait for cameras that fire just after the reference, s")
        hold_s = param("sync.hold_s", 0.12, "a camera with no image within the slop uses its previous one up to this "
                       "old (a lost frame; placed where the vehicle was then); 0 = off, s")
        cache_size = param("sync.cache_size", 10, "images kept per camera (message_filters.Cache size)")
        self.ego_frame = param("frames.ego", "base_link", "vehicle frame")
        self.odom_frame = param("frames.odom", "odom", "fixed frame of the ego pose (odom or map)")
        self.output_frame = param("frames.output", "", "frame of published objects: '' = ego frame, or the odom frame")
        self.tf_wait_s = param("tf.wait_s", 0.1, "longest wait for the ego pose at a frame's stamp before the "
                               "temporal state is reset, s")
        self.score_threshold = param("output.score_threshold", 0.3, "minimum score of a published object")
        self.max_objects = param("output.max_objects", 100, "most objects published per frame")
        blind_zone_hold = param("output.blind_zone_hold", True,
                                "also publish an object that moved into the view of failed cameras only, held from "
                                "its last detection (HeavilyOccluded, score decaying; the model config's "
                                "blind_zone_hold): docs/completion.md, \"Blind-zone hold\"")
        self.velocity_scale = param("viz.velocity_scale", 5.0, "velocity arrow length scale in RViz")
        trail_length = param("viz.trajectory_length", 10, "positions kept per object for RViz trails")
        compressed = param("input.compressed", False, "subscribe ~/input/<camera>/image/compressed (CompressedImage)")
        diagnostics_period_s = param(
            "diagnostics.period_s", 1.0, "/diagnostics at least this often (frame time), and at once when a verdict, "
            "the load level or the recent drops change (~/output/camera_health is published every frame)")
        self.drop_window_s = param("diagnostics.drop_window_s", 10.0,
                                   "the node status is WARN while a message was dropped within this many seconds")
        warn_ratio = param("diagnostics.overload_warn_ratio", 1.0,
                           "overloaded (WARN) when processing takes this many sensor periods per frame")
        error_ratio = param("diagnostics.overload_error_ratio", 2.0,
                            "far behind (ERROR) when processing takes this many sensor periods per frame")
        camera_thresholds = dict(
            timeout_s=param("health.timeout_s", 0.5, "no image stamped within this of the frame: failed"),
            min_rate_hz=param("health.min_rate_hz", 4.0, "median image interval slower than this: low frame rate"),
            rate_window_s=param("health.rate_window_s", 2.0, "window of image stamps for the frame rate, s"),
            fail_after=param("health.fail_after", 2, "faulty frames before a sensor fails"),
            recover_after=param("health.recover_after", 5, "healthy frames before it recovers"))
        lidar_min_points = param("lidar.min_points", 100, "a sweep with fewer finite points is a LiDAR fault")

        # Validate before loading anything: a clear error naming the parameter.
        if self.precision not in PRECISIONS:
            raise ParameterError("model.precision", f"{self.precision!r} is not one of {sorted(PRECISIONS)}")
        self.device = resolve_device(device)
        for name, value, low, low_open, high in (
                ("sync.slop_s", slop_s, 0.0, True, 1.0), ("sync.wait_s", self.sync_wait_s, 0.0, False, 1.0),
                ("sync.hold_s", hold_s, 0.0, False, 1.0),
                ("sync.cache_size", cache_size, 2, False, 1000), ("tf.wait_s", self.tf_wait_s, 0.0, False, 5.0),
                ("output.score_threshold", self.score_threshold, 0.0, False, 1.0),
                ("output.max_objects", self.max_objects, 1, False, None),
                ("viz.trajectory_length", trail_length, 0, False, None),
                ("diagnostics.period_s", diagnostics_period_s, 0.0, True, None),
                ("diagnostics.drop_window_s", self.drop_window_s, 0.0, False, None),
                ("diagnostics.overload_warn_ratio", warn_ratio, 0.0, True, None),
                ("diagnostics.overload_error_ratio", error_ratio, warn_ratio, False, None),
                ("health.timeout_s", camera_thresholds["timeout_s"], 0.0, True, None),
                ("health.min_rate_hz", camera_thresholds["min_rate_hz"], 0.0, False, None),
                ("health.rate_window_s", camera_thresholds["rate_window_s"], 0.0, True, None),
                ("health.fail_after", camera_thresholds["fail_after"], 1, False, None),
                ("health.recover_after", camera_thresholds["recover_after"], 1, False, None),
                ("lidar.min_points", lidar_min_points, 0, False, None),
                ("model.lidar_bucket", lidar_bucket, 1, False, None)):
            check_range(name, value, low, high, low_open)
        if compile_graph and not fast_path:
            raise ParameterError("model.compile", "compiles the fixed-shape path: set model.fast_path true as well")

        if self.device.type == "cpu" and device == "auto":
            self.get_logger().warning("no CUDA device: running the model on the CPU (slow)")
        checkpoint = checkpoint or str(default_checkpoint())
        try:
            self.model, self.model_config = load_detector(checkpoint, self.device,
                                                          expected_cameras=expected_cameras or None)
        except CheckpointError as exc:
            raise ParameterError("model.checkpoint", str(exc)) from exc
        except ValueError as exc:   # trained for other cameras than this vehicle's
            raise ParameterError("cameras", f"{exc}; use a model trained for this vehicle's cameras") from exc
        self.rig = self.model_config.load_rig()
        self.cameras = self.rig.camera_names
        self.reference = resolve_reference(reference, self.cameras)
        self.lidar_fallback = resolve_lidar_fallback(lidar_fallback, self.reference, self.cameras)
        self.model.postprocess_cfg.score_threshold = self.score_threshold
        self.model.postprocess_cfg.max_objects = self.max_objects
        self.model_config.blind_zone_hold.enabled = blind_zone_hold   # the model's and the runner's object
        self.model.blind_zone_hold_cfg = self.model_config.blind_zone_hold
        # What runs a frame: the eager model, or the fixed-shape runner with the same call shape.
        self.inference = self.model
        if fast_path:
            self.inference = FixedShapeRunner(self.model, self.model_config, lidar_bucket, compile=compile_graph)
        self.autocast_dtype = PRECISIONS[self.precision]
        self.image_size = (self.rig.image_height, self.rig.image_width)
        self.batcher = ImageBatcher(len(self.cameras), self.image_size, self.device)
        self.jpeg_decoder = CompressedDecoder(self.device)
        self.nominal = self.rig.calibration(1)
        self.state = self.inference.initial_state()
        self.sequence = 0
        self.diagnostics_period_ns = int(diagnostics_period_s * 1e9)

        # Shared between the ingesting executor thread and the inference worker: under _lock.
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        thresholds = HealthThresholds(max_sync_offset_s=slop_s, **camera_thresholds)
        self.health = {name: CameraHealth(name, thresholds) for name in self.cameras}
        self.lidar_health = LidarHealth(thresholds=LidarThresholds(
            timeout_s=camera_thresholds["timeout_s"], min_points=lidar_min_points,
            fail_after=camera_thresholds["fail_after"], recover_after=camera_thresholds["recover_after"]))
        self.assembler = FrameAssembler(self.cameras, slop_ns=int(slop_s * 1e9), cache_size=cache_size,
                                        hold_ns=int(hold_s * 1e9))
        self.lidar_sweeps = self.model_config.lidar.sweeps if self.model_config.lidar.enable else 1
        self.clouds: deque[CloudEntry] = deque(maxlen=max(cache_size, self.lidar_sweeps + 2))
        self.mailbox = LatestFrameMailbox()
        self.load = LoadMonitor(warn_ratio=warn_ratio, error_ratio=error_ratio)
        self.dropped: Counter = Counter()                  # reason -> messages dropped since start
        self._recent_drops: deque[float] = deque()         # monotonic times of drops within drop_window_s
        self.tf_outcomes: Counter = Counter()
        self.frames_out = 0
        self.references_received = 0      # reference messages that asked for a frame
        self.fallback_references = 0      # of which images of sync.lidar_fallback while the LiDAR was silent
        self._fallback_watch: tuple[float, float] | None = None   # fallback camera's (first, newest) stamp, s
        self._fallback_offered_ns: int | None = None
        self.last_reference_ns: int | None = None          # the worker's own: the assembler resets on time jumps
        self.camera_infos: dict[str, CameraInfo] = {}
        self.path: PathMsg | None = None
        self.trails = Trails(trail_length)
        self.last_diagnostics: tuple[int, tuple] | None = None      # (reference time, what it reported)
        self._busy = False
        self._stop = threading.Event()

        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)
        for name in self.cameras:
            topic = name.lower()
            if compressed:
                self.create_subscription(CompressedImage, f"~/input/{topic}/image/compressed",
                                         lambda msg, n=name: self.on_image(n, msg), qos_profile_sensor_data)
            else:
                self.create_subscription(Image, f"~/input/{topic}/image", lambda msg, n=name: self.on_image(n, msg),
                                         qos_profile_sensor_data)
            self.create_subscription(CameraInfo, f"~/input/{topic}/camera_info",
                                     lambda msg, n=name: self.camera_infos.__setitem__(n, msg), qos_profile_sensor_data)
        self.create_subscription(PointCloud2, "~/input/points", self.on_points, qos_profile_sensor_data)
        self.create_subscription(PathMsg, "~/input/path", lambda msg: setattr(self, "path", msg), 10)
        self.objects_pub = self.create_publisher(DynamicObjectArray, "~/output/objects", 10)
        self.health_pub = self.create_publisher(CameraHealthMsg, "~/output/camera_health", 10)
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.markers_pub = self.create_publisher(MarkerArray, "~/output/markers", 10)
        self.bev_pub = self.create_publisher(Image, "~/output/bev_image", 2)
        self.timing_pub = self.create_publisher(DiagnosticStatus, "~/output/timing", 10)
        self.worker = threading.Thread(target=self._work, name="sparsecomp-inference", daemon=True)
        self.worker.start()
        self.get_logger().info(f"sparsecomp perception: {len(self.cameras)} cameras {self.cameras}, "
                               f"model {self.model_config.name} on {self.device}, reference {self.reference}")

    # --- ingestion (executor thread): never waits for the model --------------------------------
    def on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        stamp_ns = time_to_ns(msg.header.stamp)
        info = self.camera_infos.get(camera)
        expected = (info.height, info.width) if info is not None and info.width else None
        try:
            if isinstance(msg, CompressedImage):
                rgb = self.jpeg_decoder.decode(msg)        # on the GPU (nvjpeg) when the model runs there
                if expected is not None and tuple(rgb.shape[:2]) != expected:
                    raise BadMessage(f"size {rgb.shape[0]}x{rgb.shape[1]}, CameraInfo says {expected[0]}x{expected[1]}")
            else:
                rgb = image_to_rgb(msg, expected)
            small = health_view(rgb)
        except BadMessage as exc:
            with self._lock:
                self._drop(f"image: {drop_kind(exc)}")
                self.health[camera].observe_bad(ns_to_s(stamp_ns), str(exc))
            return
        with self._arrived:
            verdict = self.health[camera].observe(ns_to_s(stamp_ns), small)
            self.assembler.add_image(camera, stamp_ns, (rgb, verdict))
            if self.reference == camera:
                self._offer(stamp_ns)
            elif self.lidar_fallback == camera and self._lidar_silent(ns_to_s(stamp_ns)):
                self.fallback_references += 1
                self._fallback_offered_ns = stamp_ns
                self._offer(stamp_ns)
            if self.mailbox.pending is not None:          # only a worker waiting for cameras cares
                self._arrived.notify_all()

    def on_points(self, msg: PointCloud2) -> None:
        stamp_ns = time_to_ns(msg.header.stamp)
        try:
            cloud = cloud_to_array(msg)
        except BadMessage as exc:
            with self._lock:
                self._drop(f"point cloud: {drop_kind(exc)}")
                self.lidar_health.observe_bad(ns_to_s(stamp_ns), str(exc))
            self.get_logger().warning(f"dropped a point cloud: {exc}", throttle_duration_sec=5.0)
            cloud = np.zeros((0, 4), np.float32)          # keep publishing, camera only for this frame
        else:
            with self._lock:
                self.lidar_health.observe(ns_to_s(stamp_ns), cloud)
        with self._arrived:
            self.clouds.append(CloudEntry(stamp_ns, msg.header.frame_id or self.ego_frame, cloud))
            if self.reference == "lidar" and stamp_ns != self._fallback_offered_ns:
                self._offer(stamp_ns)   # (a frame at this stamp was built from the fallback camera already)
            self._arrived.notify_all()

    def _offer(self, stamp_ns: int) -> None:
        """Under _lock: a reference asks for a frame; a request still waiting is skipped."""
        now = time.monotonic()
        self.references_received += 1
        self.load.reference_offered(now)
        if self.mailbox.offer(FrameRequest(stamp_ns, now)) is not None:
            self.load.frame_skipped()

    def _lidar_silent(self, t: float) -> bool:
        """Under _lock, for an image of the fallback camera stamped ``t`` (s): the camera kept
        delivering while the LiDAR did not, i.e. its previous image is stamped more than
        health.timeout_s after the newest sweep of this recording (after its first image, if no
        sweep came). A gap in every stream (a paused bag) is no LiDAR fault: the previous image
        lies before it. Stamps that jump back (a looped bag) start a new recording."""
        timeout = self.lidar_health.thresholds.timeout_s
        if self._fallback_watch is None or t < self._fallback_watch[1] - max(1.0, timeout):
            self._fallback_watch = (t, t)                   # the first image, or a looped bag: watch afresh
        first, previous = self._fallback_watch
        self._fallback_watch = (first, max(t, previous))
        last = self.lidar_health.last_stamp
        heard = last is not None and last <= t + max(1.0, timeout)     # (a sweep far ahead: an old recording)
        return previous - (last if heard else first) > timeout

    def _drop(self, reason: str) -> None:
        """Under _lock: count a dropped message (total, and recent for the node's level)."""
        self.dropped[reason] += 1
        self._recent_drops.append(time.monotonic())

    # --- the inference worker ------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            taken = self._take_frame()
            if taken is None:
                continue
            request, frame, statuses, lidar_status, started_after_s = taken
            try:
                self.process(request, frame, statuses, lidar_status, started_after_s)
            except Exception as exc:  # never die on one frame; say why
                if self._stop.is_set():
                    return
                with self._lock:
                    self._drop(f"frame failed: {type(exc).__name__}")
                self.get_logger().error(f"frame {request.reference_ns} failed: {exc!r}", throttle_duration_sec=5.0)
            finally:
                with self._arrived:
                    self._busy = False
                    self._arrived.notify_all()

    def _take_frame(self):
        """Wait for the newest reference, then (bounded) for cameras that fire just after it;
        assemble its frame and judge the sensors, all under the lock."""
        with self._arrived:
            if self.mailbox.pending is None:
                self._arrived.wait(0.1)
                return None
            request = self.mailbox.pending
            deadline = request.arrived_s + self.sync_wait_s
            while not self._stop.is_set() and self.mailbox.pending is request:
                now = time.monotonic()
                if now >= deadline or all(self._camera_settled(name, request.reference_ns) for name in self.cameras):
                    break
                self._arrived.wait(deadline - now)
            if self._stop.is_set() or self.mailbox.pending is not request:
                return None                                  # a newer reference came: take that one instead
            self.mailbox.take()
            self._busy = True
            started_after_s = time.monotonic() - request.arrived_s
            reference_ns = request.reference_ns
            if self.last_reference_ns is not None and reference_ns <= self.last_reference_ns:
                if reference_ns == self.last_reference_ns:
                    self._drop("duplicate reference stamp")
                    self._busy = False
                    return None
                self._drop("time went backwards")
                self.get_logger().warning("time went backwards: temporal state reset", throttle_duration_sec=5.0)
                self.reset_temporal_state()
                for stale in [entry for entry in self.clouds if entry.stamp_ns > reference_ns]:
                    self.clouds.remove(stale)                # the old recording's sweeps
            self.last_reference_ns = reference_ns
            frame = self.assembler.assemble(reference_ns, self._cloud_for(reference_ns))
            reference_s = ns_to_s(reference_ns)
            statuses = []
            for name in self.cameras:
                picked = frame.images[name]
                nearest = frame.nearest_ns[name]
                if picked is not None:
                    statuses.append(self.health[name].assess(reference_s, ns_to_s(picked[0]), picked[1][1]))
                else:       # images only after the frame: out of sync; none since before it: no frame
                    ahead = nearest is not None and nearest > reference_ns
                    statuses.append(self.health[name].assess(reference_s, ns_to_s(nearest) if ahead else None))
            lidar_status = self.lidar_health.assess(reference_s)
        return request, frame, statuses, lidar_status, started_after_s

    def _camera_settled(self, camera: str, reference_ns: int) -> bool:
        """Under _lock: waiting cannot give this camera a nearer image (it has one at or after the
        reference, or it is silent: no image within the health timeout)."""
        latest = self.assembler.latest_ns(camera)
        timeout_ns = int(self.health[camera].thresholds.timeout_s * 1e9)
        return latest is None or reference_ns - latest > timeout_ns or self.assembler.settled(camera, reference_ns)

    def _cloud_for(self, reference_ns: int) -> CloudEntry | None:
        """Under _lock: the sweep nearest to the reference within the slop."""
        best = min(self.clouds, key=lambda entry: abs(entry.stamp_ns - reference_ns), default=None)
        if best is None or abs(best.stamp_ns - reference_ns) > self.assembler.slop_ns:
            return None
        return best

    def process(self, request: FrameRequest, frame: AssembledFrame, statuses: list[dict], lidar_status: dict,
                started_after_s: float) -> None:
        started = time.perf_counter()
        reference_ns = frame.reference_ns
        cloud_entry: CloudEntry | None = frame.reference
        cloud = np.zeros((0, 4), np.float32) if cloud_entry is None else self.in_ego_frame(cloud_entry)
        unusable = [s["failed"] or frame.images[s["name"]] is None for s in statuses]
        cam_mask = torch.tensor([unusable])
        images = self.batcher.build([None if skip else frame.images[name][1][0]
                                     for skip, name in zip(unusable, self.cameras)])
        ego2global = self.ego_pose(reference_ns)
        calibration = self.calibration(frame, unusable, ego2global)
        if ego2global is None:                            # degrade: no motion compensation possible
            self.reset_temporal_state()
            ego2global = np.eye(4)
            sweeps = []
        else:
            sweeps = self.previous_sweeps(reference_ns, sweeps_wanted=self.lidar_sweeps - 1)
        lidar_input = cloud
        if self.lidar_sweeps > 1:     # the model takes [N, 5]: merged sweeps with their time lag
            lidar_input = merge_sweeps([(cloud, ego2global, reference_ns // 1000)] + sweeps, ego2global,
                                       reference_ns // 1000)
        assembled = time.perf_counter()
        inputs = FrameInputs(images, cam_mask, calibration, torch.from_numpy(ego2global)[None],
                             torch.tensor([reference_ns // 1000]), [torch.from_numpy(lidar_input)],
                             [f"live-{self.sequence}"], self.ego_path()).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None and self.device.type == "cuda"):
            detections, self.state = self.inference.infer(inputs, self.state)
        inferred = time.perf_counter()
        if self._stop.is_set():
            return                                        # shutting down: the publishers may be gone
        self.publish(detections[0], statuses, lidar_status, cam_mask[0], reference_ns, ego2global, cloud, frame,
                     calibration)
        done = time.perf_counter()
        with self._lock:
            self.frames_out += 1
            self.load.frame_processed(done - started)
        self.timing_pub.publish(DiagnosticStatus(name="sparsecomp timing", values=[
            KeyValue(key=k, value=f"{v * 1e3:.1f}") for k, v in (
                ("reference_to_start_ms", started_after_s), ("assemble_ms", assembled - started),
                ("model_ms", inferred - assembled), ("publish_ms", done - inferred), ("processing_ms", done - started),
                ("reference_to_output_ms", time.monotonic() - request.arrived_s))]
            + [KeyValue(key="skipped: model busy", value=str(self.mailbox.skipped)),
               KeyValue(key="references received", value=str(self.references_received))]))

    def in_ego_frame(self, entry: CloudEntry) -> np.ndarray:
        """[N, 4] points of a sweep in the ego frame (through the LiDAR's extrinsic from tf)."""
        cloud = entry.points
        if len(cloud) and entry.frame_id != self.ego_frame:
            lidar2ego = self.lookup(self.ego_frame, entry.frame_id, None, "lidar extrinsic")
            if lidar2ego is not None and not np.array_equal(lidar2ego, np.eye(4)):
                cloud = cloud.copy()
                cloud[:, :3] = cloud[:, :3] @ lidar2ego[:3, :3].T.astype(np.float32) + lidar2ego[:3, 3].astype(np.float32)
        return cloud

    def previous_sweeps(self, reference_ns: int, sweeps_wanted: int) -> list[tuple[np.ndarray, np.ndarray, int]]:
        """Up to ``sweeps_wanted`` sweeps before the reference, newest first, as ``merge_sweeps`` takes
        them: (points in that sweep's ego frame, its ego pose from tf, stamp in us). Only sweeps
        at most health.timeout_s old (older ones are stale: the LiDAR went silent), of the current
        recording (the buffer holds nothing newer than the reference after a time jump: those are
        skipped) and with a pose in tf."""
        if sweeps_wanted <= 0:
            return []
        oldest_ns = reference_ns - int(self.lidar_health.thresholds.timeout_s * 1e9)
        with self._lock:      # a sweep older than the LiDAR timeout is stale (the LiDAR went silent)
            older = sorted((entry for entry in self.clouds if oldest_ns <= entry.stamp_ns < reference_ns),
                           key=lambda entry: entry.stamp_ns, reverse=True)[:sweeps_wanted]
        sweeps = []
        for entry in older:
            pose = self.lookup(self.odom_frame, self.ego_frame, entry.stamp_ns, "sweep ego pose")
            if pose is not None:
                sweeps.append((self.in_ego_frame(entry), pose, entry.stamp_ns // 1000))
        return sweeps

    def reset_temporal_state(self) -> None:
        self.sequence += 1
        self.state = self.inference.initial_state()
        self.trails.clear()

    # --- tf ------------------------------------------------------------------------------------
    def lookup(self, target: str, source: str, stamp_ns: int | None, count_as: str,
               wait_s: float = 0.0) -> np.ndarray | None:
        """target <- source at ``stamp_ns`` (None: latest), waiting up to ``wait_s`` for it;
        the outcome is counted under ``count_as`` in the node status."""
        if target == source:
            return np.eye(4)
        when = RclpyTime() if stamp_ns is None else RclpyTime(nanoseconds=stamp_ns)
        outcome = "found"
        try:
            if wait_s > 0 and not self.tf_buffer.can_transform(target, source, when):
                outcome = "found after waiting (tf late)"
                transform = self.tf_buffer.lookup_transform(target, source, when, timeout=Duration(seconds=wait_s))
            else:
                transform = self.tf_buffer.lookup_transform(target, source, when)
            with self._lock:
                self.tf_outcomes[f"{count_as}: {outcome}"] += 1
            return transform_to_matrix(transform.transform)
        except TransformException as exc:  # lookup, connectivity, extrapolation (after the wait)
            with self._lock:
                self.tf_outcomes[f"{count_as}: missing"] += 1
            self.get_logger().warning(f"no transform {target} <- {source}: {exc}", throttle_duration_sec=5.0)
            return None

    def ego_pose(self, reference_ns: int) -> np.ndarray | None:
        """odom <- ego at the frame's stamp, waiting briefly when tf is a little late; None
        (the caller resets the temporal state) when it does not come."""
        pose = self.lookup(self.odom_frame, self.ego_frame, reference_ns, "ego pose", self.tf_wait_s)
        if pose is None:
            with self._lock:
                self._drop("ego pose missing: temporal state reset")
        return pose

    def calibration(self, frame: AssembledFrame, unusable: list[bool], ego2global: np.ndarray | None) -> Calibration:
        """From CameraInfo and tf where available, else the rig's nominal values. A camera whose
        image was taken at t_img while the frame is at t_ref is placed where the vehicle was
        then: ego(t_ref)^-1 * ego(t_img) * cam2ego (at 10 m/s, 30 ms is 0.3 m)."""
        intrinsics, cam2ego = self.nominal.intrinsics.clone(), self.nominal.cam2ego.clone()
        global2ego = None if ego2global is None else np.linalg.inv(ego2global)
        for index, name in enumerate(self.cameras):
            info = self.camera_infos.get(name)
            if info is not None and info.width:
                k = np.array(info.k, dtype=np.float64).reshape(3, 3)
                k[0, 2] += 0.5                                  # OpenCV pixel centres -> ours
                k[1, 2] += 0.5
                k[0] *= self.image_size[1] / info.width
                k[1] *= self.image_size[0] / info.height
                intrinsics[0, index] = torch.from_numpy(k).float()
                extrinsic = (self.lookup(self.ego_frame, info.header.frame_id, None, "camera extrinsic")
                             if info.header.frame_id else None)
                if extrinsic is not None:
                    cam2ego[0, index] = torch.from_numpy(extrinsic).float()
            picked = frame.images[name]
            if unusable[index] or picked is None or global2ego is None or picked[0] == frame.reference_ns:
                continue
            ego_at_image = self.lookup(self.odom_frame, self.ego_frame, picked[0], "camera ego pose")
            if ego_at_image is not None:
                motion = torch.from_numpy(global2ego @ ego_at_image).float()
                cam2ego[0, index] = motion @ cam2ego[0, index]
        return Calibration(intrinsics, cam2ego, self.image_size)

    def ego_path(self) -> torch.Tensor | None:
        """The planner's latest path in the ego frame ([1, T, 2]) or None."""
        path = self.path
        if path is None or not path.poses:
            return None
        to_ego = self.lookup(self.ego_frame, path.header.frame_id or self.ego_frame, None, "path frame")
        if to_ego is None:
            return None
        xyz = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses])
        local = xyz @ to_ego[:3, :3].T + to_ego[:3, 3]
        ahead = local[local[:, 0] > 0][:12, :2]
        return torch.from_numpy(ahead).float()[None] if len(ahead) else None

    # --- outputs ------------------------------------------------------------------------------
    def publish(self, detections: dict, statuses: list[dict], lidar_status: dict, cam_mask: torch.Tensor,
                reference_ns: int, ego2global: np.ndarray, cloud: np.ndarray, frame: AssembledFrame,
                calibration: Calibration) -> None:
        stamp = RclpyTime(nanoseconds=reference_ns).to_msg()
        ego_header = Header(stamp=stamp, frame_id=self.ego_frame)
        det = {k: v.detach().cpu().numpy() for k, v in detections.items()}
        failed = [name for name, masked in zip(self.cameras, cam_mask.tolist()) if masked]
        if self.output_frame and self.output_frame != self.ego_frame:
            moved = dict(det, boxes=transform_boxes(det["boxes"], ego2global))
            self.objects_pub.publish(detections_to_msg(moved, Header(stamp=stamp, frame_id=self.output_frame), failed))
        else:
            self.objects_pub.publish(detections_to_msg(det, ego_header, failed))
        self.health_pub.publish(health_to_msg(statuses, ego_header))
        with self._lock:
            levels = (self.node_level(), self.load.status()["level"])
        if self.diagnostics_due(reference_ns, statuses, lidar_status, levels):
            diagnostics = health_to_diagnostics(statuses, ego_header, self.get_name())
            with self._lock:
                diagnostics.status += [self.lidar_diagnostic(lidar_status), self.node_status(), self.load_status()]
            self.diagnostics_pub.publish(diagnostics)
        positions = det["boxes"][:, :3].astype(np.float64) @ ego2global[:3, :3].T + ego2global[:3, 3]
        self.trails.update(det["ids"], positions)
        if self.markers_pub.get_subscription_count():     # skip work nobody asked for
            self.markers_pub.publish(markers(det, ego_header, self.velocity_scale, self.trails, np.linalg.inv(ego2global)))
        if self.bev_pub.get_subscription_count():      # thumbnails in rig layout, health, BEV, ids, failed views
            thumbnails = {name: None if picked is None else health_view(picked[1][0])
                          for name, picked in frame.images.items()}
            picture = debug_picture(det, cloud, self.rig, thumbnails, statuses,
                                    cam2ego=calibration.cam2ego[0].numpy(), time_s=reference_ns * 1e-9)
            self.bev_pub.publish(rgb_to_image(picture, ego_header))

    def diagnostics_due(self, reference_ns: int, statuses: list[dict], lidar_status: dict, levels: tuple) -> bool:
        """Once a diagnostics period of frame time, and at once when a verdict or a level changes."""
        reported = (tuple((st["failed"], st["reason"]) for st in statuses), lidar_status["failed"],
                    lidar_status["reason"], levels)
        last = self.last_diagnostics
        if (last is not None and reported == last[1]
                and 0 <= reference_ns - last[0] < self.diagnostics_period_ns):
            return False
        self.last_diagnostics = (reference_ns, reported)
        return True

    def node_status(self) -> DiagnosticStatus:
        """Under _lock: frames out, skipped frames, dropped messages by reason, tf outcomes. WARN while
        a message was dropped within diagnostics.drop_window_s (the totals stay in the values)."""
        level = self.node_level()
        drops, recent = self.dropped, len(self._recent_drops)
        values = [KeyValue(key="references received", value=str(self.references_received)),
                  KeyValue(key="of which from the fallback camera (LiDAR silent)", value=str(self.fallback_references)),
                  KeyValue(key="frames_out", value=str(self.frames_out)),
                  KeyValue(key="skipped: model busy", value=str(self.mailbox.skipped))]
        values += [KeyValue(key=f"dropped: {reason}", value=str(count)) for reason, count in sorted(drops.items())]
        values += [KeyValue(key=f"tf: {outcome}", value=str(count)) for outcome, count in sorted(self.tf_outcomes.items())]
        message = (f"{recent} messages dropped in the last {self.drop_window_s:g} s" if recent
                   else f"ok ({sum(drops.values())} dropped since start)" if drops else "ok")
        return DiagnosticStatus(level=level, name=f"{self.get_name()}: node", hardware_id="sparsecomp",
                                message=message, values=values)

    def node_level(self) -> bytes:
        """Under _lock: WARN while a message was dropped within diagnostics.drop_window_s."""
        now = time.monotonic()
        while self._recent_drops and self._recent_drops[0] < now - self.drop_window_s:
            self._recent_drops.popleft()
        return DiagnosticStatus.WARN if self._recent_drops else DiagnosticStatus.OK

    def load_status(self) -> DiagnosticStatus:
        """Under _lock: is the model keeping up with the sensors (processing time vs sensor period)?"""
        status = self.load.status()
        values = [KeyValue(key=key, value="n/a" if value is None else
                           (f"{value:.1f}" if isinstance(value, float) else str(value)))
                  for key, value in status.items() if key not in ("level", "message")]
        values.append(KeyValue(key="skipped: model busy (total)", value=str(self.mailbox.skipped)))
        return DiagnosticStatus(level=bytes([status["level"]]), name=f"{self.get_name()}: processing load",
                                hardware_id="sparsecomp", message=status["message"], values=values)

    def lidar_diagnostic(self, status: dict) -> DiagnosticStatus:
        level = DiagnosticStatus.ERROR if status["failed"] else (
            DiagnosticStatus.WARN if status["reason"] else DiagnosticStatus.OK)
        return DiagnosticStatus(
            level=level, name=f"{self.get_name()}: lidar", hardware_id="lidar", message=status["message"] or "ok",
            values=[KeyValue(key=k, value=f"{status[k]:.4g}" if isinstance(status[k], float) else str(status[k]))
                    for k in ("reason", "cloud_age_s", "points", "bad_clouds", "consecutive_faults", "consecutive_ok")])

    # --- lifecycle -------------------------------------------------------------------------------
    def wait_until_idle(self, timeout_s: float = 60.0) -> bool:
        """True once no frame is waiting or being processed (tests and clean shutdown)."""
        end = time.monotonic() + timeout_s
        with self._arrived:
            while self.mailbox.pending is not None or self._busy:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                self._arrived.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the worker: a frame in inference finishes but is not published."""
        self._stop.set()
        with self._arrived:
            self._arrived.notify_all()
        if self.worker.is_alive() and threading.current_thread() is not self.worker:
            self.worker.join(timeout_s)

    def destroy_node(self) -> None:
        self.stop()
        super().destroy_node()


DROP_KINDS = (("encoding", "unsupported encoding"), ("empty", "empty"), ("size", "wrong size"),
              ("step", "bad step"), ("truncated", "truncated"), ("needs", "odd size for its encoding"),
              ("cv_bridge", "does not convert"), ("compressed", "does not decode"), ("point cloud has no", "missing field"),
              ("point_step", "bad point step"), ("big-endian", "big-endian"), ("field", "bad field"),
              ("point fields", "bad field layout"))


def drop_kind(exc: BadMessage) -> str:
    """A short, fixed reason for the drop counters (the full text goes to the sensor's status)."""
    text = str(exc)
    return next((kind for prefix, kind in DROP_KINDS if text.startswith(prefix)), "bad format")


def make_executor(context=None) -> rclpy.executors.Executor:
    """rclpy's C++ EventsExecutor where this rclpy has it (about 5 ms less CPU per frame for the
    node's 7 images + cloud than the Python SingleThreadedExecutor: docs/performance.md), else
    the SingleThreadedExecutor. Only ingestion runs on it; inference has its own thread."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return rclpy.executors.SingleThreadedExecutor(context=context)
    return EventsExecutor(context=context)


def main(args=None) -> int:
    # Our own SIGINT/SIGTERM handling: stop the worker before the context goes away, so a
    # Ctrl-C during inference exits 0 instead of publishing into a dead context.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        node = PerceptionNode()
    except ParameterError as exc:
        rclpy.logging.get_logger("sparsecomp_perception").fatal(str(exc))
        rclpy.try_shutdown()
        return 2
    executor = make_executor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():   # not spin(): EventsExecutor.spin() ran no callback with rclpy 9.1.2
            executor.spin_once(timeout_sec=0.1)
    except rclpy.executors.ExternalShutdownException:
        pass
    finally:
        node.stop()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
