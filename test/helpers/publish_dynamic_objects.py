"""Child process for test_messages: publishes a known DynamicObjectArray and
CameraHealth on a domain of the test's choosing until it is killed."""
import sys
import time

import rclpy
from rclpy.node import Node

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from message_samples import sample_camera_health, sample_object_array  # noqa: E402


def main() -> None:
    rclpy.init()
    node = Node("sparsecomp_test_publisher")
    objects_pub = node.create_publisher(type(sample_object_array()), "objects", 10)
    health_pub = node.create_publisher(type(sample_camera_health()), "camera_health", 10)
    deadline = time.monotonic() + 60.0  # never outlive a stuck test
    while rclpy.ok() and time.monotonic() < deadline:
        objects_pub.publish(sample_object_array())
        health_pub.publish(sample_camera_health())
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
