#!/usr/bin/env bash
# The ten-set check a camera + LiDAR recipe is chosen on (docs/data_training_evaluation.md,
# "Choosing on ten sets"): generates the held-out sets of seeds 29 ... 67 (3 scenes x 60
# frames each, like the held-out set; about 7 min on 2 cores, skipped once they exist)
# and runs bench/seed_sets.py on the given models (the first is the reference) with the
# shipped camera-only model for the no-LiDAR margin, per set and pooled, two sets at a time, reports cached
# under outputs/seed_sets_cache (about 15 min per model on 2 idle cores).
#   scripts/check_sets.sh [--name NAME] [--confirm | --seeds "S1 S2 ..."] [model.pt ...]
#     model.pt   default: models/tiny_default.pt
#     --confirm  the second ten (CONFIRM_SEEDS), which a choice made on the first ten is confirmed on
#     --seeds    any other sets (an even count)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. .venv/bin/activate

NAME=seed_sets
CHECK_SEEDS=(29 31 37 41 43 47 53 59 61 67)
CONFIRM_SEEDS=(71 73 79 83 89 97 101 103 107 109)
SEEDS=("${CHECK_SEEDS[@]}")
while [[ $# -gt 0 && $1 == --* ]]; do
  case "$1" in
    --name) NAME="$2"; shift 2 ;;
    --confirm) SEEDS=("${CONFIRM_SEEDS[@]}"); shift ;;
    --seeds) read -r -a SEEDS <<< "$2"; shift 2 ;;
    *) echo "usage: $0 [--name NAME] [--confirm | --seeds \"S1 S2 ...\"] [model.pt ...]" >&2; exit 2 ;;
  esac
done
(( ${#SEEDS[@]} % 2 == 0 )) || { echo "--seeds: an even count (two sets are generated at a time)" >&2; exit 2; }
MODELS=("$@")
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(models/tiny_default.pt)

generate() {  # <seed>
  local version="v1.0-synthetic-seed$1"
  if [[ ! -f data/synthetic/$version/sample.json ]]; then
    OMP_NUM_THREADS=1 python -m sparsecomp_core.data.synthetic.generate --out data/synthetic --version "$version" \
      --seed "$1" --scenes 3 --frames 60 --rig default7 --image-size 128 256 --lidar-beams 32 --lidar-azimuths 512
  fi
}
for ((i = 0; i < ${#SEEDS[@]}; i += 2)); do    # two at a time: one per core
  generate "${SEEDS[i]}" &
  first=$!
  generate "${SEEDS[i + 1]}"
  wait "$first"                                # its failure stops the script too
done

VERSIONS=()
for seed in "${SEEDS[@]}"; do VERSIONS+=("v1.0-synthetic-seed$seed"); done
python bench/seed_sets.py --checkpoints "${MODELS[@]}" --versions "${VERSIONS[@]}" --jobs 2 \
  --cache outputs/seed_sets_cache --pooled --name "$NAME"
