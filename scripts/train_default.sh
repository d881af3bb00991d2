#!/usr/bin/env bash
# Reproduces a shipped model from nothing: generates the training and
# held-out data (fixed seeds), trains stage 1 and stage 2 on 12 scenes, stage 3 on
# 48 more, stage 4 on those 108 (config/train/<model>_stage{1,2,3,4}.yaml) and exports
# the weights; tiny goes on with stage 5 (2500 more steps on the same 108), then stages
# 6 and 7 from stage 5 (48 more scenes and more failed cameras; velocity weighed more),
# averages stages 5, 6 and 7's weights, trains stage 10 from that average with the LiDAR
# dropped more often, takes the mean of the two, trains stage 12 from that mean with
# crashed cameras at a small learning rate, takes the mean of those two, fine-tunes that mean twice
# (stage 13: a learned vector on the cells only completed cameras see; stage 14: every
# camera failed in a fifth of the streams), takes the mean of those two, fine-tunes it with
# the LiDAR on in more streams and crashes in most (stage 15) and ships the mean of that
# mean and stage 15; tiny_camera ships its stage 5
# (2000 more steps with crashed cameras, completed cameras only in the live cameras' gaps). Stage 4 of
# tiny starts its camera path from tiny_camera's stage 4, so
# tiny first trains tiny_camera (the same script) when that result is missing.
#   scripts/train_default.sh [tiny|tiny_camera] [--device cpu|cuda] [--install]
#     tiny          camera + LiDAR (5 merged sweeps, LiDAR dropout, velocity from history)
#     tiny_camera   camera only
#     --device      default: CUDA when torch sees one, else the CPU
#     --install     copy the result over models/<model>_default.pt; without it the
#                   result is checkpoints/<model>_default.pt, to be evaluated against
#                   the shipped model first (the commands are printed at the end)
# Resumable: rerun the same command after an interruption and every step
# continues where it stopped (data generation is skipped once its tables exist;
# training resumes from checkpoints/<model>_stage{1,2,3}/last.pt; a stage whose model.pt
# exists is done: delete checkpoints/<model>_stage*/ to train afresh). About 4 h on 2
# otherwise idle CPU cores per model (0.6-1.4 s per step; stage 3 about 20 min, stages 4
# and 5 about 30 min each (tiny_camera's stage 5: 2000 steps, about 33 min at one thread
# beside another training); tiny also needs tiny_camera's stage 4, and its stages 6, 7,
# 10, 12, 13, 14 and 15 take about 40, 20, 15, 35, 35, 35 and 35 min more), plus about 70 min to generate the data;
# on a machine busy with other work,
# OMP_NUM_THREADS=1 keeps a step near 2.6 s instead of 8-20 s.
set -euo pipefail
SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. .venv/bin/activate

MODEL=tiny
DEVICE_ARGS=()
INSTALL=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    tiny|tiny_camera) MODEL="$1" ;;
    --device) DEVICE_ARGS=(--device "$2"); shift ;;
    --device=*) DEVICE_ARGS=(--device "${1#--device=}") ;;
    --install) INSTALL=1 ;;
    *) echo "usage: $0 [tiny|tiny_camera] [--device cpu|cuda] [--install]" >&2; exit 2 ;;
  esac
  shift
done

generate() {  # <version> <seed> <scenes> <frames>
  if [[ ! -f data/synthetic/$1/sample.json ]]; then
    python -m sparsecomp_core.data.synthetic.generate --out data/synthetic --version "$1" --seed "$2" \
      --scenes "$3" --frames "$4" --rig default7 --image-size 128 256 --lidar-beams 32 --lidar-azimuths 512
  fi
}
generate v1.0-synthetic-train 1 12 100
generate v1.0-synthetic-train-large 11 48 60   # stage 3: more scenes (docs/data_training_evaluation.md)
generate v1.0-synthetic-train-extra 13 48 60   # stage 4: more again
generate v1.0-synthetic-train-more 17 48 60    # tiny's stage 6
generate v1.0-synthetic-val 2 3 60        # held out: other seeds, never trained on

average() {  # <name> <stage>...: the mean of those stages' weights (training/average_weights.py)
  local out="checkpoints/${MODEL}_$1/model.pt" inputs=()
  shift
  for input in "$@"; do inputs+=("checkpoints/${MODEL}_${input}/model.pt"); done
  if [[ ! -f "$out" ]]; then
    # --missing-as-zero: stage 13's vector, which starts at zero, is zeros in stage 14
    python -m sparsecomp_core.training.average_weights --missing-as-zero --out "$out" "${inputs[@]}"
  fi
}

stage() {  # <stage>: a stage whose model.pt exists is done (training writes it only at the end)
  if [[ ! -f "checkpoints/${MODEL}_$1/model.pt" ]]; then
    python -m sparsecomp_core.training.train --config "config/train/${MODEL}_$1.yaml" --resume "${DEVICE_ARGS[@]}"
  fi
}
stage stage1
stage stage2
stage stage3
if [[ $MODEL == tiny && ! -f checkpoints/tiny_camera_stage4/model.pt ]]; then
  "$SELF" tiny_camera "${DEVICE_ARGS[@]}"     # config/train/tiny_stage4.yaml: init_modules_from
fi
stage stage4
FINAL=stage4
if [[ $MODEL == tiny_camera ]]; then   # docs/completion.md, "Where a crash costs"
  stage stage5
  FINAL=stage5
fi
if [[ $MODEL == tiny ]]; then   # the fused model trains on (docs/data_training_evaluation.md, "Stage 5", "Stage 8", "Stage 10", "Stage 12")
  stage stage5
  stage stage6                  # from stage 5: 48 more scenes, 1-4 cameras failed
  stage stage7                  # from stage 5: velocity weighed more
  average averaged stage5 stage6 stage7
  stage stage10                 # from that average: LiDAR dropped from 60 % of the streams
  average stage10_mean averaged stage10
  stage stage12                 # from that mean: crashed cameras, a third of stage 11's learning rate
  average shipped stage10_mean stage12
  stage stage13                 # from that mean: the completed-cells vector (tiny_marked), crashed cameras
  stage stage14                 # from that mean too: every camera failed in 20 % of the streams
  average soup13_14 stage13 stage14
  stage stage15                 # from that mean: LiDAR on in more streams, crashes in 80 % of them
  average soup15 soup13_14 stage15
  FINAL=soup15
fi

RESULT="checkpoints/${MODEL}_default.pt"
# The track filter is post-processing without weights: the current config's (training/ship_weights.py).
python -m sparsecomp_core.training.ship_weights --model "$MODEL" "checkpoints/${MODEL}_${FINAL}/model.pt" "$RESULT"
if [[ $INSTALL == 1 ]]; then
  cp "$RESULT" "models/${MODEL}_default.pt"
  ls -l "models/${MODEL}_default.pt"
else
  ls -l "$RESULT"
  EVALUATE="python -m sparsecomp_core.evaluation.evaluate --data-root data/synthetic --version v1.0-synthetic-val"
  echo "Evaluate it beside the shipped model on the held-out set; install it only if it is better:"
  echo "  $EVALUATE --checkpoint $RESULT --out outputs/eval_${MODEL}_new.json"
  if [[ $MODEL == tiny ]]; then
    echo "  $EVALUATE --checkpoint $RESULT --variant no_lidar --out outputs/eval_${MODEL}_new_no_lidar.json"
  fi
  echo "  cp $RESULT models/${MODEL}_default.pt      # or rerun this script with --install"
fi
