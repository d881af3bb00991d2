"""Detection quality against how many cameras are lost at once.

Training drops 1 to 2 cameras (SPEC 2's RandCamMask, n in [n_min, n_max]);
the robustness protocol's Frame Lost drops each camera with probability 0.3,
so 3 or more at once in about a third of its frames. This runs the held-out
stream with exactly k cameras lost per frame (drawn anew each frame, as
Frame Lost does), for each k, and Frame Lost itself, and reports mAP, NDS and
NDS / clean: whether a model falls off past the fault counts it was trained on.

    python bench/fault_count_sweep.py --checkpoint models/tiny_default.pt \
        [--version v1.0-synthetic-val] [--counts 1 2 3 4] [--variants full] [--name fault_count_sweep]

Writes bench/results/<name>-<cpu|gpu>.json.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import evaluation_parser, write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.evaluation.evaluate import Condition, evaluate, standard_conditions  # noqa: E402
from sparsecomp_core.models.detector import load_detector  # noqa: E402


def main() -> None:
    parser = evaluation_parser(__doc__, "fault_count_sweep")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--variants", nargs="+", default=["full"], choices=["none", "full"])
    args = parser.parse_args()
    model, cfg = load_detector(args.checkpoint, args.device)
    dataset = SequenceDataset(args.data_root, args.version, cfg.load_rig(), lidar_sweeps=cfg.lidar.sweeps)
    standard = standard_conditions(dataset.rig.camera_names)
    conditions = [standard["clean"], *(Condition(f"lost{k}", lost_per_frame=k) for k in args.counts),
                  standard["frame_lost"]]
    rows = []
    for variant in args.variants:
        clean_nds = None
        for condition in conditions:
            report = evaluate(model, dataset, condition, variant, progress=False)
            clean_nds = report["NDS"] if condition.name == "clean" else clean_nds
            rows.append({"condition": condition.name, "variant": variant, "mAP": report["mAP"], "NDS": report["NDS"],
                         "NDS_over_clean": report["NDS"] / max(clean_nds, 1e-9), "mAVE": report["mAVE"],
                         "held_camera_fraction": report["held_camera_fraction"]})
            print(f"{variant:5s} {condition.name:10s} mAP {report['mAP']:.3f} NDS {report['NDS']:.3f} "
                  f"({rows[-1]['NDS_over_clean']:.3f} x clean)", flush=True)
    print("wrote", write_result(args.name, {"checkpoint": args.checkpoint, "data": f"{args.data_root}/{args.version}",
                                            "camera_dropout_in_training": asdict(cfg.camera_dropout),
                                            "rows": rows}))


if __name__ == "__main__":
    main()
