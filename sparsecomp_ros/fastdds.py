"""Locating and enabling the shipped Fast DDS profile for large messages."""
from __future__ import annotations

import os
from pathlib import Path

PROFILE_NAME = "fastdds_large_data.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def profile_path() -> Path:
    """Path of config/fastdds_large_data.xml, from a source tree or a ROS install."""
    source_tree = Path(__file__).resolve().parent.parent / "config" / PROFILE_NAME
    if source_tree.is_file():
        return source_tree
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory("sparsecomp")) / "config" / PROFILE_NAME
    except Exception as exc:  # package index missing or package not installed
        raise FileNotFoundError(f"cannot find {PROFILE_NAME}: not in the source tree "
                                f"and no installed sparsecomp package ({exc})") from exc
    if not installed.is_file():
        raise FileNotFoundError(f"{installed} does not exist")
    return installed


def large_message_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) that selects the shipped profile.

    A profile the user already chose (``FASTDDS_DEFAULT_PROFILES_FILE``) is kept.
    Must be in the environment before the process creates its first ROS context.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault(PROFILE_ENV, str(profile_path()))
    return env
