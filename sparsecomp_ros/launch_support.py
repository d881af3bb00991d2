"""What the launch files (``launch/*.launch.py``) decide, as plain functions.

The launch files only declare arguments and, in an ``OpaqueFunction``, turn
the resolved argument strings into actions with these functions; so the
logic runs (and is tested) without ``launch``/``launch_ros``, which our pip
environment cannot install.

- the cameras come from the rig of the model that will run: the ``rig``
  argument, else the rig named in the model config stored in the checkpoint
  (``checkpoint`` argument, else ``model.checkpoint`` in the parameter file,
  else the shipped default model);
- a ``namespace`` puts the node, its ``~/...`` topics, and relative input
  topics under it;
- a Fast DDS profile the user chose (``FASTDDS_DEFAULT_PROFILES_FILE``) is
  kept; ours is set only when none is.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .fastdds import PROFILE_ENV, profile_path
from .resources import default_checkpoint, perception_params, rviz_config

NODE_NAME = "sparsecomp_perception"
DEFAULT_CAMERA_PREFIX = "/sensing/camera"
DEFAULT_POINTS_TOPIC = "/sensing/lidar/points"
# The shipped RViz config shows this rig's cameras; others get a generated config.
RVIZ_DEFAULT_RIG = "default7"
RVIZ_CAMERA_GROUP = "Cameras"


def is_true(value: str | bool) -> bool:
    """A launch argument string as a bool ('true', '1', 'yes', 'on'; any case)."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")


def fastdds_profile_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables to set: ``{}`` when ``environ`` (default os.environ) already names a
    Fast DDS profile, else ``{FASTDDS_DEFAULT_PROFILES_FILE: <shipped profile>}``."""
    environ = os.environ if environ is None else environ
    return {} if environ.get(PROFILE_ENV) else {PROFILE_ENV: str(profile_path())}


def normalize_namespace(namespace: str | None) -> str | None:
    """``""``/``"/"``/None -> None (root); ``"car1/"`` -> ``"/car1"``."""
    namespace = (namespace or "").strip().strip("/")
    return f"/{namespace}" if namespace else None


def node_fqn(namespace: str | None, name: str = NODE_NAME) -> str:
    return f"{normalize_namespace(namespace) or ''}/{name}"


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _node_sections(data: Any, name: str = NODE_NAME) -> list[tuple[str, dict]]:
    """(key, ros__parameters) of every section of a parameter file that can apply to ``name``."""
    if not isinstance(data, Mapping):
        return []
    sections = []
    for key, body in data.items():
        if not isinstance(body, Mapping) or not isinstance(body.get("ros__parameters"), Mapping):
            continue
        if key == "/**" or str(key).rstrip("/").split("/")[-1] == name:
            sections.append((str(key), dict(body["ros__parameters"])))
    return sections


def node_parameters(params_file: str | os.PathLike | None, name: str = NODE_NAME) -> dict[str, Any]:
    """The node's parameters in a ROS parameter file (flattened, ``"model.checkpoint"``)."""
    if not params_file:
        return {}
    data = yaml.safe_load(Path(params_file).read_text())
    merged: dict[str, Any] = {}
    for _, params in _node_sections(data, name):     # later sections win, as in rcl
        merged.update(_flatten(params))
    return merged


def params_file_for(params_file: str, namespace: str | None, name: str = NODE_NAME) -> str:
    """A parameter file that applies to the node in ``namespace``.

    rcl matches a section key to the node's full name, so ``sparsecomp_perception:``
    (as in config/perception.yaml) stops applying once the node is namespaced.
    Then a copy keyed by the full name is written to a temporary file; files
    using ``/**`` or the full name already, and the root namespace, pass unchanged.
    """
    namespace = normalize_namespace(namespace)
    if not namespace or not params_file:
        return params_file
    data = yaml.safe_load(Path(params_file).read_text())
    fqn = node_fqn(namespace, name)
    if not isinstance(data, dict) or any(key in ("/**", fqn, fqn.lstrip("/")) for key in data):
        return params_file
    renamed = {(fqn if str(key).strip("/") == name else key): body for key, body in data.items()}
    if renamed == data:
        return params_file
    handle = tempfile.NamedTemporaryFile("w", prefix=f"{name}_", suffix=".yaml", delete=False)
    with handle:
        yaml.safe_dump(renamed, handle, sort_keys=False)
    return handle.name


def checkpoint_rig(checkpoint: str | os.PathLike):
    """The rig (RigConfig, at the model's input size) of the model stored in ``checkpoint``
    (read safely; FileNotFoundError / CheckpointError name the file)."""
    from sparsecomp_core.models.detector import checkpoint_model_config

    return checkpoint_model_config(checkpoint).load_rig()


def launch_rig(rig: str = "", checkpoint: str = "", params_file: str = ""):
    """The rig the node will run: ``rig`` (a name or YAML path) when given, else the
    rig of the checkpoint the node will load (``checkpoint``, else ``model.checkpoint``
    in ``params_file``, else the shipped default model)."""
    from sparsecomp_core.rig import load_rig

    if rig:
        return load_rig(rig)
    checkpoint = checkpoint or node_parameters(params_file).get("model.checkpoint") or default_checkpoint()
    return checkpoint_rig(checkpoint)


def _topic(prefix: str, *parts: str) -> str:
    return "/".join([prefix.rstrip("/"), *parts]) if prefix.rstrip("/") else "/" + "/".join(parts)


def camera_remappings(cameras: Sequence[str] | Any, prefix: str = DEFAULT_CAMERA_PREFIX,
                      image_leaf: str = "image_raw", info_leaf: str = "camera_info") -> list[tuple[str, str]]:
    """The node's camera inputs remapped to ``<prefix>/<camera>/<leaf>`` (names lower-case)
    for every camera of a rig (a RigConfig or a list of names), raw and compressed."""
    names = getattr(cameras, "camera_names", cameras)
    remaps = []
    for camera in names:
        camera = camera.lower()
        remaps += [(f"~/input/{camera}/image", _topic(prefix, camera, image_leaf)),
                   (f"~/input/{camera}/image/compressed", _topic(prefix, camera, image_leaf, "compressed")),
                   (f"~/input/{camera}/camera_info", _topic(prefix, camera, info_leaf))]
    return remaps


def perception_node_arguments(args: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments of launch_ros's ``Node`` for the perception node, from the
    resolved launch arguments: ``namespace``, ``params_file``, ``checkpoint``, ``rig``,
    ``camera_prefix``, ``points_topic``, ``use_sim_time`` (all optional)."""
    params_file = args.get("params_file") or str(perception_params())
    namespace = normalize_namespace(args.get("namespace"))
    checkpoint = args.get("checkpoint", "")
    rig = launch_rig(args.get("rig", ""), checkpoint, params_file)
    overrides: dict[str, Any] = {"use_sim_time": is_true(args.get("use_sim_time", "false"))}
    if checkpoint:
        overrides["model.checkpoint"] = checkpoint
    remappings = [("~/input/points", args.get("points_topic") or DEFAULT_POINTS_TOPIC)]
    remappings += camera_remappings(rig, args.get("camera_prefix", DEFAULT_CAMERA_PREFIX))
    return {"name": NODE_NAME, "namespace": namespace,
            "parameters": [params_file_for(params_file, namespace), overrides], "remappings": remappings}


# --- RViz ------------------------------------------------------------------------------------------------


def _displays(displays: list) -> list:
    """Every display, groups included, depth first."""
    found = []
    for display in displays or []:
        found.append(display)
        found += _displays(display.get("Displays", []))
    return found


def camera_image_display(camera: str, topic: str) -> dict:
    return {"Class": "rviz_default_plugins/Image", "Enabled": True, "Max Value": 1, "Median window": 5,
            "Min Value": 0, "Name": camera, "Normalize Range": False,
            "Topic": {"Depth": 1, "Durability Policy": "Volatile", "History Policy": "Keep Last",
                      "Reliability Policy": "Best Effort", "Value": topic},
            "Value": True}


def rviz_config_data(base: dict, namespace: str | None = None, cameras: Sequence[str] | None = None,
                     camera_prefix: str = DEFAULT_CAMERA_PREFIX, points_topic: str = DEFAULT_POINTS_TOPIC) -> dict:
    """The shipped RViz config (parsed) adapted: the node's topics under ``namespace``,
    one Image display per camera (group "Cameras") on ``<camera_prefix>/<camera>/image_raw``,
    the LiDAR display on ``points_topic``."""
    namespace = normalize_namespace(namespace)
    manager = base["Visualization Manager"]
    for display in _displays(manager.get("Displays", [])):
        topic = display.get("Topic")
        if isinstance(topic, dict) and str(topic.get("Value", "")).startswith(f"/{NODE_NAME}/") and namespace:
            topic["Value"] = namespace + topic["Value"]
        if display.get("Class") == "rviz_default_plugins/PointCloud2" and isinstance(topic, dict):
            topic["Value"] = points_topic
        if display.get("Name") == RVIZ_CAMERA_GROUP and cameras is not None:
            display["Displays"] = [camera_image_display(c, _topic(camera_prefix, c.lower(), "image_raw"))
                                   for c in getattr(cameras, "camera_names", cameras)]
    return base


def rviz_config_file(args: Mapping[str, str]) -> str:
    """The RViz config to open: ``rviz_config`` when given; the shipped one when the
    arguments change nothing in it; else an adapted copy in a temporary file."""
    if args.get("rviz_config"):
        return args["rviz_config"]
    shipped = rviz_config()
    namespace = normalize_namespace(args.get("namespace"))
    prefix = args.get("camera_prefix") or DEFAULT_CAMERA_PREFIX
    points = args.get("points_topic") or DEFAULT_POINTS_TOPIC
    rig = args.get("rig", "")
    checkpoint = args.get("checkpoint", "")
    if not (namespace or rig or checkpoint) and prefix == DEFAULT_CAMERA_PREFIX and points == DEFAULT_POINTS_TOPIC:
        return str(shipped)
    cameras = launch_rig(rig, checkpoint, args.get("params_file", "")).camera_names
    data = rviz_config_data(yaml.safe_load(shipped.read_text()), namespace, cameras, prefix, points)
    handle = tempfile.NamedTemporaryFile("w", prefix="sparsecomp_", suffix=".rviz", delete=False)
    with handle:
        yaml.safe_dump(data, handle, sort_keys=False)
    return handle.name
