"""Bag replay: the perception node on sim time and our replayer (publishes the
bag and /clock). Usage: ros2 launch sparsecomp replay.launch.py bag:=<folder> [rate:=0.5]"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("sparsecomp")
    return LaunchDescription([
        DeclareLaunchArgument("bag"),
        DeclareLaunchArgument("rate", default_value="1.0"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", os.path.join(share, "config", "fastdds_large_data.xml")),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
                                 launch_arguments={"use_sim_time": "true"}.items()),
        Node(package="sparsecomp", executable="replay", name="sparsecomp_replay", output="screen",
             arguments=["--bag", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate")]),
    ])
