"""The message_filters fallback (SimpleFilter, Subscriber, Cache) and our
nearest_in_cache helper."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import rclpy
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from rclpy.clock_type import ClockType
from rclpy.duration import Duration
from rclpy.time import Time
from std_msgs.msg import Header

from sparsecomp_ros import message_filters_compat as mf
from sparsecomp_ros.message_filters_compat import nearest_in_cache

fallback_only = pytest.mark.skipif(mf.USING_MESSAGE_FILTERS,
                                   reason="tests our fallback, and message_filters is installed")

GENEROUS_S = 60.0     # bounds for waiting on threads / DDS: only hit when something is broken


def stamped(ms: int, payload=None):
    """What the node caches: a header plus a payload (``ms``: stamp in milliseconds)."""
    return SimpleNamespace(header=Header(stamp=TimeMsg(sec=ms // 1000, nanosec=(ms % 1000) * 1_000_000)),
                           payload=payload if payload is not None else ms)


def at(ms: int) -> Time:
    """A query stamp: a ROS-clock Time, the clock type of the cache's stamps (Time.from_msg);
    rclpy's Time() defaults to the system clock, and Times of two clock types do not compare."""
    return Time(nanoseconds=ms * 1_000_000, clock_type=ClockType.ROS_TIME)


def payloads(messages) -> list:
    return [m.payload for m in messages]


def filled_cache(stamps_ms, cache_size=10):
    cache = mf.Cache(mf.SimpleFilter(), cache_size=cache_size)
    for ms in stamps_ms:
        cache.add(stamped(ms))
    return cache


def test_simple_filter_passes_messages_and_extra_args_to_callbacks():
    source, received = mf.SimpleFilter(), []
    first = source.registerCallback(lambda msg, tag: received.append((tag, msg)), "a")
    source.registerCallback(lambda msg: received.append(("b", msg)))
    source.signalMessage(1)
    assert received == [("a", 1), ("b", 1)]
    if hasattr(source, "unregisterCallback"):
        source.unregisterCallback(first)
        source.signalMessage(2)
        assert received[-1] == ("b", 2) and len(received) == 3


def test_cache_receives_from_its_input_filter_and_signals_on():
    source = mf.SimpleFilter()
    cache = mf.Cache(source, cache_size=3)
    passed_on = []
    cache.registerCallback(passed_on.append)
    message = stamped(1000)
    source.signalMessage(message)
    assert passed_on == [message] and cache.getLast() is message and cache.cache_size == 3


@fallback_only
def test_cache_keeps_stamp_order_and_its_size_bound():
    cache = filled_cache([300, 100, 200, 500, 400], cache_size=4)
    # 100 arrived second but is the oldest stamp: it is the one dropped
    assert payloads(cache.getInterval(at(0), at(1000))) == [200, 300, 400, 500]
    assert cache.getOldestTime() == at(200) and cache.getLatestTime() == at(500)
    assert cache.getLastestTime() == at(500)             # the real package's spelling
    assert cache.getLast().payload == 500
    cache.add(stamped(50))                               # older than everything: in, then dropped as oldest
    assert payloads(cache.getInterval(at(0), at(1000))) == [200, 300, 400, 500]
    cache.add(stamped(350))
    assert payloads(cache.getInterval(at(0), at(1000))) == [300, 350, 400, 500]
    assert cache.getOldestTime().clock_type == ClockType.ROS_TIME


@fallback_only
def test_equal_stamps_keep_arrival_order():
    cache = mf.Cache(mf.SimpleFilter(), cache_size=5)
    for payload in ("first", "second"):
        cache.add(stamped(100, payload))
    cache.add(stamped(50))
    assert payloads(cache.getInterval(at(0), at(1000))) == [50, "first", "second"]
    assert cache.getElemAfterTime(at(100)).payload == "first"
    assert cache.getElemBeforeTime(at(100)).payload == "second"
    assert cache.getLast().payload == "first"            # as message_filters: after-or-at the latest stamp


def test_query_bounds_are_inclusive():
    cache = filled_cache([100, 200, 300])
    assert payloads(cache.getInterval(at(100), at(300))) == [100, 200, 300]
    assert payloads(cache.getInterval(at(101), at(299))) == [200]
    assert payloads(cache.getInterval(at(200), at(200))) == [200]
    assert cache.getInterval(at(301), at(400)) == []
    assert cache.getElemAfterTime(at(200)).payload == 200
    assert cache.getElemAfterTime(at(201)).payload == 300
    assert cache.getElemAfterTime(at(301)) is None
    assert cache.getElemBeforeTime(at(200)).payload == 200
    assert cache.getElemBeforeTime(at(199)).payload == 100
    assert cache.getElemBeforeTime(at(99)) is None
    with pytest.raises(AssertionError):
        cache.getInterval(at(300), at(100))


def test_empty_cache_answers_none():
    cache = mf.Cache(mf.SimpleFilter(), cache_size=2)
    assert cache.getInterval(at(0), at(1000)) == []
    assert cache.getElemAfterTime(at(0)) is None and cache.getElemBeforeTime(at(1000)) is None
    assert cache.getOldestTime() is None and cache.getLast() is None
    latest = cache.getLatestTime if hasattr(cache, "getLatestTime") else cache.getLastestTime
    assert latest() is None
    assert nearest_in_cache(cache, at(0), Duration(seconds=1)) is None


@fallback_only
def test_headerless_messages():
    cache = mf.Cache(mf.SimpleFilter(), cache_size=2)
    cache.add(object())                                   # dropped: allow_headerless is False
    assert cache.getLast() is None
    headerless = mf.Cache(mf.SimpleFilter(), cache_size=2, allow_headerless=True)
    message = object()
    headerless.add(message)
    assert headerless.getLast() is message and headerless.getLatestTime().nanoseconds > 0


@fallback_only
def test_input_filter_is_optional_in_the_fallback():
    cache = mf.Cache(cache_size=2)
    cache.add(stamped(5))
    assert cache.getLast().payload == 5


def test_nearest_in_cache_picks_the_closest_within_the_offset():
    cache = filled_cache([100, 200, 300])
    assert nearest_in_cache(cache, at(240), Duration(nanoseconds=50_000_000)).payload == 200
    assert nearest_in_cache(cache, at(260), Duration(nanoseconds=50_000_000)).payload == 300
    assert nearest_in_cache(cache, at(250), Duration(nanoseconds=50_000_000)).payload == 200   # tie: the older
    assert nearest_in_cache(cache, at(350), Duration(nanoseconds=50_000_000)).payload == 300   # offset inclusive
    assert nearest_in_cache(cache, at(351), Duration(nanoseconds=50_000_000)) is None
    assert nearest_in_cache(cache, at(40), Duration(nanoseconds=50_000_000)) is None
    # stamp as a message, offset as seconds or a message Duration; a window reaching below zero
    assert nearest_in_cache(cache, TimeMsg(sec=0, nanosec=120_000_000), 0.05).payload == 100
    assert nearest_in_cache(cache, TimeMsg(sec=0, nanosec=10_000_000), DurationMsg(sec=1)).payload == 100
    # an rclpy Time of another clock type is compared by its nanoseconds
    system_clock_stamp = Time(nanoseconds=290_000_000, clock_type=ClockType.SYSTEM_TIME)
    assert nearest_in_cache(cache, system_clock_stamp, 0.05).payload == 300
    assert nearest_in_cache(cache, at(200), Duration()).payload == 200
    with pytest.raises(ValueError):
        nearest_in_cache(cache, at(200), -0.1)


class ArrivalOrderCache:
    """message_filters' own Python Cache keeps arrival order; its getInterval, as written there."""

    def __init__(self, messages):
        self.cache_msgs = list(messages)
        self.cache_times = [Time.from_msg(m.header.stamp) for m in self.cache_msgs]

    def getInterval(self, from_stamp, to_stamp):  # noqa: N802
        assert from_stamp <= to_stamp
        return [msg for (msg, t) in zip(self.cache_msgs, self.cache_times) if from_stamp <= t <= to_stamp]


def test_nearest_in_cache_needs_no_order_from_the_cache():
    cache = ArrivalOrderCache([stamped(300), stamped(100), stamped(250), stamped(200)])
    assert nearest_in_cache(cache, at(240), 0.05).payload == 250
    assert nearest_in_cache(cache, at(225), 0.05).payload == 200     # tie 200 / 250: the older
    assert nearest_in_cache(cache, at(120), 0.05).payload == 100


def test_nearest_in_cache_at_nanosecond_resolution():
    cache = mf.Cache(mf.SimpleFilter(), cache_size=4)
    for nanosec in (123_456_789, 123_456_791):
        cache.add(SimpleNamespace(header=Header(stamp=TimeMsg(sec=7, nanosec=nanosec)), payload=nanosec))
    exact = Time(seconds=7, nanoseconds=123_456_789)
    assert nearest_in_cache(cache, exact, Duration()).payload == 123_456_789
    assert nearest_in_cache(cache, Time(seconds=7, nanoseconds=123_456_790), Duration(nanoseconds=1)).payload \
        == 123_456_789                                                                         # tie: the older
    assert nearest_in_cache(cache, Time(seconds=7, nanoseconds=123_456_790), Duration()) is None


def test_concurrent_adds_and_reads():
    cache = mf.Cache(mf.SimpleFilter(), cache_size=20)
    done = threading.Event()
    errors: list[BaseException] = []

    def add():
        try:
            for ms in range(5000):
                cache.add(stamped(ms))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            done.set()

    def read():
        try:
            reads = 0
            while not done.is_set() or reads == 0:
                latest = cache.getLatestTime()
                if latest is not None:
                    found = nearest_in_cache(cache, latest, Duration(seconds=1))
                    assert found is not None
                    window = payloads(cache.getInterval(at(0), at(10_000)))
                    assert window == sorted(window) and len(window) <= 20
                    cache.getElemBeforeTime(latest), cache.getElemAfterTime(at(0)), cache.getOldestTime()
                reads += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, daemon=True), threading.Thread(target=read, daemon=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(GENEROUS_S)
    assert not any(thread.is_alive() for thread in threads) and not errors, errors
    assert payloads(cache.getInterval(at(0), at(10_000))) == list(range(4980, 5000))


def test_subscriber_delivers_to_the_cache_through_rclpy(ros_domain_id):
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from std_msgs.msg import String
    from sensor_msgs.msg import Image

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    node = Node("message_filters_compat_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        group = MutuallyExclusiveCallbackGroup()
        subscriber = mf.Subscriber(node, Image, "camera/image_raw", qos_profile=10, callback_group=group)
        assert subscriber.getTopic() == "camera/image_raw"
        assert subscriber.topic_name.endswith("camera/image_raw")       # the subscription's own attribute
        assert subscriber.sub.callback_group is group
        cache = mf.Cache(subscriber, cache_size=5)
        arrived = threading.Event()
        cache.registerCallback(lambda msg: arrived.set())
        publisher = node.create_publisher(Image, "camera/image_raw", 10)
        other = node.create_publisher(String, "unrelated", 10)
        image = Image(header=Header(stamp=TimeMsg(sec=3, nanosec=123_456_789), frame_id="cam"), height=1, width=1)
        deadline = time.monotonic() + GENEROUS_S
        while not arrived.is_set() and time.monotonic() < deadline:     # until discovery has matched them
            publisher.publish(image)
            other.publish(String(data="ignored"))
            executor.spin_once(timeout_sec=0.1)
        assert arrived.is_set(), "no image reached the cache"
        received = nearest_in_cache(cache, Time(seconds=3, nanoseconds=123_456_789), Duration())
        assert received is not None and received.header.frame_id == "cam"
        latest = cache.getLatestTime() if hasattr(cache, "getLatestTime") else cache.getLastestTime()
        assert latest == Time.from_msg(image.header.stamp)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
