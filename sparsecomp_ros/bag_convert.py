"""Convert nuScenes-layout sequences (generated or real) to rosbag2 (MCAP).

    python -m sparsecomp_ros.bag_convert --data-root data/synthetic --version v1.0-synthetic-val \
        --scene 0 --out bags/val_scene0 [--rig default7]

Topics (one set per camera, names from the rig, lower-case):
  /sensing/camera/<camera>/image_raw     sensor_msgs/Image (rgb8)
  /sensing/camera/<camera>/camera_info   sensor_msgs/CameraInfo
  /sensing/lidar/points                  sensor_msgs/PointCloud2 (x, y, z, intensity; lidar frame)
  /tf                                    odom -> base_link per frame
  /tf_static                             base_link -> every sensor (once, at the start)
  /ground_truth/objects                  sparsecomp/DynamicObjectArray (base_link)
Messages are built with rclpy and written as CDR with the ``rosbags`` library;
our own message types are registered from their .msg files.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from sparsecomp_core.data.nuscenes_layout import LIDAR_CHANNEL, NuScenesLayout
from sparsecomp_core.rig import load_rig

from .conversions import array_to_cloud, detections_to_msg, rgb_to_image, to_transform, us_to_stamp
from .resources import msg_dir

EGO_FRAME, ODOM_FRAME, LIDAR_FRAME = "base_link", "odom", "lidar_top"


def camera_topic(camera: str, leaf: str) -> str:
    return f"/sensing/camera/{camera.lower()}/{leaf}"


def camera_frame(camera: str) -> str:
    return f"{camera.lower()}_optical"


def typestore_with_our_messages():
    """The Kilted type store plus sparsecomp's message types."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for path in sorted(msg_dir().glob("*.msg")):     # msg/, or share/sparsecomp/msg when installed
        types.update(get_types_from_msg(path.read_text(), f"sparsecomp/msg/{path.stem}"))
    store.register(types)
    return store


def convert(data_root: str, version: str, scene_index: int, out: str | Path, rig_name: str = "default7") -> Path:
    """Write one scene as an MCAP rosbag2 at ``out``; returns the bag folder."""
    layout = NuScenesLayout(data_root, version)
    scene = layout.scenes()[scene_index]
    samples = layout.scene_samples(scene)
    rig = load_rig(rig_name)
    store = typestore_with_our_messages()
    out = Path(out)
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}

        def write(topic: str, msgtype: str, msg, stamp_us: int) -> None:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], stamp_us * 1000, serialize_message(msg))

        for index, token in enumerate(samples):
            data = layout.sample_data_by_sample[token]
            stamp_us = int(layout.tables["sample"][token]["timestamp"])
            stamp = us_to_stamp(stamp_us)
            if index == 0:
                static = []
                for camera in rig.camera_names:
                    if camera in data:
                        sensor2ego, _ = layout.sensor2ego(data[camera])
                        static.append(to_transform(EGO_FRAME, camera_frame(camera), sensor2ego, stamp))
                lidar2ego, _ = layout.sensor2ego(data[LIDAR_CHANNEL])
                static.append(to_transform(EGO_FRAME, LIDAR_FRAME, lidar2ego, stamp))
                write("/tf_static", "tf2_msgs/msg/TFMessage", TFMessage(transforms=static), stamp_us)
            ego2global = layout.ego2global(data[LIDAR_CHANNEL])
            write("/tf", "tf2_msgs/msg/TFMessage",
                  TFMessage(transforms=[to_transform(ODOM_FRAME, EGO_FRAME, ego2global, stamp)]), stamp_us)
            for camera in rig.camera_names:
                record = data.get(camera)
                if record is None:
                    continue
                header = Header(stamp=us_to_stamp(int(record["timestamp"])), frame_id=camera_frame(camera))
                with PILImage.open(layout.root / record["filename"]) as image:
                    rgb = np.array(image.convert("RGB"))
                calib = layout.tables["calibrated_sensor"][record["calibrated_sensor_token"]]
                k = np.array(calib["camera_intrinsic"], dtype=np.float64)    # OpenCV convention, as CameraInfo
                info = CameraInfo(header=header, height=rgb.shape[0], width=rgb.shape[1], distortion_model="plumb_bob",
                                  d=[0.0] * 5, k=k.flatten().tolist(), r=np.eye(3).flatten().tolist(),
                                  p=np.hstack([k, np.zeros((3, 1))]).flatten().tolist())
                write(camera_topic(camera, "camera_info"), "sensor_msgs/msg/CameraInfo", info, int(record["timestamp"]))
                write(camera_topic(camera, "image_raw"), "sensor_msgs/msg/Image", rgb_to_image(rgb, header),
                      int(record["timestamp"]))
            raw = np.fromfile(layout.root / data[LIDAR_CHANNEL]["filename"], dtype=np.float32).reshape(-1, 5)
            write("/sensing/lidar/points", "sensor_msgs/msg/PointCloud2",
                  array_to_cloud(raw[:, :4], Header(stamp=stamp, frame_id=LIDAR_FRAME)), stamp_us)
            truth = layout.boxes(token, ego2global)
            count = len(truth["labels"])
            one_hot = np.eye(8, dtype=np.float32)[truth["labels"]] if count else np.zeros((0, 8), np.float32)
            write("/ground_truth/objects", "sparsecomp/msg/DynamicObjectArray", detections_to_msg(
                {"boxes": truth["boxes"], "scores": np.ones(count), "labels": truth["labels"],
                 "ids": np.array([int(t[:12], 16) for t in truth["instance_tokens"]], dtype=np.int64),
                 "class_probabilities": one_hot, "occlusion": truth["occlusion"],
                 "occlusion_probabilities": np.eye(4, dtype=np.float32)[truth["occlusion"]] if count
                 else np.zeros((0, 4), np.float32)}, Header(stamp=stamp, frame_id=EGO_FRAME), []), stamp_us)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Convert a nuScenes-layout scene to a rosbag2 (MCAP).")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--scene", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rig", default="default7")
    args = parser.parse_args()
    print(f"wrote {convert(args.data_root, args.version, args.scene, args.out, args.rig)}")


if __name__ == "__main__":
    main()
