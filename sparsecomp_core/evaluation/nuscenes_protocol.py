"""The nuScenes detection protocol, as nuscenes-devkit's ``DetectionEval`` runs it
(``detection_cvpr_2019`` config), in plain numpy, and the nuScenes submission format.

- Submission (``results_out``): ``{"meta": {use_camera, use_lidar, use_radar, use_map,
  use_external}, "results": {sample_token: [box, ...]}}``, one entry per evaluated
  sample (empty lists included); a box is global-frame ``translation``, ``size`` (w, l,
  h), ``rotation`` (quaternion w, x, y, z), 2-D ``velocity``, ``detection_name``,
  ``detection_score``, ``attribute_name``.
- Protocol: the 10 detection classes with their ranges (50 m vehicles, 40 m
  pedestrians and cycles, 30 m cones and barriers; ego distance in x-y from the
  LIDAR_TOP ego pose, strict), ground truth from the categories by the devkit's
  mapping, ground truth without LiDAR or radar points removed, cycles inside bicycle
  racks removed, greedy centre-distance matching at 0.5/1/2/4 m, TP errors at 2 m,
  mAP over all 10 classes (a class without ground truth scores AP 0 and errors 1),
  NDS = (5 mAP + sum over mATE, mASE, mAOE, mAVE, mAAE of max(0, 1 - error)) / 10.
  Barriers have no velocity or attribute error and a 180 deg orientation period;
  traffic cones have no orientation, velocity or attribute error.

``test/test_nuscenes_protocol.py`` checks mAP, NDS and every error against the devkit
on the same submission file.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import jsonio
from ..data.nuscenes_layout import LIDAR_CHANNEL, NuScenesLayout, quaternion_wxyz, rotation_matrix
from .detection_metrics import (ATTRIBUTE_METRIC, DISTANCE_THRESHOLDS, TP_METRICS, TP_THRESHOLD, Detection, accumulate,
                                average_precision, tp_error)

DETECTION_NAMES = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian", "motorcycle", "bicycle",
                   "traffic_cone", "barrier")
CLASS_RANGE = {"car": 50.0, "truck": 50.0, "bus": 50.0, "trailer": 50.0, "construction_vehicle": 50.0,
               "pedestrian": 40.0, "motorcycle": 40.0, "bicycle": 40.0, "traffic_cone": 30.0, "barrier": 30.0}
ATTRIBUTE_NAMES = ("pedestrian.moving", "pedestrian.sitting_lying_down", "pedestrian.standing", "cycle.with_rider",
                   "cycle.without_rider", "vehicle.moving", "vehicle.parked", "vehicle.stopped")
MAX_BOXES_PER_SAMPLE = 500
MEAN_AP_WEIGHT = 5
ALL_TP_METRICS = (*TP_METRICS, ATTRIBUTE_METRIC)
METRIC_NAMES = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE", "attr_err": "mAAE"}
# The devkit's category -> detection class (nuscenes.eval.detection.utils.category_to_detection_name).
CATEGORY_TO_DETECTION = {
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus", "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle", "human.pedestrian.adult": "pedestrian", "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian", "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone", "vehicle.trailer": "trailer", "vehicle.truck": "truck"}
BIKE_RACK = "static_object.bicycle_rack"
# Our 8 classes (models.head.boxes.CLASS_NAMES) -> nuScenes detection classes. Our truck also
# stands for trailers and construction vehicles, our two cycle classes for bicycles and
# motorcycles: we predict "truck" and "bicycle" for them (trailer, construction_vehicle
# and motorcycle are never predicted). The cycle classes differ by the rider attribute.
OUR_CLASS_TO_DETECTION = {0: "car", 1: "truck", 2: "bus", 3: "pedestrian", 4: "bicycle", 5: "bicycle",
                          6: "barrier", 7: "traffic_cone"}
MOVING_SPEED = 0.2     # m/s; the usual threshold of nuScenes baselines for "moving" attributes


def predicted_attribute(label: int, velocity_xy: np.ndarray) -> str:
    """The nuScenes attribute of a detection of our class ``label``: vehicles and people
    moving / parked / standing by predicted speed, cycles with / without rider by class."""
    moving = float(np.hypot(*velocity_xy[:2])) > MOVING_SPEED
    if label in (0, 1, 2):
        return "vehicle.moving" if moving else "vehicle.parked"
    if label == 3:
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if label == 4:
        return "cycle.with_rider"
    if label == 5:
        return "cycle.without_rider"
    return ""


def yaw_matrix(yaw: float) -> np.ndarray:
    return np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])


def submission_box(sample_token: str, box: np.ndarray, label: int, score: float, ego2global: np.ndarray) -> dict:
    """One ego-frame detection (box [x, y, z, l, w, h, yaw, vx, vy, vz], our class) as a
    global-frame nuScenes result box."""
    box = np.asarray(box, dtype=np.float64)
    rotation = ego2global[:3, :3]
    centre = rotation @ box[:3] + ego2global[:3, 3]
    velocity = rotation @ box[7:10]
    return {"sample_token": sample_token, "translation": [float(v) for v in centre],
            "size": [float(box[4]), float(box[3]), float(box[5])],
            "rotation": quaternion_wxyz(rotation @ yaw_matrix(float(box[6]))),
            "velocity": [float(velocity[0]), float(velocity[1])], "detection_name": OUR_CLASS_TO_DETECTION[int(label)],
            "detection_score": float(score), "attribute_name": predicted_attribute(int(label), box[7:9])}


def submission(results: dict[str, list[dict]], use_camera: bool = True, use_lidar: bool = True,
               use_radar: bool = False, use_map: bool = False, use_external: bool = False) -> dict:
    """The submission dict: the devkit's ``meta`` block and the results by sample token."""
    meta = {"use_camera": bool(use_camera), "use_lidar": bool(use_lidar), "use_radar": bool(use_radar),
            "use_map": bool(use_map), "use_external": bool(use_external)}
    return {"meta": meta, "results": results}


def write_submission(path: str | Path, content: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(jsonio.dumps(content))
    return path


def load_submission(path: str | Path) -> dict:
    """A submission file, checked the way the devkit checks it (with messages naming the file)."""
    path = Path(path)
    try:
        content = jsonio.loads_strict(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"submission {path} does not exist") from None
    except ValueError as exc:
        raise ValueError(f"{path} is not a valid JSON submission: {exc}") from exc
    if not isinstance(content, dict) or not isinstance(content.get("results"), dict) or "meta" not in content:
        raise ValueError(f"{path} is not a nuScenes submission: expected {{'meta': ..., 'results': {{sample_token: "
                         "[boxes]}}}}")
    for token, boxes in content["results"].items():
        if len(boxes) > MAX_BOXES_PER_SAMPLE:
            raise ValueError(f"{path}: sample {token} has {len(boxes)} boxes (at most {MAX_BOXES_PER_SAMPLE} allowed)")
        for box in boxes:
            if box.get("detection_name") not in DETECTION_NAMES:
                raise ValueError(f"{path}: sample {token}: unknown detection_name {box.get('detection_name')!r}")
            if box.get("attribute_name", "") not in ("", *ATTRIBUTE_NAMES):
                raise ValueError(f"{path}: sample {token}: unknown attribute_name {box.get('attribute_name')!r}")
            for key, size in (("translation", 3), ("size", 3), ("rotation", 4), ("velocity", 2)):
                value = box.get(key)
                if not isinstance(value, list) or len(value) != size or any(v is None for v in value):
                    raise ValueError(f"{path}: sample {token}: {key} must be {size} numbers, got {value!r}")
            if not isinstance(box.get("detection_score"), (int, float)):
                raise ValueError(f"{path}: sample {token}: detection_score must be a number")
    return content


def quaternion_yaw(rotation_wxyz: list[float]) -> float:
    """Yaw of a quaternion as the devkit takes it: the heading of the rotated x axis."""
    q = np.asarray(rotation_wxyz, dtype=np.float64)
    matrix = rotation_matrix(list(q / np.linalg.norm(q)))
    return float(np.arctan2(matrix[1, 0], matrix[0, 0]))


def split_samples(layout: NuScenesLayout, scene_names: list[str] | None = None) -> list[str]:
    """Sample tokens of the given scenes (all scenes if None), in sample-table order (the devkit's order)."""
    scenes = layout.tables["scene"]
    wanted = None if scene_names is None else set(scene_names)
    return [token for token, sample in layout.tables["sample"].items()
            if wanted is None or scenes[sample["scene_token"]]["name"] in wanted]


class _Box:
    """A ground-truth or predicted box of the protocol (global frame)."""
    __slots__ = ("detection", "name", "num_pts", "ego_dist", "translation")

    def __init__(self, sample: str, translation, size, rotation, velocity, name: str, score: float, attribute: str,
                 num_pts: int):
        translation = [float(v) for v in translation]
        width, length, height = (float(v) for v in size)
        box = np.array([*translation, length, width, height, quaternion_yaw(rotation), float(velocity[0]),
                        float(velocity[1]), 0.0])
        self.detection = Detection(sample, box, DETECTION_NAMES.index(name), float(score), attribute=attribute)
        self.name, self.num_pts, self.translation = name, num_pts, translation
        self.ego_dist = math.inf


def _box_velocity(layout: NuScenesLayout, annotation: dict, max_time_diff: float = 1.5) -> np.ndarray:
    """nuScenes.box_velocity, to the operation (NaN where it cannot be estimated)."""
    table, samples = layout.tables["sample_annotation"], layout.tables["sample"]
    has_prev, has_next = annotation["prev"] != "", annotation["next"] != ""
    if not has_prev and not has_next:
        return np.array([np.nan, np.nan, np.nan])
    first = table[annotation["prev"]] if has_prev else annotation
    last = table[annotation["next"]] if has_next else annotation
    pos_diff = np.array(last["translation"]) - np.array(first["translation"])
    time_diff = 1e-6 * samples[last["sample_token"]]["timestamp"] - 1e-6 * samples[first["sample_token"]]["timestamp"]
    if has_next and has_prev:
        max_time_diff *= 2
    if time_diff > max_time_diff:
        return np.array([np.nan, np.nan, np.nan])
    return pos_diff / time_diff


def ground_truth(layout: NuScenesLayout, sample_tokens: list[str]) -> tuple[dict[str, list[_Box]], dict[str, list]]:
    """Ground-truth boxes of the detection classes per sample (the devkit's load_gt), and
    the bicycle racks per sample (for the bike-rack filter)."""
    attributes = {token: record["name"] for token, record in layout.tables["attribute"].items()}
    instances, categories = layout.tables["instance"], layout.tables["category"]
    gt, racks = {}, {}
    for token in sample_tokens:
        boxes, sample_racks = [], []
        for annotation in layout.annotations_by_sample.get(token, []):
            category = categories[instances[annotation["instance_token"]]["category_token"]]["name"]
            if category == BIKE_RACK:
                sample_racks.append(annotation)
            name = CATEGORY_TO_DETECTION.get(category)
            if name is None:
                continue
            tokens = annotation.get("attribute_tokens", [])
            if len(tokens) > 1:
                raise ValueError(f"annotation {annotation['token']} has {len(tokens)} attributes (at most one allowed)")
            boxes.append(_Box(token, annotation["translation"], annotation["size"], annotation["rotation"],
                              _box_velocity(layout, annotation)[:2], name, -1.0,
                              attributes[tokens[0]] if tokens else "",
                              annotation.get("num_lidar_pts", 0) + annotation.get("num_radar_pts", 0)))
        gt[token], racks[token] = boxes, sample_racks
    return gt, racks


def _in_box(annotation: dict, point: list[float]) -> bool:
    """points_in_box for one point and one annotation (inside or on the box)."""
    width, length, height = annotation["size"]
    local = rotation_matrix(annotation["rotation"]).T @ (np.asarray(point) - np.asarray(annotation["translation"]))
    return bool(abs(local[0]) <= length / 2 and abs(local[1]) <= width / 2 and abs(local[2]) <= height / 2)


def _filter(layout: NuScenesLayout, boxes: dict[str, list[_Box]], racks: dict[str, list]) -> tuple[dict, dict]:
    """add_center_dist + filter_eval_boxes: class range, boxes without points (ground
    truth: LiDAR + radar points; predictions carry -1), cycles in bicycle racks."""
    counts = {"total": 0, "after_distance": 0, "after_points": 0, "after_bike_racks": 0}
    kept = {}
    for token, sample_boxes in boxes.items():
        data = layout.sample_data_by_sample[token][LIDAR_CHANNEL]
        pose = layout.tables["ego_pose"][data["ego_pose_token"]]["translation"]
        for box in sample_boxes:
            offset = (box.translation[0] - pose[0], box.translation[1] - pose[1])
            box.ego_dist = float(np.sqrt(np.sum(np.array(offset) ** 2)))
        counts["total"] += len(sample_boxes)
        sample_boxes = [b for b in sample_boxes if b.ego_dist < CLASS_RANGE[b.name]]
        counts["after_distance"] += len(sample_boxes)
        sample_boxes = [b for b in sample_boxes if b.num_pts != 0]
        counts["after_points"] += len(sample_boxes)
        sample_boxes = [b for b in sample_boxes if b.name not in ("bicycle", "motorcycle")
                        or not any(_in_box(rack, b.translation) for rack in racks.get(token, []))]
        counts["after_bike_racks"] += len(sample_boxes)
        kept[token] = sample_boxes
    return kept, counts


def evaluate_submission(content: dict, layout: NuScenesLayout, sample_tokens: list[str]) -> dict:
    """The devkit's DetectionEval (detection_cvpr_2019) of ``content`` (a submission dict)
    on the samples ``sample_tokens`` of ``layout``: mAP, NDS, the five TP errors, per class."""
    results = content["results"]
    missing = [token for token in sample_tokens if token not in results]
    if missing:
        raise ValueError(f"the submission has no entry for {len(missing)} of the {len(sample_tokens)} evaluated "
                         f"samples (e.g. {missing[0]}); every sample needs one, an empty list if nothing was detected")
    predictions = {token: [_Box(token, b["translation"], b["size"], b["rotation"], b["velocity"], b["detection_name"],
                                b["detection_score"], b.get("attribute_name", ""), int(b.get("num_pts", -1)))
                           for b in results[token]] for token in sample_tokens}
    gt, racks = ground_truth(layout, sample_tokens)
    predictions, prediction_counts = _filter(layout, predictions, racks)
    gt, gt_counts = _filter(layout, gt, racks)
    gt_detections = {token: [b.detection for b in boxes] for token, boxes in gt.items()}
    pred_detections = [b.detection for token in sample_tokens for b in predictions[token]]
    per_class = {}
    for label, name in enumerate(DETECTION_NAMES):
        period = math.pi if name == "barrier" else 2 * math.pi
        aps = {str(th): average_precision(accumulate(gt_detections, pred_detections, label, th, period,
                                                     with_attributes=True)) for th in DISTANCE_THRESHOLDS}
        data = accumulate(gt_detections, pred_detections, label, TP_THRESHOLD, period, with_attributes=True)
        errors = {m: tp_error(data, m) for m in ALL_TP_METRICS}
        if name == "traffic_cone":
            errors.update(attr_err=math.nan, vel_err=math.nan, orient_err=math.nan)
        elif name == "barrier":
            errors.update(attr_err=math.nan, vel_err=math.nan)
        per_class[name] = {"ap": aps, "ap_mean": float(np.mean(list(aps.values()))), **errors,
                           "num_gt": sum(1 for boxes in gt.values() for b in boxes if b.name == name),
                           "num_pred": sum(1 for boxes in predictions.values() for b in boxes if b.name == name)}
    m_ap = float(np.mean([c["ap_mean"] for c in per_class.values()]))
    mean_errors = {m: float(np.nanmean([c[m] for c in per_class.values()])) for m in ALL_TP_METRICS}
    scores = {m: max(0.0, 1.0 - e) for m, e in mean_errors.items()}
    nds = (MEAN_AP_WEIGHT * m_ap + sum(scores.values())) / (MEAN_AP_WEIGHT + len(scores))
    return {"protocol": "nuscenes", "samples": len(sample_tokens), "mAP": m_ap, "NDS": nds,
            **{METRIC_NAMES[m]: e for m, e in mean_errors.items()}, "per_class": per_class,
            "classes_without_gt": [n for n, c in per_class.items() if c["num_gt"] == 0],
            "gt_filtering": gt_counts, "prediction_filtering": prediction_counts,
            "ignored_submission_samples": len(set(results) - set(sample_tokens)), "meta": content.get("meta", {})}
