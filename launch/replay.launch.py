"""Bag replay: the perception node on sim time (perception.launch.py) and our
replayer, which publishes the bag and /clock.

    ros2 launch sparsecomp replay.launch.py bag:=<folder> [rate:=0.5] [namespace:=car1] [checkpoint:=...] [rig:=...]

Without `launch` (our pip environment), `python -m sparsecomp_ros.demo` runs the
same set-up.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sparsecomp_ros.launch_support import fastdds_profile_env, normalize_namespace

PASSED_ON = ["namespace", "params_file", "checkpoint", "rig", "camera_prefix", "points_topic"]


def launch_setup(context, *args, **kwargs):
    environment = getattr(context, "environment", None)      # launch >= Iron; else os.environ
    actions = [SetEnvironmentVariable(name, value) for name, value in fastdds_profile_env(environment).items()]
    config = context.launch_configurations
    actions.append(Node(package="sparsecomp", executable="replay", name="sparsecomp_replay", output="screen",
                        namespace=normalize_namespace(config.get("namespace")),
                        arguments=["--bag", config["bag"], "--rate", config.get("rate", "1.0")]))
    return actions


def generate_launch_description():
    here = os.path.dirname(os.path.abspath(__file__))
    perception = {name: LaunchConfiguration(name) for name in PASSED_ON}
    perception["use_sim_time"] = "true"
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the nodes ('' = none)"),
        DeclareLaunchArgument("params_file", default_value="", description="node parameters ('' = shipped)"),
        DeclareLaunchArgument("checkpoint", default_value="", description="model file ('' = shipped default)"),
        DeclareLaunchArgument("rig", default_value="", description="camera rig ('' = the model's)"),
        DeclareLaunchArgument("camera_prefix", default_value="/sensing/camera", description="camera topic prefix"),
        DeclareLaunchArgument("points_topic", default_value="/sensing/lidar/points", description="LiDAR topic"),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(os.path.join(here, "perception.launch.py")),
                                 launch_arguments=perception.items()),
        OpaqueFunction(function=launch_setup),
    ])
