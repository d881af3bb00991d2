#!/usr/bin/env bash
# A separate, test-only environment with nuscenes-devkit (it pins numpy 1.26
# and pulls opencv, matplotlib, shapely, ...; none of that belongs in the
# runtime environment). Used by test/test_metrics_devkit.py to check our
# detection metrics against the devkit's. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-devkit"
PIN="nuscenes-devkit==1.2.0"
if [[ -f "$VENV/.done" && "$(cat "$VENV/.done")" == "$PIN" ]]; then
  exit 0
fi
rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check -q "$PIN" 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c "from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp"
printf '%s' "$PIN" > "$VENV/.done"
