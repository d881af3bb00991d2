"""Drive a perception node process over DDS: publish sensor data, collect outputs."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2
from sparsecomp.msg import CameraHealth, DynamicObjectArray
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from sparsecomp_ros.conversions import array_to_cloud, rgb_to_image, stamp_to_us, to_transform, us_to_stamp

NODE = "sparsecomp_perception"


def start_node(env: dict, checkpoint: str, log: Path, extra: list[str] = ()) -> subprocess.Popen:
    command = [sys.executable, "-m", "sparsecomp_ros.perception_node", "--ros-args", "-p",
               f"model.checkpoint:={checkpoint}", "-p", "model.device:=cpu", *extra]
    return subprocess.Popen(command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


class Driver(Node):
    def __init__(self, context, cameras: list[str]):
        super().__init__("sparsecomp_test_driver", context=context)
        self.cameras = cameras
        self.image_pubs = {c: self.create_publisher(Image, f"/{NODE}/input/{c.lower()}/image", qos_profile_sensor_data)
                           for c in cameras}
        self.points_pub = self.create_publisher(PointCloud2, f"/{NODE}/input/points", qos_profile_sensor_data)
        self.tf_pub = self.create_publisher(TFMessage, "/tf", 10)
        self.objects, self.health, self.diagnostics = [], [], []
        self.create_subscription(DynamicObjectArray, f"/{NODE}/output/objects", self.objects.append, 50)
        self.create_subscription(CameraHealth, f"/{NODE}/output/camera_health", self.health.append, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        self.spinner = rclpy.executors.SingleThreadedExecutor(context=context)
        self.spinner.add_node(self)

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.spinner.spin_once(timeout_sec=0.02)

    def wait_for_node(self, process: subprocess.Popen, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while self.count_subscribers(f"/{NODE}/input/points") == 0 or \
                self.count_publishers(f"/{NODE}/output/objects") == 0:
            assert process.poll() is None, "the perception node exited"
            assert time.monotonic() < end, "the perception node did not come up"
            self.spin_for(0.2)
        self.spin_for(1.0)                               # let every topic match

    def publish_frame(self, t_us: int, images: dict, cloud: np.ndarray | None = None, pose: bool = True,
                      wait_for_output: float = 120.0) -> bool:
        """Publish one frame; wait until the node answered it (True) or the wait ran out. The wait
        ends as soon as the answer comes; it is long so that a loaded machine is never a failure."""
        stamp = us_to_stamp(t_us)
        if pose:
            matrix = np.eye(4)
            matrix[0, 3] = t_us / 1e6
            self.tf_pub.publish(TFMessage(transforms=[to_transform("odom", "base_link", matrix, stamp)]))
        for camera, image in images.items():
            if image is None:
                continue
            msg = image if isinstance(image, Image) else rgb_to_image(image, Header(stamp=stamp, frame_id=camera.lower()))
            msg.header.stamp = stamp
            self.image_pubs[camera].publish(msg)
        self.spin_for(0.05)
        if cloud is None:
            cloud = np.random.default_rng(t_us).normal(0, 15, (3000, 4)).astype(np.float32)
        cloud_msg = cloud if isinstance(cloud, PointCloud2) else array_to_cloud(cloud, Header(stamp=stamp, frame_id="base_link"))
        cloud_msg.header.stamp = stamp
        before = len(self.objects)
        self.points_pub.publish(cloud_msg)
        end = time.monotonic() + wait_for_output
        while time.monotonic() < end:
            self.spinner.spin_once(timeout_sec=0.02)
            if len(self.objects) > before and stamp_to_us(self.objects[-1].header.stamp) == t_us \
                    and self.health and stamp_to_us(self.health[-1].header.stamp) == t_us:
                return True
        return False

    def health_at(self, t_us: int) -> dict:
        for msg in reversed(self.health):
            if stamp_to_us(msg.header.stamp) == t_us:
                return {c.name: c for c in msg.cameras}
        raise KeyError(t_us)


def noise_images(cameras: list[str], seed: int, size=(64, 128)) -> dict:
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 255, (*size, 3), dtype=np.uint8) for c in cameras}
