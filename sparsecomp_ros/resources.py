"""The package's files for the ROS side: shipped model, parameters, Fast DDS
profile, message definitions, RViz config.

Each comes from the source tree when running from one, else from the
installed package's share folder (``ros2 run`` / ``ros2 launch`` after
``colcon build``): see ``sparsecomp_core.resources`` for the lookup order.
A missing file raises FileNotFoundError naming every place looked in.
"""
from __future__ import annotations

from pathlib import Path

from sparsecomp_core.resources import SHARE_ENV, config_path, share_path, share_roots, source_root

__all__ = ["SHARE_ENV", "config_path", "share_path", "share_roots", "source_root", "DEFAULT_MODEL",
           "default_checkpoint", "msg_dir", "perception_params", "fastdds_profile", "rviz_config"]

DEFAULT_MODEL = "tiny_default.pt"


def default_checkpoint() -> Path:
    """The shipped default model, ``models/tiny_default.pt``."""
    return share_path("models", DEFAULT_MODEL)


def msg_dir() -> Path:
    """The folder of our ``*.msg`` definitions (``msg/``; ``share/sparsecomp/msg`` when installed)."""
    return share_path("msg", "DynamicObjectArray.msg").parent


def perception_params() -> Path:
    """The perception node's parameter file, ``config/perception.yaml``."""
    return config_path("perception.yaml")


def fastdds_profile() -> Path:
    """The Fast DDS large-message profile, ``config/fastdds_large_data.xml``."""
    return config_path("fastdds_large_data.xml")


def rviz_config() -> Path:
    """The shipped RViz view, ``config/sparsecomp.rviz``."""
    return config_path("sparsecomp.rviz")
