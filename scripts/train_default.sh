#!/usr/bin/env bash
# Reproduces a shipped model from nothing: generates the training and
# held-out data (fixed seeds), trains stage 1 and stage 2 on the CPU
# (config/train/<model>_stage1.yaml, _stage2.yaml), and exports the weights to
# models/<model>_default.pt.
#   scripts/train_default.sh               # models/tiny_default.pt (camera + LiDAR)
#   scripts/train_default.sh tiny_camera   # models/tiny_camera_default.pt (camera only)
# Resumable: rerun after an interruption and every step continues where it
# stopped (data generation is skipped once its tables exist; training resumes
# from the last checkpoint). About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. .venv/bin/activate
MODEL="${1:-tiny}"

generate() {  # <version> <seed> <scenes> <frames>
  if [[ ! -f data/synthetic/$1/sample.json ]]; then
    python -m sparsecomp_core.data.synthetic.generate --out data/synthetic --version "$1" --seed "$2" \
      --scenes "$3" --frames "$4" --rig default7 --image-size 128 256 --lidar-beams 32 --lidar-azimuths 512
  fi
}
generate v1.0-synthetic-train 1 12 100
generate v1.0-synthetic-val 2 3 60        # held out: other seeds, never trained on

python -m sparsecomp_core.training.train --config "config/train/${MODEL}_stage1.yaml" --resume
python -m sparsecomp_core.training.train --config "config/train/${MODEL}_stage2.yaml" --resume
python - "$MODEL" <<'PY'
import sys
import torch
model = sys.argv[1]
state = torch.load(f"outputs/{model}_stage2/model.pt", map_location="cpu", weights_only=False)
torch.save({"model": state["model"], "model_config": state["model_config"]}, f"models/{model}_default.pt")
PY
ls -l "models/${MODEL}_default.pt"
