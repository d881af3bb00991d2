"""The perception node with config/perception.yaml and the shipped Fast DDS
large-message profile (kept out when FASTDDS_DEFAULT_PROFILES_FILE is set).

    ros2 launch sparsecomp perception.launch.py [namespace:=car1] [checkpoint:=<model.pt>] [rig:=<name|yaml>]
        [camera_prefix:=/sensing/camera] [points_topic:=/sensing/lidar/points] [params_file:=...] [use_sim_time:=true]

Camera inputs are remapped from <camera_prefix>/<camera>/image_raw and
camera_info for every camera of the model's rig (the rig named in the
checkpoint's model config, or the `rig` argument). The logic is in
sparsecomp_ros.launch_support, plain functions with tests.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch_ros.actions import Node

from sparsecomp_ros.launch_support import (DEFAULT_CAMERA_PREFIX, DEFAULT_POINTS_TOPIC, fastdds_profile_env,
                                           perception_node_arguments)

ARGUMENTS = [
    ("namespace", "", "namespace of the node and its topics ('' = none)"),
    ("params_file", "", "node parameters ('' = the shipped config/perception.yaml)"),
    ("checkpoint", "", "model file ('' = model.checkpoint of params_file, else the shipped default)"),
    ("rig", "", "camera rig name or YAML ('' = the rig of the model's config)"),
    ("camera_prefix", DEFAULT_CAMERA_PREFIX, "camera topics: <camera_prefix>/<camera>/image_raw, camera_info"),
    ("points_topic", DEFAULT_POINTS_TOPIC, "LiDAR PointCloud2 topic"),
    ("use_sim_time", "false", "use /clock (bag replay)"),
]


def launch_setup(context, *args, **kwargs):
    environment = getattr(context, "environment", None)      # launch >= Iron; else os.environ
    actions = [SetEnvironmentVariable(name, value) for name, value in fastdds_profile_env(environment).items()]
    actions.append(Node(package="sparsecomp", executable="perception_node", output="screen",
                        **perception_node_arguments(context.launch_configurations)))
    return actions


def generate_launch_description():
    return LaunchDescription([DeclareLaunchArgument(name, default_value=default, description=description)
                              for name, default, description in ARGUMENTS]
                             + [OpaqueFunction(function=launch_setup)])
