"""Each training loss's share of the gradient, for a trained checkpoint.

Training clips the total gradient norm (train config ``grad_clip``, 35): when
one group of losses has a much larger gradient than the others, clipping
scales every loss's step down by the same factor, so the small ones learn
slowly. This runs a checkpoint in training mode on streams of training
frames (2 failed cameras per frame, as camera dropout does, the teacher on
the full images), and reports per loss its value and the norm of its
gradient over the trainable parameters, averaged over the measured frames,
with the norm of the summed gradient.

    python bench/loss_gradients.py --checkpoint models/tiny_default.pt [--frames 4] [--relative-to-teacher]

``--relative-to-teacher`` evaluates the cascade's reconstruction terms relative
to the teacher's feature scale (``cascade.loss_weights.relative_to_teacher``)
on the same weights. Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.camera_dropout import RandCamMask  # noqa: E402
from sparsecomp_core.data.dataset import SequenceDataset, collate  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402


def main() -> None:
    parser = evaluation_parser(__doc__, "loss_gradients", version="v1.0-synthetic-train", device=False)
    parser.add_argument("--frames", type=int, default=4, help="measured frames per stream (after 2 warm-up frames)")
    parser.add_argument("--relative-to-teacher", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model, cfg = load_detector(args.checkpoint)
    if args.relative_to_teacher:
        model.camera_branch.cascade.loss_weights.relative_to_teacher = True
    rig = cfg.load_rig()
    size = (rig.image_height, rig.image_width)
    dataset = SequenceDataset(args.data_root, args.version, rig, size, lidar_sweeps=cfg.lidar.sweeps)
    dropout = RandCamMask(1.0, 2, 2)
    scenes = [0, len(dataset.scenes) // 2]
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    state, measured = model.initial_state(), {}
    for step in range(2 + args.frames):
        frames = [dataset.load(scene, 10 + step) for scene in scenes]
        inputs, targets = collate(frames, size, dropout, with_teacher=True)
        outputs = model(inputs, state, targets)
        state = outputs["state"]
        if step < 2:                                # warm-up: the history fills
            continue
        losses = {k: v for k, v in outputs["losses"].items() if v.requires_grad}
        losses["total"] = sum(losses.values())
        for name, loss in losses.items():
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            norm = float(torch.sqrt(sum(g.float().pow(2).sum() for g in grads if g is not None)))
            measured.setdefault(name, []).append((float(loss.detach()), norm))
    rows = {name: {"value": sum(v for v, _ in pairs) / len(pairs), "grad_norm": sum(n for _, n in pairs) / len(pairs)}
            for name, pairs in measured.items()}
    for name, row in rows.items():
        print(f"{name:22s} value {row['value']:8.3f}  gradient norm {row['grad_norm']:8.2f}")
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "relative_to_teacher": args.relative_to_teacher, "frames": args.frames,
                                            "failed_cameras_per_frame": 2, "rows": rows}))


if __name__ == "__main__":
    main()
