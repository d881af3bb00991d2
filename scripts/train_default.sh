#!/usr/bin/env bash
# Reproduces the shipped default model, models/tiny_default.pt, from nothing:
# generates the training and held-out data (fixed seeds), trains stage 1 and
# stage 2 of the tiny config on the CPU, and exports the weights.
# Resumable: rerun after an interruption and every step continues where it
# stopped (data generation is skipped once its tables exist; training resumes
# from the last checkpoint). About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. .venv/bin/activate

generate() {  # <version> <seed> <scenes> <frames>
  if [[ ! -f data/synthetic/$1/sample.json ]]; then
    python -m sparsecomp_core.data.synthetic.generate --out data/synthetic --version "$1" --seed "$2" \
      --scenes "$3" --frames "$4" --rig default7 --image-size 128 256 --lidar-beams 32 --lidar-azimuths 512
  fi
}
generate v1.0-synthetic-train 1 12 100
generate v1.0-synthetic-val 2 3 60        # held out: other seeds, never trained on

python -m sparsecomp_core.training.train --config config/train/tiny_stage1.yaml --resume
python -m sparsecomp_core.training.train --config config/train/tiny_stage2.yaml --resume
python - <<'PY'
import torch
state = torch.load("outputs/tiny_stage2/model.pt", map_location="cpu", weights_only=False)
torch.save({"model": state["model"], "model_config": state["model_config"]}, "models/tiny_default.pt")
PY
ls -l models/tiny_default.pt
