"""The package builds the ROS 2 way: colcon + ament_cmake in a workspace, with
messages, Python packages and config files installed where ROS tools look."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in listed.stdout.splitlines() if (REPO_ROOT / f).is_file()]


@pytest.mark.skipif(shutil.which("colcon") is None, reason="colcon not installed")
def test_colcon_build_installs_messages_python_packages_and_config(tmp_path):
    venv = Path(sys.prefix)
    source = tmp_path / "src" / "sparsecomp"
    for name in tracked_files():  # what a clone has, nothing built
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMENT_", "COLCON_"))}
    env.update(AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv))
    build = subprocess.run(
        ["colcon", "build", "--executor", "sequential", "--packages-select", "sparsecomp",
         "--cmake-args", f"-DCMAKE_PROJECT_INCLUDE={REPO_ROOT / 'cmake' / 'fix_pip_wheel_includes.cmake'}",
         "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]

    install = tmp_path / "install" / "sparsecomp"
    assert (install / "share" / "sparsecomp" / "config" / "fastdds_large_data.xml").is_file()
    assert (install / "share" / "sparsecomp" / "msg" / "DynamicObjectArray.msg").is_file()
    # The installed tree, not the venv, provides the packages once sourced.
    probe = ("import sparsecomp.msg, sparsecomp_core, sparsecomp_ros; "
             "from sparsecomp.msg import DynamicObjectArray; DynamicObjectArray(); "
             "print(sparsecomp.msg.__file__); print(sparsecomp_core.__file__)")
    sourced = subprocess.run(
        ["bash", "-c", f"set +u; . install/setup.sh && cd / && {sys.executable} -c '{probe}'"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert sourced.returncode == 0, sourced.stdout + sourced.stderr
    message_path, core_path = sourced.stdout.split()
    assert message_path.startswith(str(install)), message_path
    assert core_path.startswith(str(install)), core_path
