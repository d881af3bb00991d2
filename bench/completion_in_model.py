"""How well a trained model's cascade completes failed cameras, per FPN level.

The training log's ``loss_ssl`` / ``loss_vae_rec`` are MSEs in feature units,
and the backbone that makes the teacher's features trains too: a rising SSL
term can mean worse completion or just larger features. This script says
which. For held-out frames streamed in order (temporal completion gets its
history), it fails ``--cameras`` cameras, runs the camera branch, and compares
the failed cameras' completed features with the teacher's (the same backbone
on the full images):

  ratio to zero fill = MSE(completed, teacher) / MSE(0, teacher)
  (1.0: no better than a dead camera; 0: perfect), and the teacher's RMS;
  ratio to mean fill = MSE(completed, teacher) / MSE(mean, teacher), mean =
  the live cameras' per-channel mean feature (a trivial completion: a feature
  map with a large constant part makes the first ratio look good).

    python bench/completion_in_model.py --checkpoint M [--checkpoint M2 ...]
        [--data-root data/synthetic] [--version v1.0-synthetic-val]
        [--frames-per-scene 20] [--cameras 2] [--name completion_in_model]

Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset, collate  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402


def measure(checkpoint: str, data_root: str, version: str, frames_per_scene: int, failed: int, seed: int) -> dict:
    model, cfg = load_detector(checkpoint)
    dataset = SequenceDataset(data_root, version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    generator = torch.Generator().manual_seed(seed)
    branch = model.camera_branch
    errors, zeros, mean_fills = [], [], []     # per frame: [levels]
    with torch.no_grad():
        for scene in range(len(dataset.scenes)):
            state = branch.initial_state()
            for index in range(min(frames_per_scene, dataset.scene_length(scene))):
                frame = dataset.load(scene, index)
                inputs, _ = collate([frame], dataset.image_size, with_teacher=True, with_trajectory=False)
                cameras = inputs.images.shape[1]
                mask = torch.zeros(1, cameras, dtype=torch.bool)
                mask[0, torch.randperm(cameras, generator=generator)[:failed]] = True
                images = inputs.images * (~mask)[..., None, None, None].to(inputs.images.dtype)
                out = branch(model.normalise_images(images), mask, inputs.calibration, inputs.ego2global,
                             inputs.timestamp_us, state, inputs.sequence_ids, None)
                state = out["state"]
                teacher = branch.backbone(model.normalise_images(inputs.teacher_images))
                live = [s[~mask].float().mean(dim=(0, 2, 3))[None, :, None, None] for s in out["features"]]
                levels = [(s[mask].float(), t[mask].float()) for s, t in zip(out["features"], teacher)]
                errors.append(torch.stack([((s - t) ** 2).mean() for s, t in levels]))
                zeros.append(torch.stack([(t ** 2).mean() for _, t in levels]))
                mean_fills.append(torch.stack([((m - t) ** 2).mean() for m, (_, t) in zip(live, levels)]))
    error, zero, mean_fill = (torch.stack(values).mean(0) for values in (errors, zeros, mean_fills))
    return {"checkpoint": checkpoint, "frames": len(errors), "failed_cameras": failed,
            "completed_mse": error.tolist(), "teacher_mean_square": zero.tolist(),
            "mean_fill_mse": mean_fill.tolist(), "ratio_to_zero_fill": (error / zero).tolist(),
            "ratio_to_mean_fill": (error / mean_fill).tolist(), "teacher_rms": zero.sqrt().tolist()}


def main() -> None:
    parser = evaluation_parser(__doc__, "completion_in_model", checkpoint=None, device=False)
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--frames-per-scene", type=int, default=20)
    parser.add_argument("--cameras", type=int, default=2, help="cameras failed per frame (chosen at random)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results = []
    for checkpoint in args.checkpoint:
        result = measure(checkpoint, args.data_root, args.version, args.frames_per_scene, args.cameras, args.seed)
        results.append(result)
        print(checkpoint, "per level: ratio to zero fill", " ".join(f"{r:.3f}" for r in result["ratio_to_zero_fill"]),
              "| ratio to mean fill", " ".join(f"{r:.3f}" for r in result["ratio_to_mean_fill"]),
              "| teacher RMS", " ".join(f"{r:.2f}" for r in result["teacher_rms"]), flush=True)
    print("wrote", write_result(args.name, {"data": f"{args.data_root}/{args.version}", "results": results}))


if __name__ == "__main__":
    main()
