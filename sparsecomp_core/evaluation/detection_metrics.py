"""nuScenes-style detection metrics in plain numpy (no torch, no devkit), so the
same code runs beside nuscenes-devkit for the cross-check test.

Follows the devkit's ``accumulate`` / ``calc_ap`` / ``calc_tp``: greedy matching
by descending score on 2D centre distance, precision over 101 recall points,
AP over recall >= 0.1 with precision above 0.1, TP errors (ATE, ASE, AOE,
AVE) at the 2 m threshold averaged over the matched recall range.

Boxes are rows [x, y, z, l, w, h, yaw, vx, vy, vz]. With ``with_attributes`` the
attribute error (AAE: 1 - attribute accuracy, undefined where the ground truth has
no attribute) is accumulated too, as the devkit does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DISTANCE_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
TP_THRESHOLD = 2.0
MIN_RECALL = 0.1
MIN_PRECISION = 0.1
RECALL_POINTS = 101
TP_METRICS = ("trans_err", "scale_err", "orient_err", "vel_err")
ATTRIBUTE_METRIC = "attr_err"


@dataclass
class Detection:
    sample: str
    box: np.ndarray            # [10]
    label: int
    score: float = 1.0
    occlusion: int = 0
    track_id: int = -1
    attribute: str = ""        # nuScenes attribute name ("" = none)


@dataclass
class MetricData:
    recall: np.ndarray
    precision: np.ndarray
    confidence: np.ndarray
    errors: dict[str, np.ndarray]

    @classmethod
    def no_predictions(cls) -> "MetricData":
        return cls(np.linspace(0, 1, RECALL_POINTS), np.zeros(RECALL_POINTS), np.zeros(RECALL_POINTS),
                   {m: np.ones(RECALL_POINTS) for m in (*TP_METRICS, ATTRIBUTE_METRIC)})

    @property
    def max_recall_index(self) -> int:
        nonzero = np.nonzero(self.confidence)[0]
        return int(nonzero[-1]) if len(nonzero) else 0


def cummean(values: np.ndarray) -> np.ndarray:
    if np.isnan(values).all():
        return np.ones(len(values))
    sums, counts = np.nancumsum(values.astype(float)), np.cumsum(~np.isnan(values))
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts != 0)


def yaw_difference(gt_yaw: float, pred_yaw: float, period: float) -> float:
    diff = (gt_yaw - pred_yaw + period / 2) % period - period / 2
    if diff > math.pi:
        diff -= 2 * math.pi
    return abs(diff)


def scale_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the two boxes' sizes when centred and aligned."""
    inter = np.prod(np.minimum(gt[3:6], pred[3:6]))
    return float(inter / (np.prod(gt[3:6]) + np.prod(pred[3:6]) - inter))


def accumulate(gts: dict[str, list[Detection]], preds: list[Detection], label: int, distance_threshold: float,
               yaw_period: float = 2 * math.pi, has_velocity: bool = True, has_orientation: bool = True,
               with_attributes: bool = False) -> MetricData:
    """Precision/recall and TP errors of one class at one distance threshold."""
    metrics = (*TP_METRICS, ATTRIBUTE_METRIC) if with_attributes else TP_METRICS
    num_gt = sum(1 for boxes in gts.values() for g in boxes if g.label == label)
    if num_gt == 0:
        return MetricData.no_predictions()
    candidates = [p for p in preds if p.label == label]
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].score)[::-1]
    taken: set[tuple[str, int]] = set()
    tp, fp, conf = [], [], []
    matched = {m: [] for m in metrics}
    matched_conf = []
    for index in order:
        pred = candidates[index]
        best, best_gt = math.inf, None
        for gt_index, gt in enumerate(gts.get(pred.sample, [])):
            if gt.label == label and (pred.sample, gt_index) not in taken:
                distance = float(np.linalg.norm(gt.box[:2] - pred.box[:2]))
                if distance < best:
                    best, best_gt = distance, gt_index
        if best < distance_threshold:
            taken.add((pred.sample, best_gt))
            gt = gts[pred.sample][best_gt]
            tp.append(1)
            fp.append(0)
            matched["trans_err"].append(best)
            matched["scale_err"].append(1 - scale_iou(gt.box, pred.box))
            matched["orient_err"].append(yaw_difference(gt.box[6], pred.box[6], yaw_period) if has_orientation else np.nan)
            matched["vel_err"].append(float(np.linalg.norm(gt.box[7:9] - pred.box[7:9])) if has_velocity else np.nan)
            if with_attributes:
                matched[ATTRIBUTE_METRIC].append(np.nan if not gt.attribute else 1.0 - float(gt.attribute == pred.attribute))
            matched_conf.append(pred.score)
        else:
            tp.append(0)
            fp.append(1)
        conf.append(pred.score)
    if not matched_conf:
        return MetricData.no_predictions()
    tp_sum, fp_sum = np.cumsum(tp).astype(float), np.cumsum(fp).astype(float)
    precision, recall = tp_sum / (fp_sum + tp_sum), tp_sum / num_gt
    recall_points = np.linspace(0, 1, RECALL_POINTS)
    precision = np.interp(recall_points, recall, precision, right=0)
    confidence = np.interp(recall_points, recall, np.array(conf), right=0)
    errors = {}
    for metric in metrics:
        running = cummean(np.array(matched[metric], dtype=float))
        errors[metric] = np.interp(confidence[::-1], np.array(matched_conf)[::-1], running[::-1])[::-1]
    return MetricData(recall_points, precision, confidence, errors)


def average_precision(data: MetricData) -> float:
    precision = np.copy(data.precision)[round(100 * MIN_RECALL) + 1:]
    precision -= MIN_PRECISION
    precision[precision < 0] = 0
    return float(np.mean(precision)) / (1.0 - MIN_PRECISION)


def tp_error(data: MetricData, metric: str) -> float:
    first, last = round(100 * MIN_RECALL) + 1, data.max_recall_index
    if last < first:
        return 1.0
    return float(np.mean(data.errors[metric][first:last + 1]))
