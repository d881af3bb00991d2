"""sparsecomp ROS 2 nodes and tools (rclpy)."""
