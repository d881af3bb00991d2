"""Locating and enabling the shipped Fast DDS profile for large messages."""
from __future__ import annotations

import os
from pathlib import Path

from sparsecomp_core.resources import share_path

PROFILE_NAME = "fastdds_large_data.xml"
PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def profile_path() -> Path:
    """Path of config/fastdds_large_data.xml, from a source tree or a ROS install
    (``sparsecomp_ros.resources``); FileNotFoundError names the places looked in."""
    return share_path("config", PROFILE_NAME)


def large_message_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default: os.environ) that selects the shipped profile.

    A profile the user already chose (``FASTDDS_DEFAULT_PROFILES_FILE``) is kept.
    Must be in the environment before the process creates its first ROS context.
    """
    env = dict(os.environ if base is None else base)
    env.setdefault(PROFILE_ENV, str(profile_path()))
    return env


def use_large_message_profile() -> str:
    """Select the shipped profile in this process's environment unless one is set
    already; returns the profile in effect. Call before the first ROS context."""
    return os.environ.setdefault(PROFILE_ENV, str(profile_path()))
