"""Launch files and the RViz config, without `launch`/`launch_ros` (not installable
here): each launch file is imported with small stand-ins for those modules,
its OpaqueFunction is run on a fake launch context, and the actions it makes
are checked; the decisions themselves are sparsecomp_ros.launch_support."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO_ROOT
from sparsecomp_core.config import to_dict
from sparsecomp_core.models.model_config import load_model_config
from sparsecomp_core.rig import load_rig
from sparsecomp_ros import launch_support
from sparsecomp_ros.fastdds import PROFILE_ENV, profile_path
from sparsecomp_ros.resources import perception_params, rviz_config

DEFAULT7 = load_rig("default7").camera_names
NUSCENES6 = load_rig("nuscenes6").camera_names


# --- stand-ins for launch / launch_ros --------------------------------------------------------------------

class Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(Recorded):
    pass


class SetEnvironmentVariable(Recorded):
    pass


class OpaqueFunction(Recorded):
    pass


class IncludeLaunchDescription(Recorded):
    pass


class PythonLaunchDescriptionSource(Recorded):
    pass


class Node(Recorded):
    pass


class LaunchConfiguration(Recorded):
    pass


class LaunchDescription:
    def __init__(self, entities=()):
        self.entities = list(entities)


@pytest.fixture
def stub_launch(monkeypatch):
    modules = {
        "launch": {"LaunchDescription": LaunchDescription},
        "launch.actions": {"DeclareLaunchArgument": DeclareLaunchArgument, "OpaqueFunction": OpaqueFunction,
                           "SetEnvironmentVariable": SetEnvironmentVariable,
                           "IncludeLaunchDescription": IncludeLaunchDescription},
        "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
        "launch.launch_description_sources": {"PythonLaunchDescriptionSource": PythonLaunchDescriptionSource},
        "launch_ros": {},
        "launch_ros.actions": {"Node": Node},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, module)


def load_launch_file(name: str):
    path = REPO_ROOT / "launch" / name
    spec = importlib.util.spec_from_file_location(name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


class FakeContext:
    """What our OpaqueFunctions use of launch's LaunchContext."""

    def __init__(self, description: LaunchDescription, environment: dict[str, str], **arguments: str):
        self.environment = environment
        self.launch_configurations = {}
        for entity in description.entities:
            if isinstance(entity, DeclareLaunchArgument) and entity.kwargs.get("default_value") is not None:
                self.launch_configurations[entity.args[0]] = entity.kwargs["default_value"]
        self.launch_configurations.update(arguments)


def run_opaque(description: LaunchDescription, environment=None, **arguments) -> list:
    context = FakeContext(description, {} if environment is None else environment, **arguments)
    actions = []
    for entity in description.entities:
        if isinstance(entity, OpaqueFunction):
            actions += entity.kwargs["function"](context) or []
    return actions


def only(actions, kind):
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def camera_checkpoint(tmp_path: Path, rig: str) -> Path:
    """A checkpoint whose model config names ``rig`` (launch reads only the config)."""
    cfg = to_dict(load_model_config("tiny"))
    cfg["rig"] = rig
    path = tmp_path / f"{rig}.pt"
    torch.save({"model": {}, "model_config": cfg}, path)
    return path


def remapped_cameras(node: Node) -> set[str]:
    return {source.split("/")[2] for source, _ in node.kwargs["remappings"] if source.startswith("~/input/cam")}


# --- perception.launch.py ----------------------------------------------------------------------------------

def test_perception_launch_defaults_remap_the_shipped_models_rig_and_set_our_profile(stub_launch):
    description = load_launch_file("perception.launch.py")
    actions = run_opaque(description)
    node = only(actions, Node)
    assert node.kwargs["executable"] == "perception_node" and node.kwargs["name"] == "sparsecomp_perception"
    assert node.kwargs["namespace"] is None
    remaps = dict(node.kwargs["remappings"])
    assert remapped_cameras(node) == {c.lower() for c in DEFAULT7}
    for camera in DEFAULT7:
        assert remaps[f"~/input/{camera.lower()}/image"] == f"/sensing/camera/{camera.lower()}/image_raw"
        assert remaps[f"~/input/{camera.lower()}/camera_info"] == f"/sensing/camera/{camera.lower()}/camera_info"
    assert remaps["~/input/points"] == "/sensing/lidar/points"
    params_file, overrides = node.kwargs["parameters"]
    assert Path(params_file) == perception_params()
    assert overrides == {"use_sim_time": False}
    profile = only(actions, SetEnvironmentVariable)
    assert profile.args == (PROFILE_ENV, str(profile_path()))


def test_a_profile_the_user_set_is_kept(stub_launch):
    actions = run_opaque(load_launch_file("perception.launch.py"), environment={PROFILE_ENV: "/mine.xml"})
    assert not [a for a in actions if isinstance(a, SetEnvironmentVariable)]
    assert launch_support.fastdds_profile_env({PROFILE_ENV: "/mine.xml"}) == {}
    assert launch_support.fastdds_profile_env({}) == {PROFILE_ENV: str(profile_path())}


def test_namespace_puts_the_node_under_it_and_its_parameters_still_apply(stub_launch):
    actions = run_opaque(load_launch_file("perception.launch.py"), namespace="car1/", camera_prefix="sensing/cam",
                         use_sim_time="true")
    node = only(actions, Node)
    assert node.kwargs["namespace"] == "/car1"
    # relative prefixes resolve in the namespace (ROS rules), absolute ones stay
    assert dict(node.kwargs["remappings"])["~/input/cam_rear/image"] == "sensing/cam/cam_rear/image_raw"
    params_file, overrides = node.kwargs["parameters"]
    assert overrides["use_sim_time"] is True
    written = yaml.safe_load(Path(params_file).read_text())
    shipped = yaml.safe_load(perception_params().read_text())
    # rcl matches a section to the node's full name: "sparsecomp_perception:" would no longer apply
    assert list(written) == ["/car1/sparsecomp_perception"]
    assert written["/car1/sparsecomp_perception"] == shipped["sparsecomp_perception"]


def test_cameras_come_from_the_checkpoints_rig_or_the_rig_argument(stub_launch, tmp_path):
    checkpoint = camera_checkpoint(tmp_path, "nuscenes6")
    description = load_launch_file("perception.launch.py")
    node = only(run_opaque(description, checkpoint=str(checkpoint)), Node)
    assert remapped_cameras(node) == {c.lower() for c in NUSCENES6}
    assert node.kwargs["parameters"][1]["model.checkpoint"] == str(checkpoint)

    node = only(run_opaque(description, rig="nuscenes6"), Node)
    assert remapped_cameras(node) == {c.lower() for c in NUSCENES6}

    params = tmp_path / "params.yaml"        # the checkpoint named in a parameter file counts too
    params.write_text(yaml.safe_dump({"sparsecomp_perception": {"ros__parameters": {
        "model": {"checkpoint": str(checkpoint)}, "model.device": "cpu"}}}))
    node = only(run_opaque(description, params_file=str(params)), Node)
    assert remapped_cameras(node) == {c.lower() for c in NUSCENES6}
    assert node.kwargs["parameters"][0] == str(params)


# --- replay.launch.py / rviz.launch.py ---------------------------------------------------------------------

def test_replay_launch_includes_perception_on_sim_time_and_plays_the_bag(stub_launch):
    description = load_launch_file("replay.launch.py")
    include = only(description.entities, IncludeLaunchDescription)
    source = include.args[0]
    assert Path(source.args[0]) == REPO_ROOT / "launch" / "perception.launch.py"
    passed = dict(include.kwargs["launch_arguments"])
    assert passed["use_sim_time"] == "true"
    assert {"namespace", "checkpoint", "rig", "camera_prefix", "points_topic"} <= set(passed)
    actions = run_opaque(description, bag="/bags/val0", rate="0.5", namespace="car1")
    replay = only(actions, Node)
    assert replay.kwargs["executable"] == "replay" and replay.kwargs["namespace"] == "/car1"
    assert replay.kwargs["arguments"] == ["--bag", "/bags/val0", "--rate", "0.5"]
    assert only(actions, SetEnvironmentVariable).args[0] == PROFILE_ENV
    assert not [a for a in run_opaque(description, environment={PROFILE_ENV: "/mine.xml"}, bag="b")
                if isinstance(a, SetEnvironmentVariable)]


def test_rviz_launch_opens_the_shipped_view_or_an_adapted_copy(stub_launch):
    description = load_launch_file("rviz.launch.py")
    node = only(run_opaque(description), Node)
    assert node.kwargs["executable"] == "rviz2"
    assert node.kwargs["arguments"] == ["-d", str(rviz_config())]
    assert node.kwargs["parameters"] == [{"use_sim_time": False}]

    node = only(run_opaque(description, namespace="car1", rig="nuscenes6", use_sim_time="True"), Node)
    adapted = yaml.safe_load(Path(node.kwargs["arguments"][1]).read_text())
    topics = display_topics(adapted)
    assert "/car1/sparsecomp_perception/output/markers" in topics
    assert "/car1/sparsecomp_perception/output/bev_image" in topics
    assert {f"/sensing/camera/{c.lower()}/image_raw" for c in NUSCENES6} <= topics
    assert not {f"/sensing/camera/{c.lower()}/image_raw" for c in set(DEFAULT7) - set(NUSCENES6)} & topics
    assert node.kwargs["parameters"] == [{"use_sim_time": True}]


# --- the RViz config ---------------------------------------------------------------------------------------

def displays(items) -> list[dict]:
    found = []
    for item in items or []:
        found += [item] + displays(item.get("Displays"))
    return found


def display_topics(config: dict) -> set[str]:
    return {d["Topic"]["Value"] for d in displays(config["Visualization Manager"]["Displays"])
            if isinstance(d.get("Topic"), dict)}


def test_rviz_config_has_the_standard_tools_and_a_display_per_output_and_camera():
    config = yaml.safe_load(rviz_config().read_text())
    manager = config["Visualization Manager"]
    tools = [tool["Class"] for tool in manager["Tools"]]
    assert tools == [f"rviz_default_plugins/{name}" for name in
                     ("Interact", "MoveCamera", "Select", "FocusCamera", "Measure", "SetInitialPose", "SetGoal",
                      "PublishPoint")]
    by_class = {}
    for display in displays(manager["Displays"]):
        by_class.setdefault(display["Class"], []).append(display)
    assert len(by_class["rviz_default_plugins/TF"]) == 1
    assert by_class["rviz_default_plugins/PointCloud2"][0]["Topic"]["Value"] == "/sensing/lidar/points"
    assert by_class["rviz_default_plugins/MarkerArray"][0]["Topic"]["Value"] == \
        "/sparsecomp_perception/output/markers"
    images = {d["Topic"]["Value"]: d["Name"] for d in by_class["rviz_default_plugins/Image"]}
    assert "/sparsecomp_perception/output/bev_image" in images
    for camera in DEFAULT7:              # the shipped model's rig
        assert images[f"/sensing/camera/{camera.lower()}/image_raw"] == camera
    assert manager["Global Options"]["Fixed Frame"] == "base_link"
    # the shipped file is what launch_support writes for the default rig and topics
    again = launch_support.rviz_config_data(yaml.safe_load(rviz_config().read_text()), None, DEFAULT7)
    assert again == config
