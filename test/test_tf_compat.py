"""The tf fallback: chains, interpolation, latest time, tf2's exceptions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped

from sparsecomp_ros import tf_compat

pytestmark = pytest.mark.skipif(tf_compat.USING_TF2_ROS, reason="tests our fallback, and tf2_ros is installed")


def transform(parent, child, sec, x=0.0, y=0.0, yaw=0.0) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp = Time(sec=int(sec), nanosec=int(round((sec % 1) * 1e9)))
    msg.transform.translation.x, msg.transform.translation.y = x, y
    msg.transform.rotation.z, msg.transform.rotation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return msg


def as_xy_yaw(msg: TransformStamped):
    q = msg.transform.rotation
    return msg.transform.translation.x, msg.transform.translation.y, 2 * math.atan2(q.z, q.w)


def buffer() -> "tf_compat.Buffer":
    tf = tf_compat.Buffer()
    tf.set_transform_static(transform("base_link", "lidar", 0, x=1.0), "test")
    tf.set_transform_static(transform("base_link", "camera", 0, y=0.5, yaw=math.pi / 2), "test")
    tf.set_transform(transform("odom", "base_link", 10.0, x=0.0), "test")
    tf.set_transform(transform("odom", "base_link", 11.0, x=10.0, yaw=0.2), "test")
    return tf


def test_interpolates_between_stamps_and_chains_static_frames():
    tf = buffer()
    x, y, yaw = as_xy_yaw(tf.lookup_transform("odom", "base_link", Time(sec=10, nanosec=250_000_000)))
    assert (x, y) == pytest.approx((2.5, 0.0)) and yaw == pytest.approx(0.05)
    x, y, yaw = as_xy_yaw(tf.lookup_transform("odom", "lidar", Time(sec=10)))
    assert (x, y, yaw) == pytest.approx((1.0, 0.0, 0.0))
    # lidar -> camera through base_link: the lidar origin seen from the camera
    x, y, yaw = as_xy_yaw(tf.lookup_transform("camera", "lidar", Time(sec=10)))
    assert (x, y) == pytest.approx((-0.5, -1.0)) and yaw == pytest.approx(-math.pi / 2)


def test_latest_time_and_errors():
    tf = buffer()
    latest = tf.lookup_transform("odom", "base_link", Time())
    assert latest.header.stamp.sec == 11 and as_xy_yaw(latest)[0] == pytest.approx(10.0)
    with pytest.raises(tf_compat.ExtrapolationException):
        tf.lookup_transform("odom", "base_link", Time(sec=12))
    with pytest.raises(tf_compat.LookupException):
        tf.lookup_transform("map", "base_link", Time(sec=10))
    tf.set_transform_static(transform("world", "other", 0), "test")
    with pytest.raises(tf_compat.ConnectivityException):
        tf.lookup_transform("odom", "other", Time(sec=10))
    assert tf.can_transform("odom", "lidar", Time(sec=10, nanosec=5)) and not tf.can_transform("odom", "lidar", Time(sec=9))
    assert np.isfinite(as_xy_yaw(tf.lookup_transform("base_link", "odom", Time(sec=11)))).all()
