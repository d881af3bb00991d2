"""What a camera + LiDAR model's branches give for a missing modality, in training and at inference.

A frame with every camera failed gives the camera BEV of the view transform's
output block applied to zeros; a frame without LiDAR, the BEV backbone applied
to an empty map. Both end in batch norms, which normalise with the batch's
statistics in training and with running statistics at inference, so what a
model learns to read as "no cameras" / "no LiDAR" in a training batch can be
another input at inference. This runs held-out frames through both branches
with the modality removed from one sample of a batch of two, in three
settings: inference (eval mode), a training batch whose other sample is whole,
and a training batch whose other sample lacks the modality too; and reports the
RMS of the missing sample's BEV and the RMS of its differences between the
settings, beside the RMS of a whole sample's BEV.

    python bench/missing_modality_bev.py --checkpoint models/tiny_default.pt [--frames 8]

Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset, collate  # noqa: E402
from sparsecomp_core.models.detector import SparseCompDetector, load_detector  # noqa: E402


def rms(x: torch.Tensor) -> float:
    return float(x.float().pow(2).mean().sqrt())


def branch_outputs(model: SparseCompDetector, whole, modality: str) -> dict[str, torch.Tensor]:
    """The missing sample's BEV [C, H, W] in each setting, and a whole sample's in eval mode.
    ``whole``: FrameInputs of two whole frames."""
    def run(missing: list[bool], training: bool) -> torch.Tensor:
        branch = model.view_transform if modality == "cameras" else model.lidar
        model.eval()
        branch.train(training)
        with torch.no_grad():
            if modality == "cameras":
                features = model.camera_branch.backbone(model.normalise_images(whole.images))
                levels = [features[level] for level in model.view_levels]
                mask = whole.cam_mask.clone()
                mask[torch.tensor(missing)] = True
                out = model.view_transform(levels, mask, whole.calibration)
            else:
                clouds = [cloud[:0] if gone else cloud for cloud, gone in zip(whole.lidar_points, missing)]
                out = model.lidar(clouds)
        return out

    # Training-mode calls update the running statistics: put them back before the next setting.
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    outputs = {"eval": run([True, False], False)[0], "train_with_whole": run([True, False], True)[0]}
    model.load_state_dict(saved)
    outputs["train_both_missing"] = run([True, True], True)[0]
    model.load_state_dict(saved)
    outputs["whole_eval"] = run([False, False], False)[1]
    model.eval()
    return outputs


def main() -> None:
    parser = evaluation_parser(__doc__, "missing_modality_bev", device=False)
    parser.add_argument("--frames", type=int, default=8, help="held-out frame pairs (spread over the scenes)")
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint)
    rig = cfg.load_rig()
    dataset = SequenceDataset(args.data_root, args.version, rig, lidar_sweeps=cfg.lidar.sweeps)
    pairs = []
    for i in range(args.frames):
        scene = i % len(dataset.scenes)
        length = dataset.scene_length(scene)
        index = (i * 7) % (length - 1)
        pairs.append((dataset.load(scene, index), dataset.load(scene, index + 1)))
    modalities = ["cameras"] + (["lidar"] if model.lidar is not None else [])
    rows = {}
    for modality in modalities:
        sums: dict[str, list[float]] = {}
        for frames in pairs:
            inputs, _ = collate(list(frames), (rig.image_height, rig.image_width))
            out = branch_outputs(model, inputs, modality)
            for key, value in {"missing_eval_rms": rms(out["eval"]), "whole_eval_rms": rms(out["whole_eval"]),
                               "eval_minus_train_with_whole_rms": rms(out["eval"] - out["train_with_whole"]),
                               "eval_minus_train_both_missing_rms": rms(out["eval"] - out["train_both_missing"]),
                               "train_with_whole_minus_both_missing_rms":
                                   rms(out["train_with_whole"] - out["train_both_missing"])}.items():
                sums.setdefault(key, []).append(value)
        rows[modality] = {key: sum(values) / len(values) for key, values in sums.items()}
        print(modality, {key: round(value, 3) for key, value in rows[modality].items()}, flush=True)
    absent = {"view_transform": cfg.view_transform.absent_embedding, "lidar": cfg.lidar.absent_embedding}
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "frames": args.frames, "absent_embedding": absent, "rows": rows}))


if __name__ == "__main__":
    main()
