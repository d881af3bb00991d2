#!/usr/bin/env bash
# A separate, test-only environment with nuscenes-devkit (it pins numpy 1.26
# and pulls opencv, matplotlib, shapely, ...; none of that belongs in the
# runtime environment). Used by test/test_metrics_devkit.py to check our
# detection metrics against the devkit's, and by test/test_tracking_metrics.py
# to check our tracking metrics against its TrackingEvaluation (which needs
# the devkit's tracking extras: motmetrics and pandas, at the versions of the
# devkit's own lock file). Idempotent; each step has its own marker, so adding
# the extras to an existing environment does not rebuild it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-devkit"
PIN="nuscenes-devkit==1.2.0"
TRACKING_PINS="motmetrics==1.4.0 pandas==2.3.2"
if [[ ! -f "$VENV/.done" || "$(cat "$VENV/.done")" != "$PIN" ]]; then
  rm -rf "$VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$PIN" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "from nuscenes.eval.detection.algo import accumulate, calc_ap, calc_tp"
  printf '%s' "$PIN" > "$VENV/.done"
fi
if [[ ! -f "$VENV/.tracking-done" || "$(cat "$VENV/.tracking-done")" != "$TRACKING_PINS" ]]; then
  # shellcheck disable=SC2086  # the pins are separate arguments
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q $TRACKING_PINS 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "from nuscenes.eval.tracking.algo import TrackingEvaluation"
  printf '%s' "$TRACKING_PINS" > "$VENV/.tracking-done"
fi
