"""Object-id rules compared on one model run: the id association replayed offline.

Ids never feed back into the network (they live only in the query queue, beside
the embeddings it does use), so one pass of the model over a data set, with every
query's box, class and score recorded, lets the association (head/track_ids.py)
be replayed under other rules in seconds, with exactly the ids the model would
give. The replay of the model's own rule must reproduce the model's ids (checked).

    python bench/track_id_replay.py --checkpoint models/tiny_default.pt --data-root data/synthetic \
        --version v1.0-synthetic-val [--recording outputs/track_id_recording.pt] [--name track_id_replay] \
        [--condition clean|crash1|crash2|frame_lost|dead]

Rules: ``take`` (outputs at or above it inherit an id), ``hand_on`` (kept queries at
or above it can pass theirs on; none: every kept query, the rule before issue 14's
fix) and the association gate. Prints a Markdown table of the tracking section's
figures (evaluation/tracking_metrics.py) per rule and writes
bench/results/track_id_replay-<cpu|gpu>.json. The recording (one model run,
about 5 minutes on 2 CPU cores for 180 frames) is reused when the file exists.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, markdown_table, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.detection_metrics import Detection  # noqa: E402
from sparsecomp_core.evaluation.evaluate import run_model, standard_conditions  # noqa: E402
from sparsecomp_core.evaluation.tracking_metrics import tracking_metrics  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402
from sparsecomp_core.models.head.dynamic_head import DynamicHead  # noqa: E402
from sparsecomp_core.models.head.query_queue import (KeptQueries, QueryQueue, compensated_history,  # noqa: E402
                                                     select_queries, zero_static_velocities)
from sparsecomp_core.models.head.track_ids import associate_ids, inheritable_past  # noqa: E402

RULES = [  # name, take, hand_on, gate (m)
    ("every kept query hands on its id (before the fix)", 0.1, None, 2.0),
    ("confident kept queries only (shipped: 0.1)", 0.1, 0.1, 2.0),
    ("ids from 0.2", 0.2, 0.2, 2.0),
    ("ids from the node's threshold 0.3", 0.3, 0.3, 2.0),
    ("ids from 0.3, gate 3 m", 0.3, 0.3, 3.0),
    ("ids from 0.3, gate 4 m", 0.3, 0.3, 4.0),
    ("ids from 0.25, gate 3 m", 0.25, 0.25, 3.0),
    ("take from 0.2, hand on from 0.3, gate 3 m", 0.2, 0.3, 3.0),
]


def detection_record(d: Detection) -> dict:
    return {"sample": d.sample, "box": torch.from_numpy(d.box), "label": d.label, "score": d.score,
            "occlusion": d.occlusion, "track_id": d.track_id}


def record(checkpoint: str, data_root: str, version: str, condition: str = "clean") -> dict:
    """One model run under ``condition`` (evaluate.standard_conditions): per frame every
    query's centre [Q, 3], velocity [Q, 3], label, score and id, time and ego pose; the
    run's ground truth and detections per sequence."""
    model, cfg = load_detector(checkpoint)
    model.track_filter_cfg = replace(model.track_filter_cfg, enabled=False)    # the head's own velocities
    frames: list[dict] = []
    forward = DynamicHead.forward

    def recording_forward(self, tokens, ego2global, timestamp_us, queue, sequence_ids=None):
        result = forward(self, tokens, ego2global, timestamp_us, queue, sequence_ids)
        scores, labels = torch.sigmoid(result["cls_logits"][-1]).max(dim=-1)
        boxes = result["boxes"][-1][0].detach()
        frames.append({"centres": boxes[:, :3].clone(), "velocities": boxes[:, 7:10].clone(), "labels": labels[0].clone(),
                       "scores": scores[0].detach().clone(), "ids": result["ids"][0].clone(),
                       "timestamp_us": int(timestamp_us[0]), "ego2global": ego2global[0].detach().double().clone()})
        return result
    DynamicHead.forward = recording_forward
    try:
        dataset = SequenceDataset(data_root, version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
        run = run_model(model, dataset, standard_conditions(dataset.rig.camera_names)[condition])
    finally:
        DynamicHead.forward = forward
    head = model.head
    return {"frames": frames, "topk": head.topk, "history_frames": head.history_frames, "gate": head.id_gate_m,
            "min_score": head.id_min_score,
            "sequences": {name: [([detection_record(g) for g in gt], [detection_record(p) for p in preds])
                                 for gt, preds in seq] for name, seq in run.sequences.items()},
            "ego_poses": {name: [torch.from_numpy(p) for p in poses] for name, poses in run.ego_poses.items()},
            "timestamps": run.timestamps}


def as_detection(d: dict, track_id: int | None = None) -> Detection:
    return Detection(d["sample"], d["box"].numpy(), d["label"], d["score"], d["occlusion"],
                     d["track_id"] if track_id is None else track_id)


def replay(recording: dict, take: float, hand_on: float | None, gate: float) -> dict:
    """The run's sequences with the detections' ids from associating under this rule (the
    queue kept as DynamicHead.update_queue keeps it at inference: top-k by score)."""
    frames, topk = iter(recording["frames"]), recording["topk"]
    sequences = {}
    for name, seq in recording["sequences"].items():
        queue, replayed = QueryQueue(), []
        for gt, preds in seq:
            f = next(frames)
            timestamp, pose = torch.tensor([f["timestamp_us"]]), f["ego2global"][None]
            queue = queue.checked_for_scene_change(timestamp, [name])
            history = compensated_history(queue, pose, timestamp)
            past = (history.per_frame() if history is not None else []) if hand_on is None else \
                inheritable_past(queue, history, hand_on)
            ids, next_id = associate_ids(f["centres"][None], f["labels"][None], f["scores"][None], past, queue.next_id,
                                         gate, take)
            index = select_queries(f["scores"][None], topk, False, 0)[0]
            labels = f["labels"][index][None]
            kept = KeptQueries(torch.zeros(1, len(index), 1), f["centres"][index][None],
                               zero_static_velocities(f["velocities"][index][None], labels), labels,
                               f["scores"][index][None], ids[:, index], timestamp, pose, torch.ones(1, dtype=torch.bool))
            queue = queue.pushed(kept, [name], recording["history_frames"], next_id)
            query_of = {int(i): q for q, i in enumerate(f["ids"].tolist())}
            replayed.append(([as_detection(g) for g in gt],
                             [as_detection(p, int(ids[0, query_of[p["track_id"]]])) for p in preds]))
        sequences[name] = replayed
    return sequences


def figures(recording: dict, sequences: dict) -> dict:
    poses = {name: [p.numpy() for p in value] for name, value in recording["ego_poses"].items()}
    tracking = tracking_metrics(sequences, 0.3, poses, recording["timestamps"])
    operating = tracking["operating_point"]
    cars = operating["continuously_visible"].get("car", {})
    return {"AMOTA": tracking["amota"], "AMOTP": tracking["amotp"], "IDS": tracking["ids"],
            "IDS_at_0.3": operating["id_switches"], "IDS_per_100_gt_at_0.3": operating["id_switches_per_100_gt"],
            "car_IDS_at_0.3": operating["per_class"].get("car", {}).get("id_switches"),
            "cars_median_id_keep_fraction": cars.get("median_id_keep_fraction"),
            "cars_median_id_run_frames": cars.get("median_id_run_frames"), "continuous_cars": cars.get("objects")}


def recording_arguments(doc: str, name: str):
    """The parsed arguments of a script that replays a recording: evaluation_parser's and --recording."""
    parser = evaluation_parser(doc, name, device=False)
    parser.add_argument("--recording", default="outputs/track_id_recording.pt",
                        help="the recorded model run (written when absent, reused when present)")
    parser.add_argument("--condition", default="clean", choices=["clean", "crash1", "crash2", "frame_lost", "dead"],
                        help="the cameras' condition while recording (evaluate.standard_conditions)")
    return parser.parse_args()


def load_or_record(args) -> dict:
    """The recording at ``args.recording``; made first (one model run) when the file does not exist."""
    path = Path(args.recording)
    if path.exists():
        return torch.load(path, weights_only=True)
    recording = record(args.checkpoint, args.data_root, args.version, args.condition)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(recording, path)
    return recording


def main() -> None:
    args = recording_arguments(__doc__, "track_id_replay")
    recording = load_or_record(args)
    own = replay(recording, recording["min_score"], recording["min_score"], recording["gate"])
    recorded_ids = [p["track_id"] for seq in recording["sequences"].values() for _, preds in seq for p in preds]
    replayed_ids = [p.track_id for seq in own.values() for _, preds in seq for p in preds]
    if not np.array_equal(recorded_ids, replayed_ids):
        raise RuntimeError("the replay of the model's own rule does not reproduce its ids: the replay no longer "
                           "follows DynamicHead (update_queue / track_ids)")
    rows = []
    for name, take, hand_on, gate in RULES:
        rows.append({"rule": name, "take": take, "hand_on": hand_on, "gate_m": gate,
                     **figures(recording, replay(recording, take, hand_on, gate))})
    print(markdown_table(rows, "rule", hidden=("take", "hand_on", "gate_m")))
    write_result(args.name, {"checkpoint": Path(args.checkpoint).name, "data": f"{args.data_root}/{args.version}",
                                     "rules": rows})


if __name__ == "__main__":
    main()
