"""The nuScenes on-disk layout: JSON tables + sample files.

``NuScenesWriter`` writes it (used by the synthetic generator);
``NuScenesLayout`` reads it, for generated data and for real nuScenes-format
data alike: categories map to our 8 classes, visibility to occlusion,
annotations to ego-frame boxes with velocity (from neighbouring
annotations, as the devkit does).
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ..geometry import transform_boxes
from ..models.head.boxes import STATIC_CLASSES

LIDAR_CHANNEL = "LIDAR_TOP"          # the reference sensor of every sample

# Our class -> the nuScenes category (and attribute) the generator writes.
GENERATED_CATEGORIES = {0: ("vehicle.car", None), 1: ("vehicle.truck", None), 2: ("vehicle.bus.rigid", None),
                        3: ("human.pedestrian.adult", None), 4: ("vehicle.bicycle", "cycle.with_rider"),
                        5: ("vehicle.bicycle", "cycle.without_rider"), 6: ("movable_object.barrier", None),
                        7: ("movable_object.trafficcone", None)}
# nuScenes visibility tokens: "1" 0-40 %, "2" 40-60 %, "3" 60-80 %, "4" 80-100 % visible.
VISIBILITY_LEVELS = {"1": "v0-40", "2": "v40-60", "3": "v60-80", "4": "v80-100"}
VISIBILITY_TO_OCCLUSION = {"4": 0, "3": 1, "2": 2, "1": 3, "": 3}


def category_to_label(category: str, attributes: list[str]) -> int:
    """nuScenes category (+ attributes) -> our class index, or -1 (ignored)."""
    if category == "vehicle.car" or category == "vehicle.emergency.police":
        return 0
    if category in ("vehicle.truck", "vehicle.trailer", "vehicle.construction", "vehicle.emergency.ambulance"):
        return 1
    if category.startswith("vehicle.bus"):
        return 2
    if category.startswith("human.pedestrian"):
        return 3
    if category in ("vehicle.bicycle", "vehicle.motorcycle"):
        return 4 if "cycle.with_rider" in attributes else 5
    if category == "movable_object.barrier":
        return 6
    if category == "movable_object.trafficcone":
        return 7
    return -1


def visibility_token(fraction: float) -> str:
    return "1" if fraction < 0.4 else "2" if fraction < 0.6 else "3" if fraction < 0.8 else "4"


def quaternion_wxyz(rotation: np.ndarray) -> list[float]:
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return [float(w), float(x), float(y), float(z)]


def rotation_matrix(quaternion_wxyz_: list[float]) -> np.ndarray:
    w, x, y, z = quaternion_wxyz_
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def transform(translation: list[float], rotation: list[float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_matrix(rotation)
    matrix[:3, 3] = translation
    return matrix


class NuScenesWriter:
    """Accumulates nuScenes tables in memory and writes them as JSON."""

    TABLES = ("log", "scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "instance",
              "sample_annotation", "category", "attribute", "visibility", "map")

    def __init__(self, root: Path, version: str, seed: int):
        self.root, self.version = Path(root), version
        self._rng = np.random.default_rng(seed)
        self.tables: dict[str, list[dict]] = {name: [] for name in self.TABLES}
        self.categories: dict[str, str] = {}
        self.attributes: dict[str, str] = {}
        for token, level in VISIBILITY_LEVELS.items():
            self.tables["visibility"].append({"token": token, "level": level, "description": f"visibility {level}"})

    def token(self) -> str:
        """A 32-hex-digit token, deterministic for the writer's seed."""
        return "".join("%016x" % int(self._rng.integers(0, 2 ** 63)) for _ in range(2))

    def add(self, table: str, **record) -> str:
        record.setdefault("token", self.token())
        self.tables[table].append(record)
        return record["token"]

    def category_token(self, name: str) -> str:
        if name not in self.categories:
            self.categories[name] = self.add("category", name=name, description=name)
        return self.categories[name]

    def attribute_token(self, name: str) -> str:
        if name not in self.attributes:
            self.attributes[name] = self.add("attribute", name=name, description=name)
        return self.attributes[name]

    def write(self) -> Path:
        folder = self.root / self.version
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.tables.items():
            (folder / f"{name}.json").write_text(json.dumps(rows, indent=0))
        return folder


class NuScenesLayout:
    """Reads a nuScenes-layout data set (``<root>/<version>/*.json`` + files)."""

    def __init__(self, root: str | Path, version: str):
        self.root = Path(root)
        folder = self.root / version
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} does not exist (expected nuScenes tables there)")
        self.tables: dict[str, dict[str, dict]] = {}
        for name in ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "instance",
                     "sample_annotation", "category", "attribute"):
            rows = json.loads((folder / f"{name}.json").read_text())
            self.tables[name] = {row["token"]: row for row in rows}
        self.sample_data_by_sample: dict[str, dict[str, dict]] = defaultdict(dict)
        for record in self.tables["sample_data"].values():
            if record.get("is_key_frame", True):
                channel = self.tables["sensor"][self.tables["calibrated_sensor"][record["calibrated_sensor_token"]]
                                                ["sensor_token"]]["channel"]
                self.sample_data_by_sample[record["sample_token"]][channel] = record
        self.annotations_by_sample: dict[str, list[dict]] = defaultdict(list)
        for record in self.tables["sample_annotation"].values():
            self.annotations_by_sample[record["sample_token"]].append(record)

    def scenes(self) -> list[dict]:
        return sorted(self.tables["scene"].values(), key=lambda s: s["name"])

    def scene_samples(self, scene: dict) -> list[str]:
        tokens, token = [], scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = self.tables["sample"][token]["next"]
        return tokens

    def ego2global(self, sample_data: dict) -> np.ndarray:
        pose = self.tables["ego_pose"][sample_data["ego_pose_token"]]
        return transform(pose["translation"], pose["rotation"])

    def sensor2ego(self, sample_data: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """(sensor -> ego [4, 4], intrinsics [3, 3] in our pixel convention or None)."""
        calib = self.tables["calibrated_sensor"][sample_data["calibrated_sensor_token"]]
        intrinsics = None
        if calib.get("camera_intrinsic"):
            intrinsics = np.array(calib["camera_intrinsic"], dtype=np.float64)
            intrinsics[0, 2] += 0.5          # OpenCV: pixel centre at i; ours: at i + 0.5
            intrinsics[1, 2] += 0.5
        return transform(calib["translation"], calib["rotation"]), intrinsics

    def lidar_points(self, sample_data: dict) -> np.ndarray:
        """[N, 4] (x, y, z, intensity) in the ego frame."""
        raw = np.fromfile(self.root / sample_data["filename"], dtype=np.float32).reshape(-1, 5)
        lidar2ego, _ = self.sensor2ego(sample_data)
        xyz = raw[:, :3].astype(np.float64) @ lidar2ego[:3, :3].T + lidar2ego[:3, 3]
        return np.concatenate([xyz, raw[:, 3:4]], 1).astype(np.float32)

    def annotation_velocity(self, annotation: dict, max_time_diff: float = 1.5) -> np.ndarray:
        """Global velocity from the neighbouring annotations, NaN if none: the
        devkit's ``box_velocity`` rule (centred difference allowed over 2 x max_time_diff)."""
        table = self.tables["sample_annotation"]
        prev, nxt = annotation["prev"], annotation["next"]
        if not prev and not nxt:
            return np.full(3, np.nan)
        first = table[prev] if prev else annotation
        last = table[nxt] if nxt else annotation
        dt = (self.tables["sample"][last["sample_token"]]["timestamp"]
              - self.tables["sample"][first["sample_token"]]["timestamp"]) / 1e6
        if prev and nxt:
            max_time_diff *= 2
        if dt <= 0 or dt > max_time_diff:
            return np.full(3, np.nan)
        return (np.array(last["translation"]) - np.array(first["translation"])) / dt

    def boxes(self, sample_token: str, ego2global: np.ndarray) -> dict[str, np.ndarray]:
        """Ground truth of a sample in the ego frame: boxes [M, 10] (x, y, z, l, w, h, yaw,
        vx, vy, vz), labels [M], occlusion [M], instance tokens [M], num_lidar_pts [M];
        ignored categories dropped. Velocity is NaN where it is unknown (the devkit's rule: an
        annotation without neighbours, or too far apart in time), never 0; barriers and
        pillars have velocity 0 by definition."""
        rows, labels, occlusion, instances, lidar_pts = [], [], [], [], []
        for annotation in self.annotations_by_sample.get(sample_token, []):
            instance = self.tables["instance"][annotation["instance_token"]]
            category = self.tables["category"][instance["category_token"]]["name"]
            attributes = [self.tables["attribute"][a]["name"] for a in annotation.get("attribute_tokens", [])]
            label = category_to_label(category, attributes)
            if label < 0:
                continue
            yaw = Rotation.from_matrix(rotation_matrix(annotation["rotation"])).as_euler("zyx")[0]
            width, length, height = annotation["size"]
            velocity = self.annotation_velocity(annotation)            # NaN = unknown, kept as such
            rows.append([*annotation["translation"], length, width, height, yaw, *velocity])
            labels.append(label)
            occlusion.append(VISIBILITY_TO_OCCLUSION.get(annotation.get("visibility_token", ""), 3))
            instances.append(annotation["instance_token"])
            lidar_pts.append(annotation.get("num_lidar_pts", 0))
        boxes = transform_boxes(np.array(rows, dtype=np.float64).reshape(-1, 10), np.linalg.inv(ego2global))
        boxes[:, 6] = (boxes[:, 6] + math.pi) % (2 * math.pi) - math.pi
        boxes[np.isin(labels, STATIC_CLASSES), 7:10] = 0.0         # barriers and pillars do not move
        return {"boxes": boxes.astype(np.float32), "labels": np.array(labels, dtype=np.int64),
                "occlusion": np.array(occlusion, dtype=np.int64), "instance_tokens": np.array(instances),
                "num_lidar_pts": np.array(lidar_pts, dtype=np.int64)}
