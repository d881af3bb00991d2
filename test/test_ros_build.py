"""The package builds the ROS 2 way: colcon + ament_cmake in a workspace, with
messages, Python packages and config files installed where ROS tools look,
and the installed executables (what `ros2 run sparsecomp <exe>` starts) run
from the install alone: configs, models and message definitions come from
share/sparsecomp, not from a source tree.

One colcon build (about a minute) for the whole module."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT

NODE_OBJECTS = "/sparsecomp_perception/output/objects"


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [f for f in listed.stdout.splitlines() if (REPO_ROOT / f).is_file()]


def clean_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default os.environ) without ament/colcon state or a chosen share
    folder, ROS resolved from the venv, and the venv's python3 first on PATH
    (the executables' shebang is ``/usr/bin/env python3``, as `ros2 run` runs them)."""
    venv = Path(sys.prefix)
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("AMENT_", "COLCON_")) and k != "SPARSECOMP_SHARE"}
    env.update(AMENT_PREFIX_PATH=str(venv), CMAKE_PREFIX_PATH=str(venv),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))
    return env


def in_install(workspace: Path, command: str) -> list[str]:
    """``command`` in a shell with the workspace's install sourced and cwd=/ (no source tree in sight)."""
    return ["bash", "-c", f"set +u; . {shlex.quote(str(workspace / 'install' / 'setup.sh'))} && cd / && {command}"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    if shutil.which("colcon") is None:
        pytest.skip("colcon not installed")
    workspace = tmp_path_factory.mktemp("ws")
    source = workspace / "src" / "sparsecomp"
    for name in tracked_files():  # what a clone has, nothing built
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, source / name)
    build = subprocess.run(
        ["colcon", "build", "--executor", "sequential", "--packages-select", "sparsecomp",
         "--cmake-args", f"-DCMAKE_PROJECT_INCLUDE={REPO_ROOT / 'cmake' / 'fix_pip_wheel_includes.cmake'}",
         "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=workspace, env=clean_environment(), capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return workspace


def test_colcon_build_installs_messages_python_packages_and_config(workspace):
    install = workspace / "install" / "sparsecomp"
    share = install / "share" / "sparsecomp"
    assert (share / "config" / "fastdds_large_data.xml").is_file()
    assert (share / "config" / "perception.yaml").is_file()
    assert (share / "config" / "sparsecomp.rviz").is_file()
    assert (share / "config" / "rigs" / "default7.yaml").is_file()
    assert (share / "models" / "tiny_default.pt").is_file()
    assert (share / "launch" / "perception.launch.py").is_file()
    for message in (REPO_ROOT / "msg").glob("*.msg"):         # rosidl installs the definitions
        assert (share / "msg" / message.name).read_text() == message.read_text()
    for executable in ("perception_node", "bag_convert", "replay", "demo"):
        assert os.access(install / "lib" / "sparsecomp" / executable, os.X_OK), executable
    # The installed tree, not the venv, provides the packages once sourced, and
    # every file they look up comes from its share folder.
    probe = ("import json, sparsecomp.msg, sparsecomp_core, sparsecomp_ros\n"
             "from sparsecomp.msg import DynamicObjectArray; DynamicObjectArray()\n"
             "from sparsecomp_core.resources import config_path, source_root\n"
             "from sparsecomp_core.rig import load_rig\n"
             "from sparsecomp_core.models.model_config import load_model_config\n"
             "from sparsecomp_ros import resources\n"
             "from sparsecomp_ros.fastdds import profile_path\n"
             "assert source_root() is None\n"
             "assert load_rig('default7').num_cameras == 7 and load_model_config('tiny').name\n"
             "print(json.dumps({'msg': sparsecomp.msg.__file__, 'core': sparsecomp_core.__file__,\n"
             "    'ros': sparsecomp_ros.__file__, 'rig': str(config_path('rigs', 'default7.yaml')),\n"
             "    'model_config': str(config_path('models', 'tiny.yaml')),\n"
             "    'params': str(resources.perception_params()), 'profile': str(profile_path()),\n"
             "    'checkpoint': str(resources.default_checkpoint()), 'msg_dir': str(resources.msg_dir())}))\n")
    sourced = subprocess.run(in_install(workspace, f"{shlex.quote(sys.executable)} -c {shlex.quote(probe)}"),
                             env=clean_environment(), capture_output=True, text=True, timeout=120)
    assert sourced.returncode == 0, sourced.stdout + sourced.stderr
    found = json.loads(sourced.stdout.strip().splitlines()[-1])
    for what in ("msg", "core", "ros"):
        assert found[what].startswith(str(install)), found
    for what in ("rig", "model_config", "params", "profile", "checkpoint", "msg_dir"):
        assert found[what].startswith(str(share)), found


def test_installed_bag_converter_writes_a_bag(workspace, tmp_path):
    from rosbags.rosbag2 import Reader

    from sparsecomp_core.data.synthetic.generate import generate
    generate(tmp_path / "data", "v1.0-tiny", "default7", seed=3, scenes=1, frames=2, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    exe = workspace / "install" / "sparsecomp" / "lib" / "sparsecomp" / "bag_convert"
    command = (f"{shlex.quote(str(exe))} --data-root {shlex.quote(str(tmp_path / 'data'))} --version v1.0-tiny "
               f"--scene 0 --out {shlex.quote(str(tmp_path / 'bag'))}")
    converted = subprocess.run(in_install(workspace, command), env=clean_environment(), capture_output=True,
                               text=True, timeout=300)
    assert converted.returncode == 0, converted.stdout[-3000:] + converted.stderr[-3000:]
    with Reader(tmp_path / "bag") as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert reader.message_count == 2 * (7 * 2 + 3) + 1
    assert types["/ground_truth/objects"] == "sparsecomp/msg/DynamicObjectArray"   # registered from share/msg


def test_installed_replayer_prints_its_help(workspace):
    exe = workspace / "install" / "sparsecomp" / "lib" / "sparsecomp" / "replay"
    helped = subprocess.run(in_install(workspace, f"{shlex.quote(str(exe))} --help"), env=clean_environment(),
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0, helped.stdout + helped.stderr
    assert "--bag" in helped.stdout and "--rate" in helped.stdout


def test_installed_perception_node_starts_with_the_shipped_model_and_stops_on_sigint(workspace, tmp_path, ros_env,
                                                                                     ros_domain_id):
    import rclpy

    from sparsecomp_ros.fastdds import PROFILE_ENV
    env = clean_environment(ros_env)
    env.pop(PROFILE_ENV, None)            # the executable selects the installed profile itself
    exe = workspace / "install" / "sparsecomp" / "lib" / "sparsecomp" / "perception_node"
    log_path = tmp_path / "node.log"
    with log_path.open("w") as log:
        # exec: the signal reaches the node, not the shell
        node = subprocess.Popen(in_install(workspace, f"exec {shlex.quote(str(exe))} --ros-args -p model.device:=cpu"),
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    try:
        probe = rclpy.create_node("build_test_probe", context=context)
        deadline = time.monotonic() + 240
        while node.poll() is None and probe.count_publishers(NODE_OBJECTS) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        up = probe.count_publishers(NODE_OBJECTS) > 0
        probe.destroy_node()
    finally:
        rclpy.shutdown(context=context)
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        try:
            returncode = node.wait(timeout=120)
        except subprocess.TimeoutExpired:
            node.kill()
            returncode = node.wait()
    output = log_path.read_text()
    assert up, f"the node never advertised {NODE_OBJECTS} (exit code {node.returncode}):\n{output[-3000:]}"
    assert returncode == 0, f"exit code {returncode} after SIGINT:\n{output[-3000:]}"
