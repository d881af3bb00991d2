"""The metric report: per-class AP at 0.5/1/2/4 m, mAP, ATE/ASE/AOE/AVE, NDS,
occlusion-state accuracy and id switches."""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..models.head.boxes import CLASS_NAMES, STATIC_CLASSES
from .detection_metrics import (DISTANCE_THRESHOLDS, TP_METRICS, TP_THRESHOLD, Detection, accumulate,
                                average_precision, tp_error)

# Orientation: barriers are symmetric under 180 deg, pillars have no heading.
YAW_PERIOD = {6: math.pi}
NO_ORIENTATION = {7}


def detection_report(gts: dict[str, list[Detection]], preds: list[Detection]) -> dict:
    """Per class: AP at each threshold and TP errors at 2 m; mean over classes
    that have ground truth. NDS = (5 mAP + sum over the 4 TP metrics of
    (1 - min(1, error))) / 9 (nuScenes' formula without its attribute term)."""
    present = sorted({g.label for boxes in gts.values() for g in boxes})
    per_class = {}
    for label in present:
        period = YAW_PERIOD.get(label, 2 * math.pi)
        has_velocity, has_orientation = label not in STATIC_CLASSES, label not in NO_ORIENTATION
        aps = {th: average_precision(accumulate(gts, preds, label, th, period, has_velocity, has_orientation))
               for th in DISTANCE_THRESHOLDS}
        data = accumulate(gts, preds, label, TP_THRESHOLD, period, has_velocity, has_orientation)
        errors = {m: tp_error(data, m) for m in TP_METRICS}
        if not has_velocity:
            errors["vel_err"] = float("nan")
        if not has_orientation:
            errors["orient_err"] = float("nan")
        per_class[CLASS_NAMES[label]] = {"ap": {str(k): v for k, v in aps.items()}, "ap_mean": float(np.mean(list(aps.values()))),
                                         **errors, "num_gt": sum(1 for b in gts.values() for g in b if g.label == label)}
    if not per_class:
        return {"mAP": 0.0, "NDS": 0.0, "per_class": {}}
    m_ap = float(np.mean([c["ap_mean"] for c in per_class.values()]))
    mean_errors = {m: float(np.nanmean([c[m] for c in per_class.values()])) if any(not math.isnan(c[m]) for c in per_class.values())
                   else 1.0 for m in TP_METRICS}
    nds = (5 * m_ap + sum(1 - min(1.0, e) for e in mean_errors.values())) / (5 + len(TP_METRICS))
    names = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE"}
    return {"mAP": m_ap, "NDS": nds, **{names[m]: v for m, v in mean_errors.items()}, "per_class": per_class}


def frame_matches(gt: list[Detection], pred: list[Detection], threshold: float = TP_THRESHOLD) -> list[tuple[int, int]]:
    """One-to-one (gt index, pred index) pairs of the same class within the
    threshold (Hungarian on centre distance)."""
    if not gt or not pred:
        return []
    cost = np.full((len(gt), len(pred)), 1e6)
    for i, g in enumerate(gt):
        for j, p in enumerate(pred):
            distance = float(np.linalg.norm(g.box[:2] - p.box[:2]))
            if g.label == p.label and distance < threshold:
                cost[i, j] = distance
    rows, cols = linear_sum_assignment(cost)
    return [(r, c) for r, c in zip(rows, cols) if cost[r, c] < 1e6]


def tracking_report(sequences: dict[str, list[tuple[list[Detection], list[Detection]]]]) -> dict:
    """Occlusion-state accuracy over matched pairs and id switches (a ground-truth
    track matched to a different predicted id than at its previous match)."""
    correct = total = switches = tracks = 0
    for frames in sequences.values():
        last_id: dict[int, int] = {}
        seen_tracks = set()
        for gt, pred in frames:
            for g_index, p_index in frame_matches(gt, pred):
                g, p = gt[g_index], pred[p_index]
                correct += int(g.occlusion == p.occlusion)
                total += 1
                seen_tracks.add(g.track_id)
                if g.track_id in last_id and last_id[g.track_id] != p.track_id:
                    switches += 1
                last_id[g.track_id] = p.track_id
        tracks += len(seen_tracks)
    return {"occlusion_accuracy": correct / total if total else 0.0, "matched_pairs": total,
            "id_switches": switches, "gt_tracks": tracks, "id_switches_per_track": switches / tracks if tracks else 0.0}
