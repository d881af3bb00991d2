"""Shared fixtures: ROS isolation (one DDS domain per test) and repo paths."""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

# Generated messages check field types and array lengths only when this is
# set before they are imported: tests want wrong messages to fail loudly.
os.environ.setdefault("ROS_PYTHON_CHECK_FIELDS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Domains 100..199, offset by the pid so concurrent pytest runs rarely collide.
_domain_ids = itertools.count((os.getpid() % 50) * 2)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA GPU."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch
    if torch.cuda.is_available() or os.environ.get("SPARSECOMP_CUDA_TESTS_DEVICE") == "cpu":
        return                                  # the latter: test_cuda.py's dry run on the CPU
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); make gpu-check runs it")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def ros_domain_id() -> int:
    """A DDS domain id of this test's own (same domain = crosstalk)."""
    return 100 + next(_domain_ids) % 100


@pytest.fixture
def ros_env(ros_domain_id: int, tmp_path: Path) -> dict[str, str]:
    """Environment for a child ROS process: own domain, localhost only,
    the shipped large-message Fast DDS profile, logs in tmp."""
    from sparsecomp_ros.fastdds import large_message_environment

    env = large_message_environment()
    env.update(ROS_DOMAIN_ID=str(ros_domain_id),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(tmp_path / "ros_log"),
               PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def busy_cores():
    """Two busy-loop processes that load both cores of a CI machine for the test's duration
    (each also stops by itself after 10 minutes, should teardown never come)."""
    from sparsecomp_ros.demo import busy_loops
    with busy_loops(2, limit_s=600.0) as processes:
        yield processes
