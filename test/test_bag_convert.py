"""Generated sequences convert to rosbag2 (MCAP) and read back equal."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from sparsecomp.msg import DynamicObjectArray
from tf2_msgs.msg import TFMessage

from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.rig import load_rig
from sparsecomp_ros.bag_convert import convert, typestore_with_our_messages
from sparsecomp_ros.conversions import cloud_to_array, image_to_rgb, stamp_to_us

TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
         "sensor_msgs/msg/PointCloud2": PointCloud2, "tf2_msgs/msg/TFMessage": TFMessage,
         "sparsecomp/msg/DynamicObjectArray": DynamicObjectArray}


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("bagdata")
    generate(root / "data", "v1.0-bag", "default7", seed=6, scenes=1, frames=4, image_size=(64, 128), lidar_beams=8,
             lidar_azimuths=128, progress=False)
    return root, convert(root / "data", "v1.0-bag", 0, root / "bag")


def test_bag_holds_every_topic_and_reads_back_equal(bag):
    root, path = bag
    dataset = SequenceDataset(str(root / "data"), "v1.0-bag", load_rig("default7"), (64, 128))
    messages: dict[str, list] = {}
    with Reader(path) as reader:
        assert reader.message_count == 4 * (7 * 2 + 3) + 1
        for connection, timestamp, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (timestamp, deserialize_message(bytes(raw), TYPES[connection.msgtype])))
    assert len(messages["/tf_static"]) == 1 and len(messages["/tf_static"][0][1].transforms) == 8
    first = dataset.load(0, 0)
    image = messages["/sensing/camera/cam_front_wide/image_raw"][0][1]
    assert np.array_equal(image_to_rgb(image), first.images[0].permute(1, 2, 0).numpy())
    info = messages["/sensing/camera/cam_front_wide/camera_info"][0][1]
    assert info.k[2] == pytest.approx(float(first.intrinsics[0, 0, 2]) - 0.5)     # OpenCV convention in CameraInfo
    cloud = cloud_to_array(messages["/sensing/lidar/points"][0][1])
    assert len(cloud) == len(first.lidar)
    truth = messages["/ground_truth/objects"][0][1]
    assert len(truth.objects) == len(first.targets["labels"])
    assert [o.label for o in truth.objects] == first.targets["labels"].tolist()
    odom = messages["/tf"][1][1].transforms[0]
    assert (odom.header.frame_id, odom.child_frame_id) == ("odom", "base_link")
    assert stamp_to_us(odom.header.stamp) == messages["/tf"][1][0] // 1000


def test_our_types_are_registered_for_other_tools(bag):
    store = typestore_with_our_messages()
    assert {"sparsecomp/msg/DynamicObjectArray", "sparsecomp/msg/CameraHealth"} <= set(store.types)


def test_the_replayer_plays_every_message_on_a_context_of_its_own(bag, ros_domain_id):
    """A replayer in a process that never initialised rclpy's default context
    (the end-to-end benchmark's set-up) still plays the whole bag."""
    import rclpy

    from sparsecomp_ros.replay import BagReplayer
    _, path = bag
    with Reader(path) as reader:
        in_bag = sum(1 for _ in reader.messages())
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        seen = []
        replayer = BagReplayer(path, rate=50.0, context=context, on_published=lambda topic, *_: seen.append(topic))
        assert replayer.play() == in_bag == len(seen)
        replayer.destroy_node()
    finally:
        rclpy.shutdown(context=context)
