"""DistributedDataParallel on CPU: 2 processes with torchrun (gloo)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

HELPER = Path(__file__).parent / "helpers" / "ddp_gradients.py"


def test_two_process_gradients_agree_and_are_the_mean_of_local_gradients(tmp_path):
    out = tmp_path / "grads.pt"
    env = {**os.environ, "DDP_TEST_OUT": str(out), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000), str(HELPER)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    grads = torch.load(out)
    local, ddp = grads["local"], grads["ddp"]
    assert not torch.allclose(local[0], local[1])                  # the ranks saw different data
    torch.testing.assert_close(ddp[0], ddp[1], rtol=0, atol=0)      # every rank steps with the same gradient
    torch.testing.assert_close(ddp[0], local.mean(dim=0), rtol=1e-4, atol=1e-6)
