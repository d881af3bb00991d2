"""Evaluation CLI: run a trained model over held-out sequences under a camera
condition and a cascade variant, and report detection, occlusion and id metrics.

    python -m sparsecomp_core.evaluation.evaluate --checkpoint models/tiny_default.pt \
        --data-root data/synthetic --version v1.0-synthetic-val \
        [--condition clean|crash1|crash2|frame_lost|dead] [--variant full|none|hold|no_hold|temporal|vae|planning|v1|no_lidar]
        [--protocol sparsecomp|nuscenes] [--split NAME] [--out report.json] [--results-out submission.json]
    python -m sparsecomp_core.evaluation.evaluate --results submission.json \
        --data-root data/synthetic --version v1.0-synthetic-val [--split NAME] [--out report.json]

Protocols: ``sparsecomp`` (default; metrics.py: our 8 classes where the model's BEV
grid reaches, NDS without the attribute term, occlusion accuracy, id switches; its
``tracking`` section, tracking_metrics.py: AMOTA, AMOTP, IDS as nuscenes-devkit's
tracking evaluation, and id stability at the node's score threshold) and
``nuscenes`` (nuscenes_protocol.py: the devkit's DetectionEval on the submission).
``--results-out`` writes the run's nuScenes detection submission; ``--results``
evaluates such a file instead of running a model.

Conditions (nuScenes-C style, plus a topic that dies):
- crash1 / crash2: the same 1 or 2 cameras are black for whole sequences;
- frame_lost: every camera's frame is dropped with probability 0.3 per frame;
- dead: 2 cameras stop delivering halfway through each sequence.
Black images are flagged as failed the way the node's health check does
(mean grey level below 8/255); missing images are failed and zero, except
that a camera whose frame is lost takes its previous delivered image when that
is at most ``hold_s`` (0.12 s: one frame at 10 Hz) old, placed where the
vehicle was when it was taken, as the node's frame assembly does
(``sync.hold_s``; docs/ros.md, "Frame hold"). ``--hold-s 0`` measures without.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import jsonio
from ..data.dataset import Frame, SequenceDataset, collate
from ..data.nuscenes_layout import NuScenesLayout
from ..data.splits import select_scenes
from ..models.model_config import ModelConfig
from ..models.detector import SparseCompDetector, load_detector
from . import nuscenes_protocol
from .detection_metrics import Detection
from .metrics import detection_report, tracking_report
from .tracking_metrics import OPERATING_SCORE_THRESHOLD, tracking_metrics

BLACK_LEVEL = 8.0


@dataclass
class Condition:
    name: str
    crash: list[str] = field(default_factory=list)   # cameras black for the whole sequence
    frame_lost_probability: float = 0.0
    lost_per_frame: int = 0                          # exactly this many cameras, drawn anew each frame, dropped
    dead: list[str] = field(default_factory=list)    # cameras that stop delivering halfway
    dead_from: float = 0.5


def standard_conditions(camera_names: list[str]) -> dict[str, Condition]:
    """The robustness protocol's conditions for a rig (first camera = the main front one;
    the second failed camera is a side camera)."""
    first, side = camera_names[0], camera_names[min(4, len(camera_names) - 1)]
    return {"clean": Condition("clean"), "crash1": Condition("crash1", crash=[first]),
            "crash2": Condition("crash2", crash=[first, side]),
            "frame_lost": Condition("frame_lost", frame_lost_probability=0.3),
            "dead": Condition("dead", dead=[first, side])}


def data_cameras(dataset: SequenceDataset) -> list[str]:
    """The camera channels of a data set (its sensor table), sorted."""
    sensors = dataset.layout.tables["sensor"].values()
    return sorted({s["channel"] for s in sensors if s.get("modality") == "camera"})


def check_rig_matches_data(dataset: SequenceDataset, model_label: str = "the model",
                           data_label: str | None = None) -> None:
    """Raise ValueError unless the data set's cameras are exactly the rig's (by name; the
    loader matches channels by name). A rig camera absent from the data would otherwise be
    masked as failed in every frame, and a data camera absent from the rig silently ignored:
    the run would look clean while measuring something else. A camera missing from single
    samples is a fault the evaluation keeps (a dead camera)."""
    rig, present = dataset.rig, data_cameras(dataset)
    missing = [name for name in rig.camera_names if name not in present]
    extra = [name for name in present if name not in rig.camera_names]
    if missing or extra:
        where = data_label or str(dataset.layout.root)
        raise ValueError(
            f"rig mismatch: {model_label} uses the cameras {rig.camera_names} (rig {rig.name!r}), but {where} has "
            f"the cameras {present}; missing from the data: {missing}, not used by the model: {extra}. Evaluate a "
            "checkpoint trained for this data's rig (or data recorded with the model's rig)")


def apply_condition(frame: Frame, condition: Condition, camera_names: list[str], index: int, length: int,
                    rng: np.random.Generator) -> Frame:
    drawn = np.array([rng.random() < condition.frame_lost_probability for _ in camera_names])
    if condition.lost_per_frame:        # (drawn after the per-camera draws: other conditions' streams are unchanged)
        drawn[rng.choice(len(camera_names), size=min(condition.lost_per_frame, len(camera_names)), replace=False)] = True
    for cam, name in enumerate(camera_names):
        lost = bool(drawn[cam])
        dead = name in condition.dead and index >= condition.dead_from * length
        if lost or dead:
            frame.images[cam] = 0
            frame.camera_present[cam] = False
        elif name in condition.crash:
            frame.images[cam] = 0                     # delivered, but black
    return frame


FRAME_HOLD_S = 0.12      # the node's sync.hold_s default


@dataclass
class DeliveredImage:
    """A camera's last delivered image: image [3, H, W], cam2ego [4, 4] (camera -> ego at
    its frame's time), that frame's ego2global [4, 4] float64 and time."""
    image: torch.Tensor
    cam2ego: torch.Tensor
    ego2global: torch.Tensor
    timestamp_us: int


def hold_lost_frames(frame: Frame, delivered: dict[int, DeliveredImage], hold_s: float) -> list[int]:
    """Cameras of ``frame`` without an image (camera_present False) take their last
    delivered image from ``delivered`` (camera index -> DeliveredImage, this sequence's,
    updated here with the cameras that delivered) when it is at most ``hold_s`` old, its
    cam2ego moved into this frame's ego: inv(ego2global_now) @ ego2global_then @ cam2ego.
    Returns the held cameras' indices."""
    held = []
    pose = frame.ego2global.to(torch.float64)
    for cam in range(len(frame.images)):
        if bool(frame.camera_present[cam]):
            delivered[cam] = DeliveredImage(frame.images[cam].clone(), frame.cam2ego[cam].clone(), pose,
                                            frame.timestamp_us)
            continue
        last = delivered.get(cam)
        if last is None or hold_s <= 0 or (frame.timestamp_us - last.timestamp_us) * 1e-6 > hold_s:
            continue
        frame.images[cam] = last.image
        frame.cam2ego[cam] = (torch.linalg.inv(pose) @ last.ego2global
                              @ last.cam2ego.to(torch.float64)).to(frame.cam2ego.dtype)
        frame.camera_present[cam] = True
        held.append(cam)
    return held


def health_mask(images: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """cam_mask [B, V]: missing, or black (what the node's health check flags)."""
    return ~present | (images.float().mean(dim=(2, 3, 4)) < BLACK_LEVEL)


VARIANTS = ("full", "full_vae", "none", "temporal", "vae", "planning", "v1", "v2", "hold", "no_hold", "no_lidar")


@contextlib.contextmanager
def cascade_variant(model: SparseCompDetector, variant: str):
    """Temporarily switch cascade levels / modes and the blind-zone hold for an
    evaluation variant: "none" runs neither completion nor the hold, "hold" the hold
    alone, "no_hold" the full cascade without it; every other variant keeps the hold
    as the model's config has it."""
    cascade = model.camera_branch.cascade
    saved = (cascade.temporal, cascade.vae, cascade.planning_guided, cascade.vae_use_at_inference,
             cascade.temporal.mode if cascade.temporal is not None else None, model.blind_zone_hold_cfg)
    if variant in ("none", "hold"):
        cascade.temporal = cascade.vae = cascade.planning_guided = None
        if variant == "none":
            model.blind_zone_hold_cfg = replace(model.blind_zone_hold_cfg, enabled=False)
    elif variant == "no_hold":
        model.blind_zone_hold_cfg = replace(model.blind_zone_hold_cfg, enabled=False)
    elif variant == "temporal":
        cascade.vae = cascade.planning_guided = None
    elif variant == "vae":
        cascade.temporal = cascade.planning_guided = None
        cascade.vae_use_at_inference = True
    elif variant == "planning":
        cascade.temporal = cascade.vae = None
    elif variant == "full_vae":
        cascade.vae_use_at_inference = True
    elif variant in ("v1", "v2"):
        if cascade.temporal is None:
            raise ValueError("this model has no temporal completion")
        cascade.temporal.mode = "global" if variant == "v1" else "neighbours"
    elif variant not in ("full", "no_lidar"):
        raise ValueError(f"unknown variant {variant!r}")
    try:
        yield
    finally:
        (cascade.temporal, cascade.vae, cascade.planning_guided, cascade.vae_use_at_inference, mode,
         model.blind_zone_hold_cfg) = saved
        if cascade.temporal is not None:
            cascade.temporal.mode = mode


EVAL_SCORE_THRESHOLD = 0.01      # AP ranks all boxes (as nuScenes does); the node's threshold is an operating point


@dataclass
class EvaluationRun:
    """What a model run over a data set produced, for every protocol: per-frame ground
    truth (ego frame, within the BEV grid) and detections, sequences for the tracking
    metrics, and the global-frame detections per sample token (the submission)."""
    condition: str
    variant: str
    gts: dict[str, list[Detection]] = field(default_factory=dict)
    preds: list[Detection] = field(default_factory=list)
    sequences: dict[str, list] = field(default_factory=dict)
    results: dict[str, list[dict]] = field(default_factory=dict)       # sample token -> nuScenes result boxes
    masked: int = 0
    held: int = 0                                                          # camera images held (lost frames)
    total_cameras: int = 0
    track_ids: dict[str, int] = field(default_factory=dict)               # instance token -> ground-truth track id
    ego_poses: dict[str, list[np.ndarray]] = field(default_factory=dict)   # sequence -> ego2global [4, 4] per frame
    timestamps: dict[str, list[int]] = field(default_factory=dict)         # sequence -> microseconds per frame

    def report(self, operating_threshold: float = OPERATING_SCORE_THRESHOLD) -> dict:
        """Our protocol: 8 classes within the model's BEV grid, occlusion and ids; the
        ``tracking`` section as nuscenes-devkit's tracking evaluation, plus id stability at
        the node's operating threshold."""
        report = detection_report(self.gts, self.preds)
        report.update(tracking_report(self.sequences))
        report["tracking"] = tracking_metrics(self.sequences, operating_threshold, self.ego_poses, self.timestamps)
        report.update(condition=self.condition, variant=self.variant, frames=len(self.gts),
                      masked_camera_fraction=self.masked / max(self.total_cameras, 1),
                      held_camera_fraction=self.held / max(self.total_cameras, 1))
        return report


def ground_truth_detections(sample: str, target: dict, track_ids: dict[str, int]) -> list[Detection]:
    """A frame's ground truth (target: boxes [M, 10], labels [M], occlusion [M], instance_tokens [M])
    as Detections whose track id is the object's nuScenes instance token, numbered in ``track_ids``
    (shared by the whole run, extended here), so an object keeps its track id in every frame."""
    for token in target["instance_tokens"]:
        track_ids.setdefault(token, len(track_ids))
    return [Detection(sample, b.numpy().astype(np.float64), int(l), 1.0, int(o), track_ids[t])
            for b, l, o, t in zip(target["boxes"], target["labels"], target["occlusion"], target["instance_tokens"])]


def run_model(model: SparseCompDetector, dataset: SequenceDataset, condition: Condition, variant: str = "full",
              seed: int = 0, progress: bool = True, max_frames: int | None = None,
              score_threshold: float = EVAL_SCORE_THRESHOLD, hold_s: float = FRAME_HOLD_S) -> EvaluationRun:
    """Stream every scene through the model under ``condition`` / ``variant``; lost frames
    held from the camera's previous one up to ``hold_s`` old (hold_lost_frames)."""
    check_rig_matches_data(dataset)
    device = next(model.parameters()).device
    ranking = replace(model.postprocess_cfg, score_threshold=score_threshold)
    rng = np.random.default_rng(seed)
    names = dataset.rig.camera_names
    run = EvaluationRun(condition.name, variant)
    frames_total = sum(dataset.scene_length(s) for s in range(len(dataset.scenes)))
    bar = tqdm(total=min(frames_total, max_frames or frames_total), desc=f"{condition.name}/{variant}",
               disable=not progress, dynamic_ncols=True)
    frames_run = 0
    with torch.no_grad(), cascade_variant(model, variant):
        for scene in range(len(dataset.scenes)):
            state = model.initial_state()
            delivered: dict[int, DeliveredImage] = {}
            length = dataset.scene_length(scene)
            for index in range(length):
                if max_frames is not None and frames_run >= max_frames:
                    break                       # (not bar.n: a disabled tqdm does not count)
                frame = apply_condition(dataset.load(scene, index), condition, names, index, length, rng)
                run.held += len(hold_lost_frames(frame, delivered, hold_s))
                inputs, targets = collate([frame], dataset.image_size, with_trajectory=False)
                target = targets[0]
                inside = model.grid.contains(target["boxes"][:, :2])     # evaluated where the model can see
                target["instance_tokens"] = [t for t, keep in zip(target["instance_tokens"], inside.tolist()) if keep]
                for key in ("boxes", "labels", "occlusion"):
                    target[key] = target[key][inside]
                inputs.cam_mask = health_mask(inputs.images, ~inputs.cam_mask)
                if variant == "no_lidar":
                    inputs.lidar_points = [torch.zeros(0, 4)]
                run.masked += int(inputs.cam_mask.sum())
                run.total_cameras += inputs.cam_mask.numel()
                detections, state = model.infer(inputs.to(device), state, ranking)
                sample = f"{frame.sequence_id}/{index}"
                run.gts[sample] = ground_truth_detections(sample, target, run.track_ids)
                det = detections[0]
                frame_preds = [Detection(sample, b.cpu().numpy().astype(np.float64), int(l), float(s), int(o), int(i))
                               for b, l, s, o, i in zip(det["boxes"], det["labels"], det["scores"], det["occlusion"],
                                                        det["ids"])]
                run.preds.extend(frame_preds)
                run.sequences.setdefault(frame.sequence_id, []).append((run.gts[sample], frame_preds))
                token = dataset.scenes[scene][1][index]
                ego2global = frame.ego2global.numpy().astype(np.float64)
                run.ego_poses.setdefault(frame.sequence_id, []).append(ego2global)
                run.timestamps.setdefault(frame.sequence_id, []).append(frame.timestamp_us)
                run.results[token] = [nuscenes_protocol.submission_box(token, p.box, p.label, p.score, ego2global)
                                      for p in frame_preds]
                frames_run += 1
                bar.update(1)
    bar.close()
    return run


def evaluate(model: SparseCompDetector, dataset: SequenceDataset, condition: Condition, variant: str = "full",
             seed: int = 0, progress: bool = True, max_frames: int | None = None,
             score_threshold: float = EVAL_SCORE_THRESHOLD, hold_s: float = FRAME_HOLD_S) -> dict:
    """Stream every scene through the model; return our protocol's metric report."""
    return run_model(model, dataset, condition, variant, seed, progress, max_frames, score_threshold,
                     hold_s).report()


def submission_meta(model: SparseCompDetector, model_cfg: ModelConfig, variant: str) -> dict:
    """The submission's meta block for this model and variant."""
    return {"use_camera": True, "use_lidar": model.lidar is not None and variant != "no_lidar", "use_radar": False,
            "use_map": False, "use_external": bool(model_cfg.backbone.pretrained)}


SUMMARY_KEYS = {"sparsecomp": ("condition", "variant", "frames", "mAP", "NDS", "mATE", "mASE", "mAOE", "mAVE",
                               "occlusion_accuracy", "id_switches", "masked_camera_fraction", "held_camera_fraction"),
                "nuscenes": ("protocol", "condition", "variant", "samples", "mAP", "NDS", "mATE", "mASE", "mAOE",
                             "mAVE", "mAAE", "classes_without_gt")}


def tracking_summary(tracking: dict) -> dict:
    """The printed part of the tracking section: the devkit's headline figures and the id
    stability at the operating threshold (cars' figures when the set has continuously visible cars)."""
    operating = tracking["operating_point"]
    summary = {k: tracking[k] for k in ("amota", "amotp", "ids", "mota", "recall")}
    summary.update({f"at_{operating['score_threshold']:g}": {
        "id_switches": operating["id_switches"], "id_switches_per_100_gt": operating["id_switches_per_100_gt"],
        "continuously_visible_cars": operating["continuously_visible"].get("car")}})
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Evaluate a trained sparsecomp model (or an existing nuScenes submission file).")
    parser.add_argument("--checkpoint", help="model to run (not with --results)")
    parser.add_argument("--results", help="evaluate this nuScenes submission JSON instead of running a model "
                                          "(implies --protocol nuscenes)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--version", default="v1.0-synthetic-val")
    parser.add_argument("--split", help="only the scenes of this split (default: every scene of the version): a "
                                        "nuScenes split of an official version (v1.0-trainval: train, val; v1.0-mini: "
                                        "mini_train, mini_val; v1.0-test: test), else a custom split of "
                                        "<data-root>/<version>/splits.json (generated sets have 'all')")
    parser.add_argument("--protocol", choices=["sparsecomp", "nuscenes"],
                        help="sparsecomp: our 8 classes within the BEV grid, NDS without attributes, occlusion and "
                             "ids (default when running a model); nuscenes: the devkit's DetectionEval protocol")
    parser.add_argument("--condition", default="clean", choices=["clean", "crash1", "crash2", "frame_lost", "dead"])
    parser.add_argument("--variant", default="full",
                        choices=list(VARIANTS))
    parser.add_argument("--hold-s", type=float, default=FRAME_HOLD_S,
                        help="a lost camera frame takes the camera's previous image up to this old, as the node's "
                             "sync.hold_s does (0: off)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="write the full metric report (JSON) here")
    parser.add_argument("--results-out", help="write the nuScenes detection submission (JSON) of the model run here")
    parser.add_argument("--operating-threshold", type=float, default=OPERATING_SCORE_THRESHOLD,
                        help="score threshold of the tracking section's id-stability figures (the node's "
                             "output.score_threshold)")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.results is None):
        parser.error("give either --checkpoint (run a model) or --results (evaluate a submission file)")
    if args.results is not None:
        if args.protocol == "sparsecomp":
            parser.error("--results is evaluated with --protocol nuscenes (a submission has nuScenes classes in the "
                         "global frame, no occlusion or ids, and no model grid to restrict it to)")
        if args.results_out:
            parser.error("--results-out needs a model run (--checkpoint)")
    protocol = args.protocol or ("nuscenes" if args.results else "sparsecomp")

    if args.results is not None:
        layout = NuScenesLayout(args.data_root, args.version)
        scene_names = select_scenes([scene["name"] for scene in layout.scenes()], args.data_root, args.version,
                                    args.split)
        content = nuscenes_protocol.load_submission(args.results)
        report = nuscenes_protocol.evaluate_submission(content, layout, nuscenes_protocol.split_samples(layout, scene_names))
        report.update(condition=None, variant=None, results=Path(args.results).name)
    else:
        model, model_cfg = load_detector(args.checkpoint, args.device)
        dataset = SequenceDataset(args.data_root, args.version, model_cfg.load_rig(), lidar_sweeps=model_cfg.lidar.sweeps,
                                  split=args.split)
        check_rig_matches_data(dataset, args.checkpoint, f"{args.data_root}/{args.version}")
        condition = standard_conditions(dataset.rig.camera_names)[args.condition]
        run = run_model(model, dataset, condition, args.variant, hold_s=args.hold_s)
        content = nuscenes_protocol.submission(run.results, **submission_meta(model, model_cfg, args.variant))
        if args.results_out:
            nuscenes_protocol.write_submission(args.results_out, content)
        if protocol == "nuscenes":
            samples = [t for t in nuscenes_protocol.split_samples(dataset.layout) if t in run.results]
            report = nuscenes_protocol.evaluate_submission(content, dataset.layout, samples)
            report.update(condition=condition.name, variant=args.variant,
                          masked_camera_fraction=run.masked / max(run.total_cameras, 1))
        else:
            report = run.report(args.operating_threshold)
        report["checkpoint"] = Path(args.checkpoint).name
    summary = {k: report[k] for k in SUMMARY_KEYS[protocol]}
    if "tracking" in report:
        summary["tracking"] = tracking_summary(report["tracking"])
    if protocol == "nuscenes":
        summary["AP"] = {name: round(c["ap_mean"], 4) for name, c in report["per_class"].items()}
    print(jsonio.dumps(summary, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)        # a fresh checkout has no outputs/
        Path(args.out).write_text(jsonio.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
