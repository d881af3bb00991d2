"""Generate synthetic multi-sensor sequences in the nuScenes layout.

    python -m sparsecomp_core.data.synthetic.generate --out data/synthetic --rig default7 \
        --scenes 4 --frames 100 --seed 0 [--image-size 128 256] [--lidar-beams 32 --lidar-azimuths 1024] \
        [--camera-time-offsets-ms sweep | MS MS ...]

Each scene is a deterministic function of (seed, scene index): 10 Hz
keyframes with microsecond timestamps, all cameras of the rig, one LiDAR
(LIDAR_TOP), ego poses, and annotations of the objects within range with
visibility measured from the rendered rays (nuScenes visibility bins).

Camera timing: by default every camera fires at the LiDAR time. With
``--camera-time-offsets-ms`` each camera fires at its own time, as in nuScenes
(``sweep``: when the LiDAR's clockwise sweep passes the camera's optical axis,
``sweep_camera_offsets_us``; or one offset per rig camera): it is rendered at
that time, from the ego pose of that time, and its sample_data has its own
timestamp and ego_pose row. Annotations, the LiDAR and the sample keep the
LiDAR time, as in nuScenes.

The result opens in nuscenes-devkit as it is (``NuScenes(version, dataroot)``,
``get_sample_data`` on every channel, ``DetectionEval`` with ``eval_set="all"``):
one sensor row per channel, a map table with one record listing every log and
a small placeholder mask PNG, ``<version>/splits.json`` with the custom split
``all`` (every scene), nuScenes attributes on every annotation of a class that
has them, and ``num_lidar_pts`` counted the way the devkit counts points in a
box (``points_in_box``: inside or on the box, from the written point cloud).
"""
from __future__ import annotations

import argparse
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ...geometry import transform_boxes
from ...rig import RigConfig, load_rig
from ..nuscenes_layout import (GENERATED_CATEGORIES, LIDAR_CHANNEL, NuScenesWriter, quaternion_wxyz,
                               visibility_token)
from .sensors import GroundTexture, cast_lidar, render_camera
from .world import World, WorldConfig

FRAME_INTERVAL_US = 100_000
LIDAR_POSITION = (0.95, 0.0, 1.85)
ANNOTATION_RANGE_M = 60.0
SPLIT_NAME = "all"                        # the custom split (splits.json) holding every scene
# The nuScenes attributes (all written to the attribute table, in this order).
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
MOVING_SPEED = 0.2                        # m/s: above it an actor is "moving" (as nuScenes baselines threshold)
# nuScenes' LiDAR turns clockwise at 20 Hz and a camera is triggered when the sweep passes
# the centre of its view; a sweep ends (the LiDAR timestamp) at about 106 deg: in its logs
# CAM_BACK_LEFT (110 deg) fires ~0.5 ms and CAM_FRONT_LEFT (55 deg) ~43 ms before the LiDAR.
LIDAR_SWEEP_US = 50_000
SWEEP_END_HEADING_DEG = 106.0


def sweep_camera_offsets_us(rig: RigConfig) -> list[int]:
    """Per rig camera, when it fires relative to the LiDAR timestamp (microseconds, <= 0):
    when the clockwise sweep ending at SWEEP_END_HEADING_DEG passes its optical axis.
    For the nuScenes rig: FRONT_LEFT -43, FRONT -35, FRONT_RIGHT -28, BACK_RIGHT -20,
    BACK -10, BACK_LEFT -1 ms, as in nuScenes."""
    return [-round(LIDAR_SWEEP_US * ((camera.yaw_deg - SWEEP_END_HEADING_DEG) % 360.0) / 360.0)
            for camera in rig.cameras]


def camera_time_offsets_us(rig: RigConfig, offsets_ms: str | Sequence[float | str] | None) -> list[int]:
    """Per rig camera, its time offset from the LiDAR in microseconds: all 0 for None,
    ``sweep_camera_offsets_us`` for "sweep", else one value in milliseconds per camera."""
    if offsets_ms is None:
        return [0] * rig.num_cameras
    if isinstance(offsets_ms, str):
        offsets_ms = [offsets_ms]
    if list(offsets_ms) == ["sweep"]:
        return sweep_camera_offsets_us(rig)
    if len(offsets_ms) != rig.num_cameras:
        raise ValueError(f"camera time offsets: give 'sweep' or one value (ms) per camera of rig {rig.name!r} "
                         f"({rig.num_cameras}: {rig.camera_names}), got {list(offsets_ms)}")
    return [round(float(value) * 1000.0) for value in offsets_ms]


def date_of(timestamp_us: int) -> str:
    """The UTC date (YYYY-MM-DD) of a microsecond timestamp: a log's date_captured."""
    return datetime.fromtimestamp(timestamp_us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")


def yaw_matrix(yaw: float) -> np.ndarray:
    return np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])


def annotation_attribute(label: int, speed: float) -> str | None:
    """The nuScenes attribute of an actor of our class ``label`` moving at ``speed`` m/s
    (None for barriers and pillars, which have none). Generated vehicles either drive
    or are parked; people always walk."""
    if label in (0, 1, 2):
        return "vehicle.moving" if speed > MOVING_SPEED else "vehicle.parked"
    if label == 3:
        return "pedestrian.moving" if speed > MOVING_SPEED else "pedestrian.standing"
    if label in (4, 5):
        return GENERATED_CATEGORIES[label][1]
    return None


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Number of points [N, 3] inside or on each box [M, >= 7] (x, y, z, l, w, h, yaw; same
    frame): the devkit's ``points_in_box`` test (0 <= projection <= edge along each axis)."""
    counts = np.zeros(len(boxes), dtype=np.int64)
    for index, box in enumerate(boxes):
        reach = 0.5 * float(np.linalg.norm(box[3:6])) + 1e-3
        near = np.flatnonzero(np.abs(points[:, :3] - box[:3]).max(axis=1) <= reach)
        if len(near) == 0:
            continue
        offset = points[near, :3] - box[:3]
        cos, sin = math.cos(box[6]), math.sin(box[6])
        along = offset[:, 0] * cos + offset[:, 1] * sin
        across = -offset[:, 0] * sin + offset[:, 1] * cos
        inside = (np.abs(along) <= box[3] / 2) & (np.abs(across) <= box[4] / 2) & (np.abs(offset[:, 2]) <= box[5] / 2)
        counts[index] = int(inside.sum())
    return counts


def scene_world(seed: int, scene_index: int, frames: int) -> World:
    """The world of scene ``scene_index`` of a data set generated with ``seed``."""
    return World(seed * 100_003 + scene_index, WorldConfig(duration_s=frames / 10.0 + 1.0))


def generate_scene(writer: NuScenesWriter, root: Path, scene_index: int, seed: int, rig_name: str, frames: int,
                   image_size: tuple[int, int] | None, lidar_beams: int, lidar_azimuths: int,
                   sensors: dict[str, str] | None = None, camera_offsets_us: Sequence[int] | None = None) -> None:
    """One scene into ``writer``; ``sensors`` (channel -> sensor token) is shared by all
    scenes of a data set, so each channel has one sensor row, as in nuScenes.
    ``camera_offsets_us``: per rig camera, when it fires relative to the LiDAR (None: all at
    the LiDAR time); a camera off the LiDAR time gets its own timestamp and ego_pose row."""
    sensors = {} if sensors is None else sensors

    def sensor_token(channel: str, modality: str) -> str:
        if channel not in sensors:
            sensors[channel] = writer.add("sensor", channel=channel, modality=modality)
        return sensors[channel]

    rng = np.random.default_rng(seed * 100_003 + scene_index)
    world = scene_world(seed, scene_index, frames)
    ground = GroundTexture(world.road)
    rig = load_rig(rig_name)
    height, width = image_size or (rig.image_height, rig.image_width)
    calibration = rig.calibration(1, (height, width))
    labels = world.labels()
    tints = rng.uniform(0.75, 1.2, len(labels))
    name = f"scene-{seed:04d}-{scene_index:04d}"
    camera_offsets_us = list(camera_offsets_us or [0] * rig.num_cameras)
    base_us = 1_600_000_000_000_000 + (seed * 1000 + scene_index) * 100_000_000
    log = writer.add("log", logfile=name, vehicle="synthetic", date_captured=date_of(base_us), location="procedural")
    scene = writer.add("scene", log_token=log, name=name, description=f"synthetic, seed {seed}, scene {scene_index}",
                       nbr_samples=frames, first_sample_token="", last_sample_token="")

    calibrated = {}
    for cam, spec in enumerate(rig.cameras):
        sensor = sensor_token(spec.name, "camera")
        intrinsic = calibration.intrinsics[0, cam].double().numpy().copy()
        intrinsic[0, 2] -= 0.5                                      # written in the OpenCV convention
        intrinsic[1, 2] -= 0.5
        cam2ego = calibration.cam2ego[0, cam].double().numpy()
        calibrated[spec.name] = writer.add("calibrated_sensor", sensor_token=sensor, translation=cam2ego[:3, 3].tolist(),
                                           rotation=quaternion_wxyz(cam2ego[:3, :3]), camera_intrinsic=intrinsic.tolist())
    lidar_sensor = sensor_token(LIDAR_CHANNEL, "lidar")
    lidar2ego = np.eye(4)
    lidar2ego[:3, 3] = LIDAR_POSITION
    calibrated[LIDAR_CHANNEL] = writer.add("calibrated_sensor", sensor_token=lidar_sensor, translation=list(LIDAR_POSITION),
                                           rotation=[1.0, 0.0, 0.0, 0.0], camera_intrinsic=[])

    previous_sample, previous_data = "", {}
    last_annotation: dict[int, dict] = {}
    instances: dict[int, dict] = {}
    for frame in range(frames):
        t = frame * FRAME_INTERVAL_US / 1e6
        timestamp = base_us + frame * FRAME_INTERVAL_US
        ego2global = world.ego2global(t)
        ego_pose = writer.add("ego_pose", timestamp=timestamp, translation=ego2global[:3, 3].tolist(),
                              rotation=quaternion_wxyz(ego2global[:3, :3]))
        sample = writer.add("sample", timestamp=timestamp, scene_token=scene, prev=previous_sample, next="")
        if previous_sample:
            writer.tables["sample"][-2]["next"] = sample
        previous_sample = sample

        global_boxes = world.actor_boxes(t)
        ego_boxes = transform_boxes(global_boxes, np.linalg.inv(ego2global))
        near = np.flatnonzero(np.linalg.norm(ego_boxes[:, :2], axis=1) < 90.0)
        visible, reachable = np.zeros(len(near)), np.zeros(len(near))

        def add_data(channel: str, filename: str, fileformat: str, size: tuple[int, int], data_timestamp: int,
                     pose_token: str) -> None:
            token = writer.add("sample_data", sample_token=sample, ego_pose_token=pose_token,
                               calibrated_sensor_token=calibrated[channel], timestamp=data_timestamp, fileformat=fileformat,
                               is_key_frame=True, height=size[0], width=size[1], filename=filename,
                               prev=previous_data.get(channel, {}).get("token", ""), next="")
            if channel in previous_data:
                previous_data[channel]["next"] = token
            previous_data[channel] = writer.tables["sample_data"][-1]

        for cam, spec in enumerate(rig.cameras):
            camera_time, camera_pose, camera_boxes, camera_pose_token = timestamp, ego2global, ego_boxes[near], ego_pose
            if camera_offsets_us[cam]:        # fired off the LiDAR time: the world and the ego pose of its own time
                camera_time = timestamp + camera_offsets_us[cam]
                camera_t = t + camera_offsets_us[cam] / 1e6
                camera_pose = world.ego2global(camera_t)
                camera_boxes = transform_boxes(world.actor_boxes(camera_t)[near], np.linalg.inv(camera_pose))
                camera_pose_token = writer.add("ego_pose", timestamp=camera_time,
                                               translation=camera_pose[:3, 3].tolist(),
                                               rotation=quaternion_wxyz(camera_pose[:3, :3]))
            image, vis, reach = render_camera(camera_boxes, labels[near], tints[near],
                                              calibration.intrinsics[0, cam].double().numpy(),
                                              calibration.cam2ego[0, cam].double().numpy(), (height, width),
                                              camera_pose, ground, rng)
            visible += vis
            reachable += reach
            filename = f"samples/{spec.name}/{name}__{spec.name}__{camera_time}.jpg"
            (root / filename).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / filename, quality=92)
            add_data(spec.name, filename, "jpg", (height, width), camera_time, camera_pose_token)
        points, counts = cast_lidar(ego_boxes[near], labels[near], lidar2ego, ego2global, ground, rng,
                                    lidar_beams, lidar_azimuths)
        filename = f"samples/{LIDAR_CHANNEL}/{name}__{LIDAR_CHANNEL}__{timestamp}.pcd.bin"
        (root / filename).parent.mkdir(parents=True, exist_ok=True)
        points.tofile(root / filename)
        add_data(LIDAR_CHANNEL, filename, "pcd", (0, 0), timestamp, ego_pose)
        written = points[:, :3].astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
        in_box = points_in_boxes(written, ego_boxes[near])

        for local, actor in enumerate(near):
            in_range = np.linalg.norm(ego_boxes[actor, :2]) < ANNOTATION_RANGE_M
            if not in_range or (counts[local] == 0 and visible[local] == 0):
                continue
            label = int(labels[actor])
            category = GENERATED_CATEGORIES[label][0]
            actor_record = world.actors[actor]
            attribute = annotation_attribute(label, math.hypot(actor_record.speed, actor_record.lateral_speed))
            if actor not in instances:
                instances[actor] = {"token": writer.add("instance", category_token=writer.category_token(category),
                                                        nbr_annotations=0, first_annotation_token="",
                                                        last_annotation_token="")}
                instances[actor]["record"] = writer.tables["instance"][-1]
            box = global_boxes[actor]
            fraction = visible[local] / reachable[local] if reachable[local] else 0.0
            previous = last_annotation.get(actor)
            token = writer.add("sample_annotation", sample_token=sample, instance_token=instances[actor]["token"],
                               visibility_token=visibility_token(fraction),
                               attribute_tokens=[writer.attribute_token(attribute)] if attribute else [],
                               translation=box[:3].tolist(), size=[box[4], box[3], box[5]],
                               rotation=quaternion_wxyz(yaw_matrix(box[6])), prev=previous["token"] if previous else "",
                               next="", num_lidar_pts=int(in_box[local]), num_radar_pts=0)
            if previous:
                previous["next"] = token
            last_annotation[actor] = writer.tables["sample_annotation"][-1]
            record = instances[actor]["record"]
            record["nbr_annotations"] += 1
            record["first_annotation_token"] = record["first_annotation_token"] or token
            record["last_annotation_token"] = token
    scene_record = next(s for s in writer.tables["scene"] if s["token"] == scene)
    samples = [s for s in writer.tables["sample"] if s["scene_token"] == scene]
    scene_record["first_sample_token"], scene_record["last_sample_token"] = samples[0]["token"], samples[-1]["token"]


def generate(out: str | Path, version: str = "v1.0-synthetic", rig: str = "default7", scenes: int = 2,
             frames: int = 100, seed: int = 0, image_size: tuple[int, int] | None = None, lidar_beams: int = 32,
             lidar_azimuths: int = 1024, progress: bool = True,
             camera_time_offsets_ms: str | Sequence[float | str] | None = None) -> Path:
    """Write ``scenes`` scenes of ``frames`` frames under ``out``; returns the tables' folder.
    ``camera_time_offsets_ms``: None (every camera at the LiDAR time), "sweep" (nuScenes'
    firing order, ``sweep_camera_offsets_us``) or one offset in ms per rig camera."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    writer = NuScenesWriter(root, version, seed)
    for name in ATTRIBUTES:
        writer.attribute_token(name)
    sensors: dict[str, str] = {}
    offsets_us = camera_time_offsets_us(load_rig(rig), camera_time_offsets_ms)
    for index in tqdm(range(scenes), desc=f"generating {version}", disable=not progress):
        generate_scene(writer, root, index, seed, rig, frames, image_size, lidar_beams, lidar_azimuths, sensors,
                       offsets_us)
    write_map(writer, root)
    folder = writer.write()
    splits = {SPLIT_NAME: [scene["name"] for scene in writer.tables["scene"]]}
    (folder / "splits.json").write_text(json.dumps(splits, indent=0))
    return folder


def write_map(writer: NuScenesWriter, root: Path) -> None:
    """One map record listing every log (the devkit links each log to a map) and its
    mask: a small all-background placeholder PNG (nothing here uses a map)."""
    token = writer.token()
    filename = f"maps/{token}.png"
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(root / filename)
    writer.add("map", token=token, category="semantic_prior", filename=filename,
               log_tokens=[log["token"] for log in writer.tables["log"]])


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate synthetic sequences in the nuScenes layout.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--version", default="v1.0-synthetic")
    parser.add_argument("--rig", default="default7", help="config/rigs/<name>.yaml or a path")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per scene (10 Hz)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), default=None)
    parser.add_argument("--lidar-beams", type=int, default=32)
    parser.add_argument("--lidar-azimuths", type=int, default=1024)
    parser.add_argument("--camera-time-offsets-ms", nargs="+", metavar="MS", default=None,
                        help="when each camera fires relative to the LiDAR: 'sweep' (as nuScenes: when the LiDAR's "
                             "clockwise sweep passes its optical axis, 1-44 ms before the LiDAR timestamp) or one "
                             "value in ms per rig camera, in rig order (default: all at the LiDAR time)")
    args = parser.parse_args()
    try:
        camera_time_offsets_us(load_rig(args.rig), args.camera_time_offsets_ms)
    except ValueError as exc:
        parser.error(str(exc))
    folder = generate(args.out, args.version, args.rig, args.scenes, args.frames, args.seed,
                      tuple(args.image_size) if args.image_size else None, args.lidar_beams, args.lidar_azimuths,
                      camera_time_offsets_ms=args.camera_time_offsets_ms)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
