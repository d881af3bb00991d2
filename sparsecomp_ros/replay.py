"""Replay a rosbag2 with /clock (``ros2 bag`` is not available everywhere).

    python -m sparsecomp_ros.replay --bag bags/val_scene0 [--rate 1.0] [--loop N] [--start-delay 1.0]
        [--dead TOPIC@SECONDS ...] [--black TOPIC@SECONDS ...]

Publishes every message's serialized bytes on its topic, paced by the bag's
timestamps divided by ``--rate``, and /clock with the bag time, so nodes
with ``use_sim_time`` follow the bag. /tf_static is published transient-
local (late joiners still get it); sensor topics with sensor-data QoS.
Fault injection: ``--dead TOPIC@S`` stops a topic S seconds into the bag,
``--black TOPIC@S`` replaces an image topic's pixels with zeros from then on.
"""
from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Callable

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosbags.rosbag2 import Reader
from rclpy.serialization import deserialize_message, serialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from .conversions import us_to_stamp


def message_class(msgtype: str):
    """'pkg/msg/Type' -> the generated Python class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def qos_for(topic: str) -> QoSProfile:
    if topic == "/tf_static":
        return QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    if topic.startswith("/sensing/"):
        return qos_profile_sensor_data
    return QoSProfile(depth=10)


class BagReplayer(Node):
    def __init__(self, bag: str | Path, rate: float = 1.0, dead: dict[str, float] | None = None,
                 black: dict[str, float] | None = None,
                 on_published: Callable[[str, int, float], None] | None = None, **kwargs):
        """on_published(topic, bag timestamp ns, time.monotonic() after publishing), if given, sees every message sent."""
        super().__init__("sparsecomp_replay", **kwargs)
        self.on_published = on_published
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.bag, self.rate = Path(bag), rate
        self.dead, self.black = dict(dead or {}), dict(black or {})
        self.clock_pub = self.create_publisher(Clock, "/clock", 10)
        self.publishers_by_topic = {}
        self.published = 0

    def play(self, loops: int = 1, start_delay_s: float = 0.0) -> int:
        """Publish the bag ``loops`` times (each loop restarts the bag's time); returns messages published."""
        with Reader(self.bag) as reader:
            for connection in reader.connections:
                if connection.topic not in self.publishers_by_topic:
                    self.publishers_by_topic[connection.topic] = self.create_publisher(
                        message_class(connection.msgtype), connection.topic, qos_for(connection.topic))
            time.sleep(start_delay_s)
            for _ in range(loops):
                start_wall, start_bag = time.monotonic(), None
                for connection, timestamp, raw in reader.messages():
                    start_bag = timestamp if start_bag is None else start_bag
                    due = start_wall + (timestamp - start_bag) / 1e9 / self.rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    self.clock_pub.publish(Clock(clock=us_to_stamp(timestamp // 1000)))
                    offset_s = (timestamp - start_bag) / 1e9
                    topic = connection.topic
                    if topic in self.dead and offset_s >= self.dead[topic]:
                        continue
                    data = bytes(raw)
                    if topic in self.black and offset_s >= self.black[topic]:
                        image = deserialize_message(data, Image)
                        image.data = bytes(len(image.data))
                        data = serialize_message(image)
                    self.publishers_by_topic[topic].publish(data)
                    self.published += 1
                    if self.on_published is not None:
                        self.on_published(topic, timestamp, time.monotonic())
                    if not self.context.ok():        # this node's context, not rclpy's default one
                        return self.published
        return self.published


def main() -> None:
    parser = argparse.ArgumentParser(description="Replay a rosbag2 with /clock.")
    parser.add_argument("--bag", required=True)
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--loop", type=int, default=1, help="how many times to play the bag")
    parser.add_argument("--start-delay", type=float, default=1.0, help="seconds to let subscribers connect")
    parser.add_argument("--dead", nargs="*", default=[], metavar="TOPIC@S", help="stop TOPIC S seconds into the bag")
    parser.add_argument("--black", nargs="*", default=[], metavar="TOPIC@S", help="black images on TOPIC from S s")
    args = parser.parse_args()

    def faults(items: list[str]) -> dict[str, float]:
        return {item.rsplit("@", 1)[0]: float(item.rsplit("@", 1)[1]) for item in items}
    rclpy.init()
    node = BagReplayer(args.bag, args.rate, faults(args.dead), faults(args.black))
    try:
        count = node.play(args.loop, args.start_delay)
        node.get_logger().info(f"published {count} messages")
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
