"""The perception node: cameras + LiDAR + tf -> camera health, completion,
3D dynamic objects with velocity, occlusion and ids.

Inputs (remappable): ~/input/<camera>/image (sensor_msgs/Image) and
~/input/<camera>/camera_info for every camera of the model's rig (lower-case
names), ~/input/points (PointCloud2), optional ~/input/path (nav_msgs/Path),
/tf and /tf_static. Outputs: ~/output/objects (sparsecomp/DynamicObjectArray),
~/output/camera_health (sparsecomp/CameraHealth), /diagnostics,
~/output/markers (MarkerArray), ~/output/bev_image (Image),
~/output/timing (diagnostic_msgs/DiagnosticStatus with per-stage times).

A frame is assembled when a LiDAR sweep arrives (or an image of the
reference camera), from each camera's nearest image within the slop; a
missing, late or faulty camera is masked, never waited for. Bad messages are
dropped, counted and reported in /diagnostics; the node keeps publishing.
"""
from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import rclpy
import rclpy.executors
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Path as PathMsg
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.time import Time as RclpyTime
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from sparsecomp.msg import CameraHealth as CameraHealthMsg
from sparsecomp.msg import DynamicObjectArray
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from sparsecomp_core.geometry import Calibration
from sparsecomp_core.models.detector import FrameInputs, load_detector

from .camera_health import CameraHealth, HealthThresholds
from .conversions import (BadMessage, cloud_to_array, compressed_to_rgb, detections_to_msg, health_to_diagnostics,
                          health_to_msg, image_to_rgb, rgb_to_image, stamp_to_us, transform_to_matrix, us_to_stamp)
from .frame_assembler import FrameAssembler
from .image_batch import ImageBatcher
from .tf_compat import Buffer, TransformListener
from .visualization import Trails, bev_image, markers


def default_checkpoint() -> str:
    """models/tiny_default.pt from the source tree, or from the installed package's share folder."""
    source = Path(__file__).resolve().parent.parent / "models" / "tiny_default.pt"
    if source.exists():
        return str(source)
    try:
        from ament_index_python.packages import get_package_share_directory
        return str(Path(get_package_share_directory("sparsecomp")) / "models" / "tiny_default.pt")
    except Exception:  # no ament index: report the source-tree path in the error
        return str(source)


class PerceptionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sparsecomp_perception", **kwargs)

        def param(name, default, description):
            return self.declare_parameter(name, default, ParameterDescriptor(description=description)).value

        checkpoint = param("model.checkpoint", "", "trained model file (weights + model config); '' = shipped default")
        checkpoint = checkpoint or default_checkpoint()
        device = param("model.device", "auto", "'auto' (cuda when available), 'cuda', 'cuda:N' or 'cpu'")
        self.precision = param("model.precision", "fp32", "fp32, bf16 or fp16 (autocast on CUDA)")
        self.reference = param("sync.reference", "lidar", "'lidar' or a camera name: whose arrival builds a frame")
        slop_s = param("sync.slop_s", 0.06, "largest |image stamp - reference stamp| used for a frame, s")
        self.ego_frame = param("frames.ego", "base_link", "vehicle frame")
        self.odom_frame = param("frames.odom", "odom", "fixed frame of the ego pose (odom or map)")
        self.output_frame = param("frames.output", "", "frame of published objects: '' = ego frame, or the odom frame")
        self.score_threshold = param("output.score_threshold", 0.3, "minimum score of a published object")
        self.max_objects = param("output.max_objects", 100, "most objects published per frame")
        self.velocity_scale = param("viz.velocity_scale", 5.0, "velocity arrow length scale in RViz")
        trail_length = param("viz.trajectory_length", 10, "positions kept per object for RViz trails")
        compressed = param("input.compressed", False, "subscribe ~/input/<camera>/image/compressed (CompressedImage)")
        self.diagnostics_period_us = int(1e6 * param(
            "diagnostics.period_s", 1.0, "/diagnostics at least this often, and at once when a camera's verdict or "
            "the drop counts change (~/output/camera_health is published every frame)"))
        thresholds = HealthThresholds(timeout_s=param("health.timeout_s", 0.5, "no image for this long: failed"),
                                      max_sync_offset_s=slop_s,
                                      fail_after=param("health.fail_after", 2, "faulty frames before a camera fails"),
                                      recover_after=param("health.recover_after", 5, "healthy frames before it recovers"))

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
            if device == "cpu":
                self.get_logger().warning("no CUDA device: running the model on the CPU (slow)")
        self.device = torch.device(device)
        self.model, self.model_config = load_detector(checkpoint, self.device)
        self.model.postprocess_cfg.score_threshold = self.score_threshold
        self.model.postprocess_cfg.max_objects = self.max_objects
        self.rig = self.model_config.load_rig()
        self.cameras = self.rig.camera_names
        self.image_size = (self.rig.image_height, self.rig.image_width)
        self.batcher = ImageBatcher(len(self.cameras), self.image_size, self.device)
        self.nominal = self.rig.calibration(1)
        self.state = self.model.initial_state()
        self.sequence = 0
        self.health = {name: CameraHealth(name, thresholds) for name in self.cameras}
        self.assembler = FrameAssembler(self.cameras, slop_us=int(slop_s * 1e6))
        self.camera_infos: dict[str, CameraInfo] = {}
        self.path: PathMsg | None = None
        self.dropped: Counter = Counter()
        self.frames_out = 0
        self.last_reference_us: int | None = None     # the node's own: the assembler resets on time jumps
        self.trails = Trails(trail_length)
        self.last_diagnostics: tuple[int, tuple] | None = None      # (reference time, what it reported)
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
        self.get_logger().info(f"sparsecomp perception: {len(self.cameras)} cameras {self.cameras}, "
                               f"model {self.model_config.name} on {self.device}, reference {self.reference}")

    # --- inputs ------------------------------------------------------------------------------
    def on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        stamp_us = stamp_to_us(msg.header.stamp)
        info = self.camera_infos.get(camera)
        expected = (info.height, info.width) if info is not None and info.width else None
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_to_rgb(msg)
                if expected is not None and rgb.shape[:2] != expected:
                    raise BadMessage(f"size {rgb.shape[0]}x{rgb.shape[1]}, CameraInfo says {expected[0]}x{expected[1]}")
            else:
                rgb = image_to_rgb(msg, expected)
        except BadMessage as exc:
            self.dropped[f"image from {camera}"] += 1
            self.health[camera].observe_bad(stamp_us / 1e6, str(exc))
            return
        self.health[camera].observe(stamp_us / 1e6, rgb)
        self.assembler.add_image(camera, stamp_us, rgb)
        if self.reference == camera:
            self.process(stamp_us, np.zeros((0, 4), np.float32), msg.header)

    def on_points(self, msg: PointCloud2) -> None:
        if self.reference != "lidar":
            return
        try:
            cloud = cloud_to_array(msg)
        except BadMessage as exc:
            self.dropped["point cloud"] += 1
            self.get_logger().warning(f"dropped a point cloud: {exc}", throttle_duration_sec=5.0)
            cloud = np.zeros((0, 4), np.float32)          # keep publishing, camera only for this frame
        lidar2ego = self.lookup(self.ego_frame, msg.header.frame_id or self.ego_frame, None)
        if lidar2ego is not None and len(cloud) and not np.array_equal(lidar2ego, np.eye(4)):
            cloud[:, :3] = cloud[:, :3] @ lidar2ego[:3, :3].T.astype(np.float32) + lidar2ego[:3, 3].astype(np.float32)
        self.process(stamp_to_us(msg.header.stamp), cloud, msg.header)

    def lookup(self, target: str, source: str, stamp_us: int | None) -> np.ndarray | None:
        if target == source:
            return np.eye(4)
        time_arg = RclpyTime() if stamp_us is None else RclpyTime(nanoseconds=stamp_us * 1000)
        try:
            return transform_to_matrix(self.tf_buffer.lookup_transform(target, source, time_arg).transform)
        except Exception as exc:  # tf2 lookup/extrapolation/connectivity errors
            self.dropped[f"tf {target}<-{source}"] += 1
            self.get_logger().warning(f"no transform {target} <- {source}: {exc}", throttle_duration_sec=5.0)
            return None

    # --- a frame -------------------------------------------------------------------------------
    def process(self, reference_us: int, cloud: np.ndarray, header: Header) -> None:
        started = time.perf_counter()
        last, self.last_reference_us = self.last_reference_us, reference_us
        if last is not None and reference_us == last:
            self.dropped["duplicate reference stamp"] += 1
            return
        if last is not None and reference_us < last:
            self.dropped["time went backwards"] += 1
            self.get_logger().warning("time went backwards: temporal state reset", throttle_duration_sec=5.0)
            self.reset_temporal_state()
        frame = self.assembler.assemble(reference_us, cloud)
        statuses = []
        for name in self.cameras:
            picked = frame.images[name]
            statuses.append(self.health[name].assess(reference_us / 1e6, None if picked is None else picked[0] / 1e6))
        unusable = [s["failed"] or frame.images[s["name"]] is None for s in statuses]
        cam_mask = torch.tensor([unusable])
        images = self.batcher.build([None if skip else frame.images[name][1]
                                     for skip, name in zip(unusable, self.cameras)])
        ego2global = self.lookup(self.odom_frame, self.ego_frame, reference_us)
        if ego2global is None:                            # degrade: no motion compensation possible
            self.reset_temporal_state()
            ego2global = np.eye(4)
        decoded = time.perf_counter()
        inputs = FrameInputs(images, cam_mask, self.calibration(), torch.from_numpy(ego2global)[None],
                             torch.tensor([reference_us]), [torch.from_numpy(cloud)], [f"live-{self.sequence}"],
                             self.ego_path(reference_us)).to(self.device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32,
                            enabled=dtype is not None and self.device.type == "cuda"):
            detections, self.state = self.model.infer(inputs, self.state)
        inferred = time.perf_counter()
        self.publish(detections[0], statuses, cam_mask[0], reference_us, ego2global, cloud)
        done = time.perf_counter()
        self.frames_out += 1
        self.timing_pub.publish(DiagnosticStatus(name="sparsecomp timing", values=[
            KeyValue(key=k, value=f"{v * 1e3:.1f}") for k, v in (
                ("decode_sync_health_ms", decoded - started), ("model_ms", inferred - decoded),
                ("publish_ms", done - inferred), ("total_ms", done - started))]))

    def reset_temporal_state(self) -> None:
        self.sequence += 1
        self.state = self.model.initial_state()
        self.trails.clear()

    def calibration(self) -> Calibration:
        """From CameraInfo and tf where available, else the rig's nominal values."""
        intrinsics, cam2ego = self.nominal.intrinsics.clone(), self.nominal.cam2ego.clone()
        for index, name in enumerate(self.cameras):
            info = self.camera_infos.get(name)
            if info is None or info.width == 0:
                continue
            k = np.array(info.k, dtype=np.float64).reshape(3, 3)
            k[0, 2] += 0.5                                  # OpenCV pixel centres -> ours
            k[1, 2] += 0.5
            k[0] *= self.image_size[1] / info.width
            k[1] *= self.image_size[0] / info.height
            intrinsics[0, index] = torch.from_numpy(k).float()
            extrinsic = self.lookup(self.ego_frame, info.header.frame_id, None) if info.header.frame_id else None
            if extrinsic is not None:
                cam2ego[0, index] = torch.from_numpy(extrinsic).float()
        return Calibration(intrinsics, cam2ego, self.image_size)

    def ego_path(self, reference_us: int) -> torch.Tensor | None:
        """The planner's latest path in the ego frame ([1, T, 2]) or None."""
        if self.path is None or not self.path.poses:
            return None
        frame = self.path.header.frame_id or self.ego_frame
        to_ego = self.lookup(self.ego_frame, frame, None)
        if to_ego is None:
            return None
        xy = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in self.path.poses])
        local = xy @ to_ego[:3, :3].T + to_ego[:3, 3]
        ahead = local[local[:, 0] > 0][:12, :2]
        return torch.from_numpy(ahead).float()[None] if len(ahead) else None

    # --- outputs ------------------------------------------------------------------------------
    def publish(self, detections: dict, statuses: list[dict], cam_mask: torch.Tensor, reference_us: int,
                ego2global: np.ndarray, cloud: np.ndarray) -> None:
        stamp = us_to_stamp(reference_us)
        ego_header = Header(stamp=stamp, frame_id=self.ego_frame)
        det = {k: v.detach().cpu().numpy() for k, v in detections.items()}
        failed = [name for name, masked in zip(self.cameras, cam_mask.tolist()) if masked]
        if self.output_frame and self.output_frame != self.ego_frame:
            moved = dict(det)
            boxes = det["boxes"].astype(np.float64).copy()
            boxes[:, :3] = boxes[:, :3] @ ego2global[:3, :3].T + ego2global[:3, 3]
            boxes[:, 7:10] = boxes[:, 7:10] @ ego2global[:3, :3].T
            boxes[:, 6] += math.atan2(ego2global[1, 0], ego2global[0, 0])
            moved["boxes"] = boxes
            self.objects_pub.publish(detections_to_msg(moved, Header(stamp=stamp, frame_id=self.output_frame), failed))
        else:
            self.objects_pub.publish(detections_to_msg(det, ego_header, failed))
        self.health_pub.publish(health_to_msg(statuses, ego_header))
        if self.diagnostics_due(reference_us, statuses):
            diagnostics = health_to_diagnostics(statuses, ego_header, self.get_name())
            diagnostics.status.append(self.node_status())
            self.diagnostics_pub.publish(diagnostics)
        positions = det["boxes"][:, :3].astype(np.float64) @ ego2global[:3, :3].T + ego2global[:3, 3]
        self.trails.update(det["ids"], positions)
        if self.markers_pub.get_subscription_count():     # skip work nobody asked for
            self.markers_pub.publish(markers(det, ego_header, self.velocity_scale, self.trails, np.linalg.inv(ego2global)))
        if self.bev_pub.get_subscription_count():
            self.bev_pub.publish(rgb_to_image(bev_image(det, cloud), ego_header))

    def diagnostics_due(self, reference_us: int, statuses: list[dict]) -> bool:
        reported = (tuple((st["failed"], st["reason"]) for st in statuses), tuple(sorted(self.dropped.items())))
        last = self.last_diagnostics
        if (last is not None and reported == last[1]
                and 0 <= reference_us - last[0] < self.diagnostics_period_us):
            return False
        self.last_diagnostics = (reference_us, reported)
        return True

    def node_status(self) -> DiagnosticStatus:
        level = DiagnosticStatus.WARN if self.dropped else DiagnosticStatus.OK
        values = [KeyValue(key="frames_out", value=str(self.frames_out))]
        values += [KeyValue(key=f"dropped: {reason}", value=str(count)) for reason, count in sorted(self.dropped.items())]
        return DiagnosticStatus(level=level, name=f"{self.get_name()}: node", hardware_id="sparsecomp",
                                message=f"{sum(self.dropped.values())} messages dropped" if self.dropped else "ok",
                                values=values)


def make_executor() -> rclpy.executors.Executor:
    """rclpy's C++ EventsExecutor where this rclpy has it (about 5 ms less CPU per frame for the
    node's 7 images + cloud than the Python SingleThreadedExecutor: docs/performance.md), else
    the SingleThreadedExecutor. The node uses no timers, the part of it still experimental."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return rclpy.executors.SingleThreadedExecutor()
    return EventsExecutor()


def main(args=None) -> None:
    rclpy.init(args=args)
    node = PerceptionNode()
    executor = make_executor()
    executor.add_node(node)
    try:
        while rclpy.ok():            # not executor.spin(): EventsExecutor.spin() ran no callback with rclpy 9.1.2
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
