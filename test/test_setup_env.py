"""scripts/setup_env.sh is idempotent: a second run changes nothing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SETUP = REPO_ROOT / "scripts" / "setup_env.sh"
VENV = REPO_ROOT / ".venv"


def snapshot(root: Path) -> dict[str, int]:
    """mtime of every file and folder under root (not following links)."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            result[path] = os.lstat(path).st_mtime_ns
    return result


def run_setup() -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "LD_LIBRARY_PATH")}
    done = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(not (VENV / ".setup").is_dir(), reason="environment not built by scripts/setup_env.sh")
def test_second_run_is_a_no_op():
    run_setup()  # brings the environment up to date if this checkout changed it
    before = snapshot(VENV) | snapshot(REPO_ROOT / "build" / "setup")
    output = run_setup()
    after = snapshot(VENV) | snapshot(REPO_ROOT / "build" / "setup")
    assert "nothing to do" in output, output
    assert after == before, "second run touched: " + ", ".join(
        sorted(set(after.items()) ^ set(before.items()))[:10])
