"""Our messages: generated, importable, serializable, and carried between processes."""
from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.node import Node
from rclpy.serialization import deserialize_message, serialize_message

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from message_samples import sample_camera_health, sample_object_array  # noqa: E402
from sparsecomp.msg import CameraHealth, CameraStatus, DynamicObject, DynamicObjectArray  # noqa: E402

HELPER = Path(__file__).parent / "helpers" / "publish_dynamic_objects.py"


def assert_object_arrays_equal(a: DynamicObjectArray, b: DynamicObjectArray) -> None:
    assert a.header == b.header
    assert list(a.failed_cameras) == list(b.failed_cameras)
    assert len(a.objects) == len(b.objects)
    for x, y in zip(a.objects, b.objects):
        assert (x.id, x.label, x.occlusion) == (y.id, y.label, y.occlusion)
        assert x.score == pytest.approx(y.score)
        np.testing.assert_array_equal(x.class_probabilities, y.class_probabilities)
        np.testing.assert_array_equal(x.occlusion_probabilities, y.occlusion_probabilities)
        assert (x.pose, x.size, x.velocity) == (y.pose, y.size, y.velocity)


def assert_camera_health_equal(a: CameraHealth, b: CameraHealth) -> None:
    assert a.header == b.header
    assert [c.name for c in a.cameras] == [c.name for c in b.cameras]
    for x, y in zip(a.cameras, b.cameras):
        assert (x.failed, x.reason, x.message) == (y.failed, y.reason, y.message)
        for field in ("image_age_s", "rate_hz", "mean_intensity", "dark_fraction"):
            vx, vy = getattr(x, field), getattr(y, field)
            assert (math.isnan(vx) and math.isnan(vy)) or vx == pytest.approx(vy), field
        assert (x.consecutive_faults, x.consecutive_ok) == (y.consecutive_faults, y.consecutive_ok)


def test_constants_name_the_spec_classes_and_states():
    classes = ["CAR", "TRUCK", "BUS", "PERSON", "NON_MOTOR", "RIDERLESS_NON_MOTOR", "BARRIER", "PILLAR"]
    assert [getattr(DynamicObject, "CLASS_" + c) for c in classes] == list(range(8))
    assert DynamicObject.NUM_CLASSES == len(DynamicObject().class_probabilities) == 8
    states = ["NONE", "SLIGHT", "PARTIAL", "HEAVY"]
    assert [getattr(DynamicObject, "OCCLUSION_" + s) for s in states] == list(range(4))
    assert DynamicObject.NUM_OCCLUSION_STATES == len(DynamicObject().occlusion_probabilities) == 4
    faults = [n for n in dir(CameraStatus) if n.startswith("FAULT_")]
    assert sorted(getattr(CameraStatus, n) for n in faults) == list(range(len(faults)))


def test_fixed_size_arrays_reject_wrong_lengths():
    # rclpy checks field types only when asked (conftest sets ROS_PYTHON_CHECK_FIELDS=1).
    with pytest.raises(AssertionError):
        DynamicObject(check_fields=True, class_probabilities=[0.5] * 7)
    with pytest.raises(AssertionError):
        DynamicObject(check_fields=True, occlusion_probabilities=[0.25] * 5)


def test_round_trip_through_rclpy_serialization():
    objects = sample_object_array()
    raw = serialize_message(objects)
    assert isinstance(raw, bytes) and len(raw) > 100
    assert_object_arrays_equal(deserialize_message(raw, DynamicObjectArray), objects)

    health = sample_camera_health()
    assert_camera_health_equal(deserialize_message(serialize_message(health), CameraHealth), health)


def test_publish_and_receive_between_processes(ros_env, ros_domain_id):
    publisher = subprocess.Popen([sys.executable, str(HELPER)], env=ros_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        node = Node("sparsecomp_test_subscriber", context=context)
        received: dict[str, object] = {}
        node.create_subscription(DynamicObjectArray, "objects",
                                 lambda m: received.setdefault("objects", m), 10)
        node.create_subscription(CameraHealth, "camera_health",
                                 lambda m: received.setdefault("health", m), 10)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        deadline = time.monotonic() + 30.0
        while len(received) < 2 and time.monotonic() < deadline and publisher.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        publisher.kill()
        output = publisher.communicate()[0]
    assert set(received) == {"objects", "health"}, f"nothing received; publisher said:\n{output}"
    assert_object_arrays_equal(received["objects"], sample_object_array())
    assert_camera_health_equal(received["health"], sample_camera_health())
