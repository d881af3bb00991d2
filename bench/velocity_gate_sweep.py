"""How the history velocity's association gate changes a trained model's velocity, at inference.

``head.velocity_history_gate_m`` decides which past detection counts as an
object's earlier position: the one nearest to where it was expected (its kept
centre moved by its own kept velocity and the ego motion), if nearer than the
gate. An object whose velocity points the wrong way is expected on the wrong
side, farther the longer ago the frame, so a tight gate drops exactly the long
baselines that would correct it. This sweep re-runs one clean stream per gate
value (the weights unchanged: the weighting MLP sees the miss distance divided
by the gate, so values far from the trained one are off its training
distribution) and reports mAP, NDS, mAVE and per-class AVE.

    python bench/velocity_gate_sweep.py --checkpoint models/tiny_default.pt \
        [--version v1.0-synthetic-tune] [--gates 2 4 6 8] [--name velocity_gate_sweep]

Writes bench/results/<name>-<cpu|gpu>.json. Choose on the tuning set, check on the held-out set.
"""
from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import evaluate, standard_conditions  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402

VELOCITY_CLASSES = ("car", "truck", "bus", "person", "non_motor", "riderless_non_motor")


def main() -> None:
    parser = evaluation_parser(__doc__, "velocity_gate_sweep", version="v1.0-synthetic-tune")
    parser.add_argument("--gates", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    parser.add_argument("--max-frames", type=int)
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint, args.device)
    if model.head.velocity_fusion is None:
        raise SystemExit(f"{args.checkpoint}: its head has no history velocity (head.velocity_from_history is off)")
    dataset = SequenceDataset(args.data_root, args.version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    clean = standard_conditions(dataset.rig.camera_names)["clean"]
    trained_gate = cfg.head.velocity_history_gate_m
    rows = []
    try:
        for gate in args.gates:
            for layer in model.head.velocity_fusion:
                layer.gate_m = gate
            report = evaluate(model, dataset, clean, "full", progress=False, max_frames=args.max_frames)
            ave = {name: report["per_class"][name]["vel_err"] for name in VELOCITY_CLASSES if name in report["per_class"]}
            rows.append({"gate_m": gate, "mAP": report["mAP"], "NDS": report["NDS"], "mAVE": report["mAVE"],
                         "AVE": ave})
            print(f"gate {gate:4.1f} m: mAP {report['mAP']:.3f} NDS {report['NDS']:.3f} mAVE {report['mAVE']:.2f}  "
                  + " ".join(f"{k} {v:.2f}" for k, v in ave.items()), flush=True)
    finally:
        for layer in model.head.velocity_fusion:
            layer.gate_m = trained_gate
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "trained_gate_m": trained_gate, "max_frames": args.max_frames,
                                            "rows": rows}))


if __name__ == "__main__":
    main()
