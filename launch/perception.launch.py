"""Vehicle: the perception node with config/perception.yaml and the shipped
Fast DDS large-message profile. Camera topics are remapped from
<camera_prefix>/<camera>/image_raw (override with your driver's names)."""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

CAMERAS = ["CAM_FRONT_WIDE", "CAM_FRONT_TELE", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_REAR_LEFT",
           "CAM_REAR_RIGHT", "CAM_REAR"]


def generate_launch_description():
    share = get_package_share_directory("sparsecomp")
    prefix = LaunchConfiguration("camera_prefix")
    remaps = [("~/input/points", LaunchConfiguration("points_topic"))]
    for camera in CAMERAS:
        remaps += [(f"~/input/{camera.lower()}/image", [prefix, f"/{camera.lower()}/image_raw"]),
                   (f"~/input/{camera.lower()}/camera_info", [prefix, f"/{camera.lower()}/camera_info"])]
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "perception.yaml")),
        DeclareLaunchArgument("camera_prefix", default_value="/sensing/camera"),
        DeclareLaunchArgument("points_topic", default_value="/sensing/lidar/points"),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_large_data.xml")),
        Node(package="sparsecomp", executable="perception_node", name="sparsecomp_perception", output="screen",
             parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             remappings=remaps),
    ])
