"""RViz with the shipped view: boxes, velocity arrows, ids, trails, LiDAR, BEV image."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("sparsecomp")
    return LaunchDescription([
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        Node(package="rviz2", executable="rviz2", name="rviz2",
             arguments=["-d", os.path.join(share, "config", "sparsecomp.rviz")],
             parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}]),
    ])
