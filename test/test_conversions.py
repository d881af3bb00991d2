"""Message <-> array conversions: round trips and clear errors on bad messages."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, PointCloud2, PointField
from sparsecomp.msg import CameraHealth, DynamicObject, DynamicObjectArray
from std_msgs.msg import Header

from sparsecomp_ros.camera_health import CameraHealth as Monitor
from sparsecomp_ros.conversions import (BadMessage, array_to_cloud, cloud_to_array, compressed_to_rgb,
                                        detections_to_msg, health_to_diagnostics, health_to_msg, image_to_rgb,
                                        rgb_to_compressed, rgb_to_image, stamp_to_us, us_to_stamp)

HEADER = Header(stamp=us_to_stamp(1_700_000_000_123_456), frame_id="base_link")


def test_images_round_trip_in_every_supported_encoding():
    rgb = np.random.default_rng(0).integers(0, 255, (4, 6, 3), dtype=np.uint8)
    assert np.array_equal(image_to_rgb(rgb_to_image(rgb, HEADER)), rgb)
    bgr = Image(height=4, width=6, encoding="bgr8", step=18, data=rgb[..., ::-1].tobytes())
    assert np.array_equal(image_to_rgb(bgr), rgb)
    padded = np.zeros((4, 20), dtype=np.uint8)                       # step with row padding
    padded[:, :18] = rgb.reshape(4, 18)
    assert np.array_equal(image_to_rgb(Image(height=4, width=6, encoding="rgb8", step=20, data=padded.tobytes())), rgb)
    mono = Image(height=4, width=6, encoding="mono8", step=6, data=rgb[..., 0].tobytes())
    assert np.array_equal(image_to_rgb(mono)[..., 2], rgb[..., 0])
    assert stamp_to_us(HEADER.stamp) == 1_700_000_000_123_456


@pytest.mark.parametrize("msg, reason", [
    (Image(height=4, width=6, encoding="32FC1", step=24, data=bytes(96)), "encoding"),
    (Image(height=4, width=6, encoding="rgb8", step=18, data=bytes(50)), "truncated"),
    (Image(height=4, width=6, encoding="rgb8", step=10, data=bytes(72)), "step"),
    (Image(height=0, width=0, encoding="rgb8", step=0, data=b""), "empty"),
])
def test_bad_images_raise_clear_errors(msg, reason):
    with pytest.raises(BadMessage, match=reason):
        image_to_rgb(msg)
    with pytest.raises(BadMessage, match="size"):
        image_to_rgb(rgb_to_image(np.zeros((4, 6, 3), np.uint8), HEADER), expected_size=(8, 6))


def test_clouds_round_trip_and_bad_clouds_raise():
    points = np.random.default_rng(1).normal(0, 10, (100, 4)).astype(np.float32)
    points[3, 0] = np.nan
    back = cloud_to_array(deserialize_message(serialize_message(array_to_cloud(points, HEADER)), PointCloud2))
    assert np.array_equal(back, points, equal_nan=True)
    no_z = array_to_cloud(points, HEADER)
    no_z.fields = [f for f in no_z.fields if f.name != "z"]
    with pytest.raises(BadMessage, match="no field 'z'"):
        cloud_to_array(no_z)
    truncated = array_to_cloud(points, HEADER)
    truncated.data = truncated.data[:100]
    with pytest.raises(BadMessage, match="truncated"):
        cloud_to_array(truncated)
    xyz_only = PointCloud2(height=1, width=2, point_step=12, fields=[
        PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")],
        data=np.arange(6, dtype=np.float32).tobytes())
    assert cloud_to_array(xyz_only)[:, 3].tolist() == [0.0, 0.0]


def test_a_driver_layout_with_padding_and_other_field_types_decodes_and_overlaps_are_bad():
    """Ouster/Velodyne-style: x, y, z float32, padding, intensity uint16 after a ring field."""
    rng = np.random.default_rng(2)
    xyz = rng.normal(0, 20, (50, 3)).astype(np.float32)
    intensity = rng.integers(0, 4000, 50).astype(np.uint16)
    layout = np.dtype({"names": ["x", "y", "z", "ring", "intensity"],
                       "formats": [np.float32, np.float32, np.float32, np.uint16, np.uint16],
                       "offsets": [0, 4, 8, 16, 18], "itemsize": 24})
    records = np.zeros(50, dtype=layout)
    records["x"], records["y"], records["z"], records["intensity"] = xyz[:, 0], xyz[:, 1], xyz[:, 2], intensity
    fields = [PointField(name=n, offset=o, datatype=t, count=1) for n, o, t in
              [("x", 0, PointField.FLOAT32), ("y", 4, PointField.FLOAT32), ("z", 8, PointField.FLOAT32),
               ("ring", 16, PointField.UINT16), ("intensity", 18, PointField.UINT16)]]
    msg = PointCloud2(height=1, width=50, point_step=24, row_step=24 * 50, fields=fields, data=records.tobytes())
    points = cloud_to_array(msg)
    assert np.array_equal(points[:, :3], xyz) and np.array_equal(points[:, 3], intensity.astype(np.float32))
    points[:, 0] = 0                                          # the result is the caller's to modify
    assert np.array_equal(cloud_to_array(msg)[:, :3], xyz)
    msg.fields[1].offset = 2                                  # y overlaps x
    with pytest.raises(BadMessage, match="valid layout"):
        cloud_to_array(msg)


def test_detections_become_a_dynamic_object_array():
    detections = {"boxes": torch.tensor([[10.0, -2.0, 0.8, 4.5, 1.9, 1.6, math.pi / 2, 3.0, 0.5, 0.0]]),
                  "scores": torch.tensor([0.9]), "labels": torch.tensor([0]), "ids": torch.tensor([42]),
                  "class_probabilities": torch.tensor([[0.9, 0.1, 0, 0, 0, 0, 0, 0.05]]),
                  "occlusion": torch.tensor([2]), "occlusion_probabilities": torch.tensor([[0.1, 0.2, 0.6, 0.1]])}
    msg = detections_to_msg(detections, HEADER, ["CAM_REAR"])
    msg = deserialize_message(serialize_message(msg), DynamicObjectArray)
    obj = msg.objects[0]
    assert (obj.id, obj.label, obj.occlusion) == (42, DynamicObject.CLASS_CAR, DynamicObject.OCCLUSION_PARTIAL)
    assert obj.pose.orientation.z == pytest.approx(math.sin(math.pi / 4)) and obj.size.x == pytest.approx(4.5)
    assert obj.velocity.x == pytest.approx(3.0) and list(msg.failed_cameras) == ["CAM_REAR"]


def test_health_becomes_camera_health_and_diagnostics():
    good, black = Monitor("CAM_FRONT_WIDE"), Monitor("CAM_REAR")
    image = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    statuses = []
    for i in range(3):
        good.observe(i * 0.1, image if i % 2 else image[::-1].copy())
        black.observe(i * 0.1, np.zeros_like(image))
        statuses = [good.assess(i * 0.1 + 0.01, i * 0.1), black.assess(i * 0.1 + 0.01, i * 0.1)]
    health = deserialize_message(serialize_message(health_to_msg(statuses, HEADER)), CameraHealth)
    diagnostics = health_to_diagnostics(statuses, HEADER, "sparsecomp_perception")
    assert [c.failed for c in health.cameras] == [False, True]
    assert health.cameras[1].reason == health.cameras[1].FAULT_BLACK
    assert [s.level for s in diagnostics.status] == [DiagnosticStatus.OK, DiagnosticStatus.ERROR]
    assert "failed" in diagnostics.status[1].message


def test_compressed_images_decode_and_garbage_is_a_bad_message():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 40, 40)
    decoded = compressed_to_rgb(rgb_to_compressed(rgb, HEADER, quality=95))
    assert decoded.shape == (32, 48, 3) and np.abs(decoded.astype(int) - rgb).mean() < 3
    from sensor_msgs.msg import CompressedImage
    with pytest.raises(BadMessage, match="does not decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"not a jpeg"))
