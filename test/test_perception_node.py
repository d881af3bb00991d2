"""The perception node's frame logic with real messages, in-process (the
multi-process replay tests drive it through DDS)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from sparsecomp_core.config import to_dict
from sparsecomp_core.models.detector import build_detector
from sparsecomp_ros.conversions import array_to_cloud, rgb_to_image, to_transform, us_to_stamp

sys.path.insert(0, str(Path(__file__).parent))
from test_detector import micro_config  # noqa: E402


@pytest.fixture
def node(tmp_path, ros_domain_id):
    from sparsecomp_ros.perception_node import PerceptionNode
    torch.manual_seed(0)
    cfg = micro_config()
    checkpoint = tmp_path / "micro.pt"
    torch.save({"model": build_detector(cfg).state_dict(), "model_config": to_dict(cfg)}, checkpoint)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model.checkpoint", value=str(checkpoint)), Parameter("model.device", value="cpu"),
        Parameter("output.score_threshold", value=0.0)])
    published = {"objects": [], "health": [], "diagnostics": []}
    node.objects_pub.publish = published["objects"].append
    node.health_pub.publish = published["health"].append
    node.diagnostics_pub.publish = published["diagnostics"].append
    node.published = published
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def feed_frame(node, t_us: int, skip=(), black=(), points=None):
    rng = np.random.default_rng(t_us)
    for name in node.cameras:
        if name in skip:
            continue
        rgb = np.zeros((64, 128, 3), np.uint8) if name in black else rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
        node.on_image(name, rgb_to_image(rgb, Header(stamp=us_to_stamp(t_us), frame_id=name.lower())))
    cloud = rng.normal(0, 15, (2000, 4)).astype(np.float32) if points is None else points
    node.on_points(array_to_cloud(cloud, Header(stamp=us_to_stamp(t_us), frame_id="base_link")))


def add_pose(node, t_us: int) -> None:
    pose = np.eye(4)
    pose[0, 3] = t_us / 1e6
    node.tf_buffer.set_transform(to_transform("odom", "base_link", pose, us_to_stamp(t_us)), "test")


def test_a_dead_camera_is_flagged_and_objects_keep_coming(node):
    dead = node.cameras[2]
    for step in range(8):
        t = 1_000_000 + step * 100_000
        add_pose(node, t)
        feed_frame(node, t, skip=(dead,) if step >= 2 else ())
    assert len(node.published["objects"]) == 8
    last = node.published["health"][-1]
    flags = {c.name: c.failed for c in last.cameras}
    assert flags[dead] and sum(flags.values()) == 1
    assert list(node.published["objects"][-1].failed_cameras) == [dead]


def test_bad_messages_are_dropped_counted_and_do_not_stop_the_node(node):
    t = 2_000_000
    add_pose(node, t)
    bad = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=us_to_stamp(t)))
    bad.encoding = "yuv422"
    node.on_image(node.cameras[0], bad)
    truncated = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=us_to_stamp(t)))
    truncated.data = truncated.data[:100]
    node.on_image(node.cameras[1], truncated)
    from sensor_msgs.msg import CameraInfo
    node.camera_infos[node.cameras[2]] = CameraInfo(height=64, width=128)
    wrong_size = rgb_to_image(np.zeros((32, 128, 3), np.uint8), Header(stamp=us_to_stamp(t)))
    node.on_image(node.cameras[2], wrong_size)                        # not the size CameraInfo announced
    broken_cloud = PointCloud2(header=Header(stamp=us_to_stamp(t)), height=1, width=10, point_step=16, data=b"\x00" * 8)
    node.on_points(broken_cloud)                                      # dropped, frame still published
    feed_frame(node, t + 100_000, points=np.full((50, 4), np.nan, np.float32))   # all-NaN cloud
    feed_frame(node, t + 200_000, points=np.zeros((0, 4), np.float32))           # empty cloud (no tf yet: degrade)
    feed_frame(node, t - 500_000)                                                # time goes backwards
    assert len(node.published["objects"]) == 4
    reasons = dict(node.dropped)
    assert reasons[f"image from {node.cameras[0]}"] == 1 and reasons[f"image from {node.cameras[1]}"] == 1
    assert reasons[f"image from {node.cameras[2]}"] == 1
    assert reasons["point cloud"] == 1 and reasons["time went backwards"] == 1
    assert any(k.startswith("tf odom<-base_link") for k in reasons)
    assert node.node_status().level == node.node_status().WARN


def test_diagnostics_come_once_a_period_and_at_once_when_a_verdict_or_a_drop_count_changes(node):
    dead = node.cameras[1]
    stamps = []
    for step in range(25):                                   # 2.5 s at 10 Hz; the camera dies at 1.2 s
        t = 1_000_000 + step * 100_000
        add_pose(node, t)
        feed_frame(node, t, skip=(dead,) if step >= 12 else ())
        if len(node.published["diagnostics"]) > len(stamps):
            stamps.append(t)
    assert len(node.published["health"]) == 25                 # camera health: every frame
    failed_at = next(1_000_000 + i * 100_000 for i, h in enumerate(node.published["health"])
                     if any(c.failed for c in h.cameras))
    assert failed_at in stamps                                  # the verdict change is reported at once
    first = node.published["diagnostics"][stamps.index(failed_at)]
    assert any(s.level == s.ERROR and s.hardware_id == dead for s in first.status)
    steady = [b - a for a, b in zip(stamps, stamps[1:]) if a >= failed_at]
    assert steady and all(gap == 1_000_000 for gap in steady)  # then once a second (of frame time)
    assert 3 <= len(stamps) <= 7                               # not every frame
