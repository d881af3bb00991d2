"""RViz with the shipped view (config/sparsecomp.rviz): boxes, velocity arrows,
ids, trails, LiDAR, TF, the BEV debug image (camera thumbnails with their
health: RViz has no display for sparsecomp/CameraHealth) and every camera.

    ros2 launch sparsecomp rviz.launch.py [namespace:=car1] [rig:=...|checkpoint:=...]
        [camera_prefix:=...] [points_topic:=...] [rviz_config:=<file>] [use_sim_time:=true]

With a namespace, another rig or other topics, an adapted copy of the shipped
config is opened (sparsecomp_ros.launch_support.rviz_config_file).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from sparsecomp_ros.launch_support import (DEFAULT_CAMERA_PREFIX, DEFAULT_POINTS_TOPIC, is_true,
                                           rviz_config_file)

ARGUMENTS = [
    ("namespace", "", "namespace the perception node runs in ('' = none)"),
    ("params_file", "", "the node's parameter file, to find its model ('' = shipped)"),
    ("checkpoint", "", "model whose rig's cameras are shown ('' = the shipped default)"),
    ("rig", "", "camera rig name or YAML ('' = the model's)"),
    ("camera_prefix", DEFAULT_CAMERA_PREFIX, "camera topics: <camera_prefix>/<camera>/image_raw"),
    ("points_topic", DEFAULT_POINTS_TOPIC, "LiDAR PointCloud2 topic"),
    ("rviz_config", "", "RViz config to open as is ('' = the shipped one, adapted)"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
]


def launch_setup(context, *args, **kwargs):
    config = context.launch_configurations
    return [Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                 arguments=["-d", rviz_config_file(config)],
                 parameters=[{"use_sim_time": is_true(config.get("use_sim_time", "false"))}])]


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(name, default_value=default, description=description)
                              for name, default, description in ARGUMENTS]
                             + [OpaqueFunction(function=launch_setup)])
