"""Tracking metrics: nuscenes-devkit's tracking evaluation (AMOTA, AMOTP, IDS, ...)
in plain numpy/scipy, and the id-stability figures at the node's operating threshold.

The devkit's algorithm (1.2.0: ``nuscenes/eval/tracking/loaders.create_tracks``,
``algo.TrackingEvaluation``, ``evaluate.TrackingEval.evaluate``; matching by
py-motmetrics 1.4.0 ``MOTAccumulator.update``), followed step by step:

1. every predicted box's score is replaced by its track's mean score (per scene);
2. gaps inside a track (ground truth and predictions) are filled by interpolating
   the boxes on either side;
3. per class and scene, CLEAR MOT matching frame by frame on 2-D centre distance
   (pairs at >= 2 m never match): a ground-truth object keeps the predicted id it
   was matched to while that id is within the distance; the rest are paired by
   the Hungarian method, and a pair whose object was last matched to another
   predicted id is an id switch (IDS); unpaired ground truth are misses (FN),
   unpaired predictions false positives (FP);
4. 40 score thresholds at the recalls 0.1 ... 1 (interpolated from the scores of
   the matches found without a threshold); per threshold
   MOTAR = max(0, 1 - (IDS + FP + FN - (1 - r) GT) / (r GT)) with r = TP / GT
   (TP: matches that are not switches) and MOTP = mean distance of the matches
   and switches;
5. per class AMOTA = mean MOTAR over the thresholds (a recall never reached
   counts 0), AMOTP = mean MOTP (unreached: 2 m); MOTA, IDS, FP, FN, TP and
   recall at the threshold of the best MOTA; over classes AMOTA, AMOTP, MOTA,
   MOTP and recall are means, IDS, FP, FN and TP sums (and GT, which the devkit
   averages).

Classes: our dynamic classes (car, truck, bus, person, non_motor,
riderless_non_motor), as the devkit tracks vehicles, pedestrians and cycles but
not barriers and cones. Ground truth is what the caller evaluates (our protocol:
every annotated object in the BEV grid); the devkit's class ranges and LiDAR
points filter belong to its data loading, not to this algorithm.

Operating point: what the node publishes, boxes at or above its score threshold
(0.3) with their own scores and no interpolation, matched the same way; reported
as id switches per 100 ground-truth object-frames and, for objects annotated in
every frame of their span (continuously visible) for at least
``MIN_CONTINUOUS_FRAMES``, the fraction of their frames they keep one predicted
id and the length of their id runs.
"""
from __future__ import annotations

from bisect import bisect
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..models.head.boxes import CLASS_NAMES, MOVING_CLASSES, VULNERABLE_CLASSES
from .detection_metrics import Detection

TRACKING_CLASSES = tuple(sorted(MOVING_CLASSES + VULNERABLE_CLASSES))
DISTANCE_THRESHOLD = 2.0          # metres, the devkit's dist_th_tp
MIN_RECALL = 0.1
NUM_THRESHOLDS = 40
WORST_AMOTA, WORST_AMOTP = 0.0, 2.0
OPERATING_SCORE_THRESHOLD = 0.3   # the perception node's output.score_threshold
MIN_CONTINUOUS_FRAMES = 10        # shorter tracks say little about id stability

Frames = list[tuple[list[Detection], list[Detection]]]     # per frame in time order: (ground truth, predictions)


@dataclass
class TrackBox:
    """A box as the tracking evaluation sees it: track id, class, BEV centre [2], score."""
    track_id: object
    label: int
    xy: np.ndarray
    score: float


@dataclass
class ClearMotCounts:
    """CLEAR MOT event counts: ground-truth boxes, matches (not switches), id switches,
    false positives, misses, and the summed distance of matches and switches."""
    objects: int = 0
    matches: int = 0
    switches: int = 0
    false_positives: int = 0
    misses: int = 0
    distance_sum: float = 0.0

    def add(self, other: "ClearMotCounts") -> None:
        for name in ("objects", "matches", "switches", "false_positives", "misses", "distance_sum"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def metrics(self) -> dict[str, float]:
        """The devkit's per-threshold figures: motar, mota (clipped at 0), motp, recall, ids, fp, fn, tp, gt."""
        detections = self.matches + self.switches
        recall_matches = self.matches / self.objects if self.objects else float("nan")
        errors = self.misses + self.switches + self.false_positives
        denominator = recall_matches * self.objects
        motar = max(0.0, 1.0 - (errors - (1 - recall_matches) * self.objects) / denominator) if denominator else float("nan")
        return {"motar": motar, "mota": max(0.0, 1.0 - errors / self.objects) if self.objects else float("nan"),
                "motp": self.distance_sum / detections if detections else float("nan"),
                "recall": detections / self.objects if self.objects else float("nan"),
                "ids": self.switches, "fp": self.false_positives, "fn": self.misses, "tp": self.matches,
                "gt": self.objects}


def _assignment(distances: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost pairs where NaN marks a forbidden pair (py-motmetrics' scipy solver:
    forbidden pairs get a cost larger than any set of allowed ones, then are dropped)."""
    valid = np.isfinite(distances)
    if not valid.any():
        return []
    costs = distances
    if not valid.all():
        large = 2 * min(distances.shape) * (np.abs(distances[valid]).max() + 1) + 1
        costs = np.where(valid, distances, large)
    rows, cols = linear_sum_assignment(costs)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if valid[r, c]]


class ClearMotAccumulator:
    """py-motmetrics' ``MOTAccumulator.update`` for one class and scene, keeping counts
    (and each frame's pairs) instead of an event table."""

    def __init__(self, distance_threshold: float = DISTANCE_THRESHOLD):
        self.distance_threshold = distance_threshold
        self.last_match: dict = {}           # ground-truth id -> predicted id it was last matched to
        self.counts = ClearMotCounts()

    def update(self, gt: list[TrackBox], pred: list[TrackBox]) -> tuple[dict, list[tuple[int, int]]]:
        """Match one frame. Returns ({ground-truth id: predicted id}, [(gt index, pred index)
        of the non-switch matches])."""
        self.counts.objects += len(gt)
        pairs: dict = {}
        plain_matches: list[tuple[int, int]] = []
        if gt and pred:
            distances = np.linalg.norm(np.stack([g.xy for g in gt])[:, None] - np.stack([p.xy for p in pred])[None],
                                       axis=-1)
            distances[distances >= self.distance_threshold] = np.nan
            gt_taken, pred_taken = np.zeros(len(gt), bool), np.zeros(len(pred), bool)
            # 1. An object keeps the predicted id of its last match while that id is within reach.
            for i, g in enumerate(gt):
                if g.track_id not in self.last_match:
                    continue
                same = [j for j, p in enumerate(pred) if not pred_taken[j] and p.track_id == self.last_match[g.track_id]]
                if same and np.isfinite(distances[i, same[0]]):
                    j = same[0]
                    gt_taken[i] = pred_taken[j] = True
                    self._record(g, pred[j], distances[i, j], switch=False, pairs=pairs)
                    plain_matches.append((i, j))
            # 2. The rest by minimum total distance; a pair against an earlier match is a switch.
            remaining = distances.copy()
            remaining[gt_taken, :] = np.nan
            remaining[:, pred_taken] = np.nan
            for i, j in _assignment(remaining):
                g, p = gt[i], pred[j]
                switch = g.track_id in self.last_match and self.last_match[g.track_id] != p.track_id
                gt_taken[i] = pred_taken[j] = True
                self._record(g, p, distances[i, j], switch, pairs)
                if not switch:
                    plain_matches.append((i, j))
            self.counts.misses += int((~gt_taken).sum())
            self.counts.false_positives += int((~pred_taken).sum())
        else:
            self.counts.misses += len(gt)
            self.counts.false_positives += len(pred)
        return pairs, plain_matches

    def _record(self, g: TrackBox, p: TrackBox, distance: float, switch: bool, pairs: dict) -> None:
        if switch:
            self.counts.switches += 1
        else:
            self.counts.matches += 1
        self.counts.distance_sum += float(distance)
        self.last_match[g.track_id] = p.track_id
        pairs[g.track_id] = p.track_id


def to_track_boxes(detections: list[Detection], ego2global: np.ndarray | None = None) -> list[TrackBox]:
    """Detections (ego frame) as TrackBoxes, centres moved to the global frame when the
    frame's ego pose ego2global [4, 4] is given (tracks are interpolated over time there)."""
    boxes = []
    for d in detections:
        centre = np.asarray(d.box[:3], dtype=np.float64)
        if ego2global is not None:
            centre = ego2global[:3, :3] @ centre + ego2global[:3, 3]
        boxes.append(TrackBox(d.track_id, int(d.label), centre[:2], float(d.score)))
    return boxes


def average_track_scores(frames: list[list[TrackBox]]) -> None:
    """Every box's score becomes its track's mean score over the scene (in place)."""
    scores: dict = {}
    for boxes in frames:
        for box in boxes:
            scores.setdefault(box.track_id, []).append(box.score)
    means = {track: float(np.mean(values)) for track, values in scores.items()}
    for boxes in frames:
        for box in boxes:
            box.score = means[box.track_id]


def interpolate_tracks(frames: list[list[TrackBox]], times: list[float] | None = None) -> None:
    """Fill each track's missing frames between its first and last one (in place), as the
    devkit's ``interpolate_tracks``: the added box takes the later box's id and class; its
    centre and score mix the two neighbours with the devkit's weights, (1 - w) left + w right
    with w = (t_right - t) / (t_right - t_left) (sic: the nearer neighbour weighs less; exact
    midway, the usual one-frame gap, is unaffected)."""
    times = list(range(len(frames))) if times is None else list(times)
    tracks: dict = {}
    for t, boxes in zip(times, frames):
        for box in boxes:
            tracks.setdefault(box.track_id, ([], []))
            tracks[box.track_id][0].append(t)
            tracks[box.track_id][1].append(box)
    for index, t in enumerate(times):
        for track_times, track_boxes in tracks.values():
            if not track_times[0] <= t <= track_times[-1] or t in track_times:
                continue
            right = bisect(track_times, t)
            left = right - 1
            weight = (track_times[right] - t) / (track_times[right] - track_times[left])
            a, b = track_boxes[left], track_boxes[right]
            frames[index].append(TrackBox(b.track_id, b.label, (1 - weight) * a.xy + weight * b.xy,
                                          (1 - weight) * a.score + weight * b.score))


def prepared_scene(frames: Frames, ego2global: list[np.ndarray] | None = None,
                   times: list[float] | None = None) -> tuple[list[list[TrackBox]], list[list[TrackBox]]]:
    """A scene's ground truth and predictions as the devkit prepares them (track-mean scores,
    gaps interpolated over ``times``, default the frame indices; in the global frame when the
    per-frame ego poses are given)."""
    poses = ego2global if ego2global is not None else [None] * len(frames)
    gt = [to_track_boxes(g, pose) for (g, _), pose in zip(frames, poses)]
    pred = [to_track_boxes(p, pose) for (_, p), pose in zip(frames, poses)]
    average_track_scores(pred)
    interpolate_tracks(gt, times)
    interpolate_tracks(pred, times)
    return gt, pred


def accumulate_class(scenes: list[tuple[list[list[TrackBox]], list[list[TrackBox]]]], label: int,
                     threshold: float | None) -> tuple[ClearMotCounts, list[float]]:
    """CLEAR MOT counts of one class over all scenes with the predictions scoring at least
    ``threshold`` (None: all), and the scores of the predictions matched without a switch."""
    total = ClearMotCounts()
    match_scores: list[float] = []
    for gt_frames, pred_frames in scenes:
        accumulator = ClearMotAccumulator()
        for gt, pred in zip(gt_frames, pred_frames):
            gt = [b for b in gt if b.label == label]
            pred = [b for b in pred if b.label == label and (threshold is None or b.score >= threshold)]
            if not gt and not pred:
                continue
            _, matches = accumulator.update(gt, pred)
            if threshold is None:
                matched_ids = {pred[j].track_id for _, j in matches}
                match_scores.extend(b.score for b in pred if b.track_id in matched_ids)
        total.add(accumulator.counts)
    return total, match_scores


def recall_thresholds(match_scores: list[float], gt_count: int) -> list[float]:
    """The devkit's NUM_THRESHOLDS score thresholds for the recalls MIN_RECALL ... 1,
    NaN where a recall is not reached; ordered from the highest recall to the lowest."""
    if not match_scores:
        return [float("nan")] * NUM_THRESHOLDS
    scores = np.sort(np.array(match_scores))[::-1]
    recall = np.arange(1, len(scores) + 1) / gt_count
    wanted = np.linspace(MIN_RECALL, 1, NUM_THRESHOLDS).round(12)
    thresholds = np.interp(wanted, recall, scores, right=0)
    thresholds[wanted > recall.max()] = np.nan
    return thresholds.tolist()[::-1]


PER_THRESHOLD_METRICS = ("motar", "mota", "motp", "recall", "ids", "fp", "fn", "tp", "gt")


def class_metrics(scenes: list[tuple[list[list[TrackBox]], list[list[TrackBox]]]], label: int) -> dict | None:
    """One class's AMOTA, AMOTP and, at the best-MOTA threshold, MOTA, MOTP, recall, IDS,
    FP, FN, TP and GT (None when the class has no ground truth)."""
    gt_count = sum(1 for gt_frames, _ in scenes for boxes in gt_frames for b in boxes if b.label == label)
    if gt_count == 0:
        return None
    _, scores = accumulate_class(scenes, label, None)
    thresholds = recall_thresholds(scores, gt_count)
    per_threshold: dict[float, dict] = {}
    for threshold in thresholds:
        if not np.isnan(threshold) and threshold not in per_threshold:
            per_threshold[threshold] = accumulate_class(scenes, label, threshold)[0].metrics()
    nan = float("nan")
    if per_threshold:
        rows = [per_threshold.get(t) if not np.isnan(t) else None for t in thresholds]
        values = {m: np.array([nan if row is None else row[m] for row in rows], dtype=float)
                  for m in PER_THRESHOLD_METRICS}
    else:     # no recall reached: the devkit's worst values
        values = {m: np.full(NUM_THRESHOLDS, nan) for m in PER_THRESHOLD_METRICS}
        values.update(motar=np.full(NUM_THRESHOLDS, WORST_AMOTA), motp=np.full(NUM_THRESHOLDS, WORST_AMOTP),
                      mota=np.zeros(NUM_THRESHOLDS), recall=np.zeros(NUM_THRESHOLDS), tp=np.zeros(NUM_THRESHOLDS),
                      fn=np.full(NUM_THRESHOLDS, float(gt_count)), gt=np.full(NUM_THRESHOLDS, float(gt_count)))
    best = int(np.nanargmax(values["mota"]))
    result = {"amota": float(np.where(np.isnan(values["motar"]), WORST_AMOTA, values["motar"]).mean()),
              "amotp": float(np.where(np.isnan(values["motp"]), WORST_AMOTP, values["motp"]).mean())}
    result.update({m: float(values[m][best]) for m in PER_THRESHOLD_METRICS if m != "motar"})
    result["threshold"] = float(thresholds[best]) if per_threshold else nan
    return result


SUMMED = ("ids", "fp", "fn", "tp", "gt")


def devkit_tracking_report(sequences: dict[str, Frames], classes: tuple[int, ...] = TRACKING_CLASSES,
                           ego2global: dict[str, list[np.ndarray]] | None = None,
                           times: dict[str, list[float]] | None = None) -> dict:
    """The devkit's tracking metrics: per class (by name) and over classes (AMOTA, AMOTP,
    MOTA, MOTP, recall: mean over classes with ground truth; IDS, FP, FN, TP, GT: sums).
    ego2global / times: per sequence, each frame's ego pose [4, 4] and time (see prepared_scene)."""
    scenes = [prepared_scene(frames, (ego2global or {}).get(name), (times or {}).get(name))
              for name, frames in sequences.items()]
    per_class = {CLASS_NAMES[label]: m for label in classes if (m := class_metrics(scenes, label)) is not None}
    overall: dict[str, float] = {}
    for name in ("amota", "amotp", "mota", "motp", "recall", *SUMMED):
        values = [m[name] for m in per_class.values()]
        if not values or all(np.isnan(v) for v in values):
            overall[name] = float("nan")
        else:
            overall[name] = float(np.nansum(values) if name in SUMMED else np.nanmean(values))
    return {**overall, "per_class": per_class}


@dataclass
class ContinuousTrack:
    """A ground-truth object annotated in every frame of its span: the predicted id it was
    matched to in each of those frames (None: missed)."""
    label: int
    matched_ids: list = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.matched_ids)

    def keep_fraction(self) -> float:
        """Fraction of its frames matched to its most frequent predicted id."""
        counts: dict = {}
        for track in self.matched_ids:
            if track is not None:
                counts[track] = counts.get(track, 0) + 1
        return max(counts.values(), default=0) / self.frames

    def id_runs(self) -> list[int]:
        """Lengths of the runs of consecutive frames matched to one predicted id (a miss or
        another id ends a run)."""
        runs, current, length = [], None, 0
        for track in self.matched_ids + [None]:
            if track is not None and track == current:
                length += 1
                continue
            if current is not None:
                runs.append(length)
            current, length = track, 1
        return runs


def operating_point_report(sequences: dict[str, Frames], score_threshold: float = OPERATING_SCORE_THRESHOLD,
                           classes: tuple[int, ...] = TRACKING_CLASSES,
                           min_continuous_frames: int = MIN_CONTINUOUS_FRAMES) -> dict:
    """Id stability of what the node publishes: predictions scoring at least
    ``score_threshold`` (their own scores, no interpolation), CLEAR MOT matched per class
    and scene. Returns IDS, GT object-frames, IDS per 100 GT object-frames (also IDS and
    GT object-frames per class) and, per class, the continuously visible objects (annotated in every frame of a span of at least
    ``min_continuous_frames``): how many, their median length, the median fraction of their
    frames they keep one predicted id, and the median length of their id runs."""
    switches = {label: 0 for label in classes}
    objects = {label: 0 for label in classes}
    continuous: dict[int, list[ContinuousTrack]] = {label: [] for label in classes}
    for frames in sequences.values():
        gt_frames = [to_track_boxes(g) for g, _ in frames]
        pred_frames = [[b for b in to_track_boxes(p) if b.score >= score_threshold] for _, p in frames]
        for label in classes:
            accumulator = ClearMotAccumulator()
            presence: dict = {}          # ground-truth id -> frame indices where it is annotated
            matched: list[dict] = []
            for index, (gt, pred) in enumerate(zip(gt_frames, pred_frames)):
                gt = [b for b in gt if b.label == label]
                pred = [b for b in pred if b.label == label]
                for b in gt:
                    presence.setdefault(b.track_id, []).append(index)
                pairs, _ = accumulator.update(gt, pred) if gt or pred else ({}, [])
                matched.append(pairs)
            switches[label] += accumulator.counts.switches
            objects[label] += accumulator.counts.objects
            for track_id, indices in presence.items():
                if len(indices) >= min_continuous_frames and indices[-1] - indices[0] + 1 == len(indices):
                    continuous[label].append(ContinuousTrack(label, [matched[i].get(track_id) for i in indices]))
    per_class = {}
    for label, tracks in continuous.items():
        if not tracks:
            continue
        runs = [run for track in tracks for run in track.id_runs()]
        per_class[CLASS_NAMES[label]] = {
            "objects": len(tracks), "median_frames": float(np.median([t.frames for t in tracks])),
            "median_id_keep_fraction": float(np.median([t.keep_fraction() for t in tracks])),
            "median_id_run_frames": float(np.median(runs)) if runs else 0.0}
    total_switches, total_objects = sum(switches.values()), sum(objects.values())
    return {"score_threshold": score_threshold, "id_switches": total_switches, "gt_object_frames": total_objects,
            "id_switches_per_100_gt": 100.0 * total_switches / total_objects if total_objects else float("nan"),
            "per_class": {CLASS_NAMES[label]: {"id_switches": switches[label], "gt_object_frames": objects[label]}
                          for label in classes if objects[label]},
            "min_continuous_frames": min_continuous_frames, "continuously_visible": per_class}


def tracking_metrics(sequences: dict[str, Frames], score_threshold: float = OPERATING_SCORE_THRESHOLD,
                     ego2global: dict[str, list[np.ndarray]] | None = None,
                     times: dict[str, list[float]] | None = None) -> dict:
    """The report's ``tracking`` section: the devkit's metrics and the operating point."""
    return {**devkit_tracking_report(sequences, ego2global=ego2global, times=times),
            "operating_point": operating_point_report(sequences, score_threshold)}
