#!/usr/bin/env bash
# Builds the project-local environment in .venv/ (idempotent; a re-run with
# nothing changed does nothing and takes about a second):
#   1. a virtualenv (sees the system site-packages when they hold a CUDA torch)
#   2. torch: an existing CUDA build is kept; otherwise torch==2.13.0 (CPU)
#   3. requirements.txt (ROS 2 wheels, numpy, rosbags, pytest, ...)
#   4. tf2_msgs (TFMessage only) where the real one is not importable
#   5. our messages (msg/) with rosidl, installed into the venv prefix
#   6. sparsecomp_core / sparsecomp_ros, editable
#   7. environment variables in .venv/bin/activate (ROS_LOG_DIR)
# Each step records a hash of its inputs under .venv/.setup/ and is skipped
# when they are unchanged. Usage: scripts/setup_env.sh [--force]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMPS="$VENV/.setup"
BUILD="$ROOT/build/setup"
PYTHON="${PYTHON:-python3}"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

log() { printf '[setup] %s\n' "$*"; }
hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [[ $FORCE == 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
mark_done() { mkdir -p "$STAMPS"; printf '%s' "$2" > "$STAMPS/$1"; }
changed=0

# 1. virtualenv -------------------------------------------------------------
system_cuda_torch() {
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null
}
if [[ ! -x "$VENV/bin/python" ]]; then
  venv_args=()
  if system_cuda_torch; then
    log "system Python has a CUDA torch: the venv will use it (--system-site-packages)"
    venv_args+=(--system-site-packages)
  fi
  log "creating $VENV"
  "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
  changed=1
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true; }

torch_version() { "$VPY" -c 'from importlib.metadata import version; print(version("torch"))'; }

# 2. torch ------------------------------------------------------------------
TORCH_CPU_VERSION="2.13.0"
key="torch-$TORCH_CPU_VERSION"
if ! up_to_date torch "$key"; then
  if "$VPY" -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
    log "keeping the installed CUDA torch ($(torch_version))"
  else
    log "installing torch==$TORCH_CPU_VERSION (CPU)"
    pip_install "torch==$TORCH_CPU_VERSION"
  fi
  "$VPY" -W ignore -c 'import torch' || { log "ERROR: torch does not import"; exit 1; }
  mark_done torch "$key"; changed=1
fi

# 3. Python requirements ------------------------------------------------------
key="$(hash_of "$ROOT/requirements.txt")"
if ! up_to_date requirements "$key"; then
  log "installing requirements.txt"
  # The pin on torch keeps pip from replacing it with a CUDA download.
  pip_install -r "$ROOT/requirements.txt" "torch==$(torch_version)"
  "$VPY" -c 'import rclpy, std_msgs.msg, sensor_msgs.msg, rosbags' \
    || { log "ERROR: the ROS 2 wheels do not import"; exit 1; }
  mark_done requirements "$key"; changed=1
fi

# rosidl packages are configured against the venv prefix (ROS_ENV.md).
build_interface_package() {  # <name> <source dir>
  local name="$1" src="$2" bdir="$BUILD/$1"
  log "building ROS interface package $name"
  rm -rf "$bdir"
  AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" \
    cmake -S "$src" -B "$bdir" -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -DSPARSECOMP_INSTALL_PYTHON_PACKAGES=OFF \
      -DCMAKE_PROJECT_INCLUDE="$ROOT/cmake/fix_pip_wheel_includes.cmake" > "$bdir.log" 2>&1 \
    && make -C "$bdir" -j"$(nproc)" install >> "$bdir.log" 2>&1 \
    || { log "ERROR: building $name failed, see $bdir.log"; tail -30 "$bdir.log"; exit 1; }
}
# A freshly started interpreter, so the wheels' start-up hook sees new libs.
imports() { env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u LD_LIBRARY_PATH "$VPY" -c "$1" 2>/dev/null; }
mkdir -p "$BUILD"

# 4. tf2_msgs ---------------------------------------------------------------
key="$(hash_of "$ROOT"/third_party/tf2_msgs/{package.xml,CMakeLists.txt,msg/TFMessage.msg} "$ROOT/cmake/fix_pip_wheel_includes.cmake")"
if ! up_to_date tf2_msgs "$key" || ! imports 'import tf2_msgs.msg'; then
  if [[ ! -f "$STAMPS/tf2_msgs" ]] && imports 'import tf2_msgs.msg'; then
    log "tf2_msgs is already installed: not building our TFMessage-only copy"
  else
    build_interface_package tf2_msgs "$ROOT/third_party/tf2_msgs"
  fi
  imports 'from tf2_msgs.msg import TFMessage' || { log "ERROR: tf2_msgs does not import"; exit 1; }
  mark_done tf2_msgs "$key"; changed=1
fi

# 5. our messages -------------------------------------------------------------
key="$(hash_of "$ROOT"/msg/*.msg "$ROOT/package.xml" "$ROOT/CMakeLists.txt" "$ROOT/cmake/fix_pip_wheel_includes.cmake")"
if ! up_to_date messages "$key" || ! imports 'import sparsecomp.msg'; then
  build_interface_package sparsecomp "$ROOT"
  imports 'from sparsecomp.msg import DynamicObjectArray, CameraHealth' \
    || { log "ERROR: the sparsecomp messages do not import"; exit 1; }
  mark_done messages "$key"; changed=1
fi

# 6. our Python packages, editable --------------------------------------------
key="$(hash_of "$ROOT/setup.py")"
if ! up_to_date editable "$key"; then
  log "installing sparsecomp_core and sparsecomp_ros (editable)"
  pip_install --no-deps --no-build-isolation -e "$ROOT"
  mark_done editable "$key"; changed=1
fi

# 7. activation ---------------------------------------------------------------
ACTIVATE_BLOCK="# >>> sparsecomp >>>
export SPARSECOMP_ROOT=\"$ROOT\"
# rclpy.init() needs a writable log folder; keep ROS logs in the project.
export ROS_LOG_DIR=\"\${ROS_LOG_DIR:-$ROOT/.ros/log}\"
# <<< sparsecomp <<<"
key="$(printf '%s' "$ACTIVATE_BLOCK" | sha256sum | cut -d' ' -f1)"
if ! up_to_date activate "$key"; then
  sed -i '/# >>> sparsecomp >>>/,/# <<< sparsecomp <<</d' "$VENV/bin/activate"
  printf '\n%s\n' "$ACTIVATE_BLOCK" >> "$VENV/bin/activate"
  mark_done activate "$key"; changed=1
fi

# Every step's result, checked together: a later step can break an earlier one.
imports 'import torch, rclpy, tf2_msgs.msg, sparsecomp_core, sparsecomp_ros
from sparsecomp.msg import DynamicObjectArray, CameraHealth' \
  || { log "ERROR: the environment is incomplete (an import failed); rerun with --force"; exit 1; }

if [[ $changed == 0 ]]; then
  log "environment up to date (nothing to do)"
else
  log "done. Activate with: . .venv/bin/activate"
fi
