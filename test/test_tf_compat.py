"""The tf fallback: chains, interpolation, latest time, tf2's exceptions and
messages, nanosecond stamps, timeouts, the advanced (full) API, thread
safety, the listener and both broadcasters through a real rclpy node."""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
import rclpy
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from rclpy.duration import Duration
from rclpy.time import Time as RclpyTime

from sparsecomp_ros import tf_compat
from sparsecomp_ros.conversions import transform_to_matrix

pytestmark = pytest.mark.skipif(tf_compat.USING_TF2_ROS, reason="tests our fallback, and tf2_ros is installed")

GENEROUS_S = 60.0     # bounds for waiting on threads / DDS: only hit when something is broken


def transform(parent, child, sec, x=0.0, y=0.0, yaw=0.0, nanosec=None) -> TransformStamped:
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.header.stamp = Time(sec=int(sec), nanosec=int(round((sec % 1) * 1e9)) if nanosec is None else nanosec)
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
    assert tf.lookup_transform("odom", "lidar", RclpyTime()).header.stamp.sec == 11
    with pytest.raises(tf_compat.ExtrapolationException):
        tf.lookup_transform("odom", "base_link", Time(sec=12))
    with pytest.raises(tf_compat.LookupException):
        tf.lookup_transform("map", "base_link", Time(sec=10))
    tf.set_transform_static(transform("world", "other", 0), "test")
    with pytest.raises(tf_compat.ConnectivityException):
        tf.lookup_transform("odom", "other", Time(sec=10))
    assert tf.can_transform("odom", "lidar", Time(sec=10, nanosec=5))
    assert not tf.can_transform("odom", "lidar", Time(sec=9))
    assert np.isfinite(as_xy_yaw(tf.lookup_transform("base_link", "odom", Time(sec=11)))).all()
    assert issubclass(tf_compat.ExtrapolationException, tf_compat.TransformException)
    assert issubclass(tf_compat.LookupException, tf_compat.TransformException)
    assert issubclass(tf_compat.ConnectivityException, tf_compat.TransformException)


def test_setters_return_none_like_tf2_ros():
    tf = tf_compat.Buffer()
    assert tf.set_transform(transform("odom", "base_link", 1.0), "test") is None
    assert tf.set_transform_static(transform("base_link", "lidar", 0), "test") is None
    # too old for the cache: ignored, still None
    tf.set_transform(transform("odom", "base_link", 100.0), "test")
    assert tf.set_transform(transform("odom", "base_link", 1.0), "test") is None
    assert not tf.can_transform("odom", "base_link", Time(sec=1))


def test_error_messages_are_tf2s():
    tf = tf_compat.Buffer()
    tf.set_transform(transform("odom", "base_link", 1.0), "test")
    tf.set_transform(transform("odom", "base_link", 1.1), "test")
    tf.set_transform_static(transform("base_link", "lidar", 0, x=1.0), "test")
    with pytest.raises(tf_compat.ExtrapolationException) as future:
        tf.lookup_transform("odom", "base_link", Time(sec=1, nanosec=200_000_000))
    assert str(future.value) == (
        "Lookup would require extrapolation into the future.  Requested time 1.200000 but the latest data is "
        "at time 1.100000, when looking up transform from frame [base_link] to frame [odom]")
    with pytest.raises(tf_compat.ExtrapolationException) as past:
        tf.lookup_transform("lidar", "odom", Time(sec=0, nanosec=500_000_000))
    assert str(past.value) == (
        "Lookup would require extrapolation into the past.  Requested time 0.500000 but the earliest data is "
        "at time 1.000000, when looking up transform from frame [odom] to frame [lidar]")
    tf.set_transform(transform("map", "odom", 5.0), "test")
    with pytest.raises(tf_compat.ExtrapolationException) as single:
        tf.lookup_transform("map", "odom", Time(sec=4))
    assert str(single.value) == ("Lookup would require extrapolation at time 4.000000, but only time 5.000000 "
                                 "is in the buffer, when looking up transform from frame [odom] to frame [map]")
    with pytest.raises(tf_compat.LookupException, match=r'^"nowhere" passed to lookupTransform argument '
                                                        r'source_frame does not exist. $'):
        tf.lookup_transform("odom", "nowhere", Time(sec=1))
    tf.set_transform_static(transform("world", "other", 0), "test")
    with pytest.raises(tf_compat.ConnectivityException, match=r"^Could not find a connection between 'odom' and "
                                                              r"'other' because they are not part of the same tree"):
        tf.lookup_transform("odom", "other", Time(sec=1))
    ok, error = tf.can_transform("odom", "base_link", Time(sec=3), return_debug_tuple=True)
    assert not ok and error.startswith("Lookup would require extrapolation into the future")


def test_exact_nanosecond_stamps():
    tf = tf_compat.Buffer()
    tf.set_transform(transform("odom", "base_link", 5, x=2.0, nanosec=123_456_789), "test")
    # the only sample: found at its exact stamp, rclpy Time or message Time
    exact = tf.lookup_transform("odom", "base_link", RclpyTime(seconds=5, nanoseconds=123_456_789))
    assert as_xy_yaw(exact)[0] == pytest.approx(2.0)
    assert (exact.header.stamp.sec, exact.header.stamp.nanosec) == (5, 123_456_789)
    assert tf.can_transform("odom", "base_link", Time(sec=5, nanosec=123_456_789))
    assert tf.can_transform("odom", "base_link", RclpyTime.from_msg(Time(sec=5, nanosec=123_456_789)))
    for off_by_one in (123_456_788, 123_456_790):
        assert not tf.can_transform("odom", "base_link", RclpyTime(seconds=5, nanoseconds=off_by_one))
    # the first sample of several, and between samples at nanosecond resolution
    tf.set_transform(transform("odom", "base_link", 5, x=4.0, nanosec=123_456_791), "test")
    first = tf.lookup_transform("odom", "base_link", RclpyTime(seconds=5, nanoseconds=123_456_789))
    assert as_xy_yaw(first)[0] == pytest.approx(2.0)
    middle = tf.lookup_transform("odom", "base_link", RclpyTime(seconds=5, nanoseconds=123_456_790))
    assert as_xy_yaw(middle)[0] == pytest.approx(3.0)
    latest = tf.lookup_transform("odom", "base_link", RclpyTime())
    assert (latest.header.stamp.sec, latest.header.stamp.nanosec) == (5, 123_456_791)


def test_lookup_transform_full_goes_through_the_fixed_frame():
    tf = buffer()
    t10, t11 = Time(sec=10), Time(sec=11)
    # where base_link was at 10 s, seen from base_link at 11 s, the world (odom) held still
    full = tf.lookup_transform_full("base_link", t11, "base_link", t10, "odom")
    expected = (np.linalg.inv(transform_to_matrix(tf.lookup_transform("odom", "base_link", t11).transform))
                @ transform_to_matrix(tf.lookup_transform("odom", "base_link", t10).transform))
    np.testing.assert_allclose(transform_to_matrix(full.transform), expected, atol=1e-9)
    assert (full.header.frame_id, full.child_frame_id, full.header.stamp.sec) == ("base_link", "base_link", 11)
    # camera at 11 s <- lidar at 10 s
    full = tf.lookup_transform_full("camera", t11, "lidar", t10, "odom", timeout=Duration())
    expected = (np.linalg.inv(transform_to_matrix(tf.lookup_transform("odom", "camera", t11).transform))
                @ transform_to_matrix(tf.lookup_transform("odom", "lidar", t10).transform))
    np.testing.assert_allclose(transform_to_matrix(full.transform), expected, atol=1e-9)
    assert tf.can_transform_full("camera", t11, "lidar", t10, "odom")
    assert not tf.can_transform_full("camera", Time(sec=12), "lidar", t10, "odom")
    assert not tf.can_transform_full("camera", t11, "lidar", t10, "map")
    with pytest.raises(tf_compat.LookupException, match="fixed_frame"):
        tf.lookup_transform_full("camera", t11, "lidar", t10, "map")
    with pytest.raises(tf_compat.ExtrapolationException):
        tf.lookup_transform_full("camera", t11, "lidar", Time(sec=9), "odom")


def test_no_timeout_or_zero_timeout_does_not_wait():
    tf = buffer()
    with pytest.raises(tf_compat.ExtrapolationException):
        tf.lookup_transform("odom", "base_link", Time(sec=12))
    for zero in (Duration(), Duration(seconds=0), DurationMsg()):
        with pytest.raises(tf_compat.ExtrapolationException):
            tf.lookup_transform("odom", "base_link", Time(sec=12), zero)
        assert not tf.can_transform("odom", "base_link", Time(sec=12), zero)


def test_a_timeout_that_expires_raises_the_lookup_error():
    tf = buffer()
    with pytest.raises(tf_compat.ExtrapolationException):
        tf.lookup_transform("odom", "base_link", Time(sec=12), timeout=Duration(seconds=0.05))
    with pytest.raises(tf_compat.LookupException):
        tf.lookup_transform("odom", "map", Time(sec=11), timeout=Duration(nanoseconds=1_000_000))
    assert not tf.can_transform("odom", "base_link", Time(sec=12), Duration(seconds=0.05))
    assert not tf.can_transform_full("odom", Time(sec=12), "lidar", Time(sec=10), "base_link", Duration(seconds=0.05))


def run_in_thread(function):
    """Start ``function`` in a thread; the returned dict gets its "result" or "error"."""
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = function()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    outcome["thread"] = thread
    return outcome


def wait_for_waiters(tf, count: int) -> None:
    """Until ``count`` threads sleep in the buffer's condition (so the wake-up is what is tested)."""
    deadline = time.monotonic() + GENEROUS_S
    while len(tf._new_data._waiters) < count and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(tf._new_data._waiters) == count


@pytest.mark.parametrize("wait_on", ["lookup_transform", "can_transform", "lookup_transform_full"])
def test_a_timeout_waits_until_another_thread_adds_the_transform(wait_on):
    tf = buffer()
    timeout = Duration(seconds=10 * GENEROUS_S)     # far longer than the join below: only a wake-up ends it early
    calls = {
        "lookup_transform": lambda: tf.lookup_transform("odom", "lidar", Time(sec=12), timeout),
        "can_transform": lambda: tf.can_transform("odom", "lidar", Time(sec=12), timeout),
        "lookup_transform_full": lambda: tf.lookup_transform_full("odom", Time(sec=12), "lidar", Time(sec=12),
                                                                  "odom", timeout),
    }
    outcome = run_in_thread(calls[wait_on])
    wait_for_waiters(tf, 1)
    tf.set_transform(transform("odom", "base_link", 11.5, x=20.0), "test")    # still too early: keeps waiting
    tf.set_transform(transform("odom", "base_link", 12.0, x=30.0), "test")
    outcome["thread"].join(GENEROUS_S)
    assert not outcome["thread"].is_alive() and "error" not in outcome, outcome
    if wait_on == "can_transform":
        assert outcome["result"] is True
    else:
        assert as_xy_yaw(outcome["result"])[0] == pytest.approx(31.0)


def test_concurrent_writers_and_readers():
    tf = tf_compat.Buffer(cache_time=Duration(seconds=1))
    tf.set_transform_static(transform("base_link", "lidar", 0, x=1.0), "test")
    tf.set_transform(transform("odom", "base_link", 0.0), "test")
    stop = threading.Event()

    def write():
        for step in range(1, 3000):
            tf.set_transform(transform("odom", "base_link", step * 0.01, x=step * 0.01), "test")
        stop.set()

    def read():
        lookups = 0
        while not stop.is_set() or lookups == 0:
            latest = tf.lookup_transform("odom", "lidar", Time())
            stamp = latest.header.stamp.sec + latest.header.stamp.nanosec * 1e-9
            assert as_xy_yaw(latest)[0] == pytest.approx(stamp + 1.0, abs=1e-6)
            tf.can_transform("odom", "lidar", Time(sec=1), return_debug_tuple=True)
            lookups += 1
        return lookups

    writer, reader = run_in_thread(write), run_in_thread(read)
    for outcome in (writer, reader):
        outcome["thread"].join(GENEROUS_S)
        assert not outcome["thread"].is_alive() and "error" not in outcome, outcome
    # the cache kept one second of history
    assert not tf.can_transform("odom", "base_link", Time(sec=28))
    assert tf.can_transform("odom", "base_link", Time(sec=29, nanosec=500_000_000))


@pytest.fixture
def ros_context(ros_domain_id):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    yield context
    rclpy.shutdown(context=context)


def test_broadcasters_and_listener_through_rclpy(ros_context):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy
    publisher_node = Node("tf_compat_test_broadcaster", context=ros_context)
    listener_node = Node("tf_compat_test_listener", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    try:
        static = tf_compat.StaticTransformBroadcaster(publisher_node)
        assert static.pub_tf.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        static.sendTransform(transform("base_link", "lidar", 0, x=1.0))
        static.sendTransform([transform("base_link", "camera", 0, y=5.0)])
        static.sendTransform(transform("base_link", "camera", 0, y=0.5))       # replaces the camera entry
        assert [t.child_frame_id for t in static.net_message.transforms] == ["lidar", "camera"]
        dynamic = tf_compat.TransformBroadcaster(publisher_node)

        # the listener joins after the static transforms were sent: transient local delivers them
        tf = tf_compat.Buffer()
        listener = tf_compat.TransformListener(tf, listener_node)
        executor.add_node(publisher_node)
        executor.add_node(listener_node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        # the lookup (here, in the test's thread) waits while the executor's thread fills the buffer
        deadline = time.monotonic() + GENEROUS_S
        while not tf.can_transform("odom", "camera", Time(sec=1)) and time.monotonic() < deadline:
            dynamic.sendTransform(iter([transform("odom", "base_link", 1.0, x=3.0)]))
            tf.can_transform("odom", "camera", Time(sec=1), Duration(seconds=0.2))
        x, y, _ = as_xy_yaw(tf.lookup_transform("odom", "camera", Time(sec=1), Duration(seconds=1)))
        assert (x, y) == pytest.approx((3.0, 0.5))
        assert as_xy_yaw(tf.lookup_transform("odom", "lidar", Time(sec=1)))[0] == pytest.approx(4.0)
        listener.unregister()
    finally:
        executor.shutdown()
        publisher_node.destroy_node()
        listener_node.destroy_node()


def test_listener_without_spin_thread():
    with pytest.raises(NotImplementedError):
        tf_compat.TransformListener(tf_compat.Buffer(), node=None, spin_thread=True)
