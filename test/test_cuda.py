"""The CUDA path (marker ``cuda``: skipped without a GPU; ``make gpu-check`` runs them).

The model on CUDA against the CPU, in fp32 and under bf16 / fp16 autocast;
an AMP training step lowers the loss; DDP with NCCL on one GPU. Tolerances
(why they are what they are: docs/deployment.md):

- fp32 (TF32 off): dense features relative L2 error <= 1e-4; every CPU
  detection found on CUDA (nearest centre within 0.01 m, its probability
  for the CPU's class within 0.002 of the CPU's score).
- fp16 autocast: features <= 2e-2; 90 % of the CPU's detections found
  (centre within 0.25 m, score within 0.05).
- bf16 autocast: features <= 6e-2; 90 % found (centre within 0.5 m, score
  within 0.1).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsecomp_core.data.dataset import SequenceDataset, collate
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.models.detector import build_detector, load_detector
from sparsecomp_core.models.head.postprocess import postprocess
from sparsecomp_core.models.model_config import load_model_config

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO_ROOT  # noqa: E402
from test_detector import micro_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import toy_scene  # noqa: E402

pytestmark = pytest.mark.cuda
# SPARSECOMP_CUDA_TESTS_DEVICE=cpu runs this file's code on the CPU (a dry run of the tests
# themselves on a machine without a GPU: CPU against CPU proves nothing about CUDA).
DEVICE = os.environ.get("SPARSECOMP_CUDA_TESTS_DEVICE", "cuda")

# precision -> (autocast dtype, feature relative L2, centre m, score)
TOLERANCES = {"fp32": (None, 1e-4, 0.01, 0.002), "fp16": (torch.float16, 2e-2, 0.25, 0.05),
              "bf16": (torch.bfloat16, 6e-2, 0.5, 0.1)}
MATCHED_FRACTION = {"fp32": 1.0, "fp16": 0.9, "bf16": 0.9}
FAILED_CAMERAS = [0, 4]


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 on CUDA means fp32: TF32 matmuls / convolutions would differ from the CPU by ~1e-3."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def sequence(tmp_path_factory):
    """Four consecutive frames of a generated scene for the shipped tiny model, cameras 0 and 4
    failed from the second frame on (so the cascade rewrites them from history)."""
    checkpoint = REPO_ROOT / "models" / "tiny_default.pt"
    model, cfg = load_detector(checkpoint)
    rig = cfg.load_rig()
    root = tmp_path_factory.mktemp("cuda_data")
    generate(root, "v1.0-cuda", rig.name, seed=7, scenes=1, frames=4, image_size=(rig.image_height, rig.image_width),
             lidar_beams=32, lidar_azimuths=512, progress=False)
    dataset = SequenceDataset(str(root), "v1.0-cuda", rig, (rig.image_height, rig.image_width),
                              lidar_sweeps=cfg.lidar.sweeps)
    frames = []
    for index in range(4):
        inputs, _ = collate([dataset.load(0, index)], (rig.image_height, rig.image_width))
        if index > 0:
            inputs.cam_mask[0, FAILED_CAMERAS] = True
        frames.append(inputs)
    return model, frames


def run_sequence(model, frames, device: str, dtype) -> list[dict]:
    """Per frame: the completed camera features, the fused BEV and the detections (on the CPU)."""
    model = model.to(device)
    captured = {}
    hook = model.fuser.register_forward_hook(lambda module, args, output: captured.__setitem__("bev", output))
    state, results = model.initial_state(), []
    try:
        for inputs in frames:
            with torch.no_grad(), torch.autocast(device_type=device, dtype=dtype or torch.float32,
                                                 enabled=dtype is not None):
                outputs = model(inputs.to(device), state)
            state = outputs["state"]
            found = postprocess(outputs, model.postprocess_cfg)[0]
            results.append({"features": [f.float().cpu() for f in outputs["completion"]["features"]],
                            "bev": captured["bev"].float().cpu(),
                            "detections": {k: v.float().cpu() for k, v in found.items()}})
    finally:
        hook.remove()
        model.to("cpu")
    return results


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-12))


@pytest.mark.parametrize("precision", list(TOLERANCES))
def test_the_model_on_cuda_matches_the_cpu(sequence, precision):
    model, frames = sequence
    dtype, feature_tol, centre_tol, score_tol = TOLERANCES[precision]
    reference = run_sequence(model, frames, "cpu", None)
    on_gpu = run_sequence(model, frames, DEVICE, dtype)
    matches, failures = [], []
    for index, (expected, actual) in enumerate(zip(reference, on_gpu)):
        for level, (a, e) in enumerate(zip(actual["features"], expected["features"])):
            assert relative_error(a, e) <= feature_tol, (precision, index, level, relative_error(a, e))
        assert relative_error(actual["bev"], expected["bev"]) <= feature_tol, (precision, index)
        cpu, gpu = expected["detections"], actual["detections"]
        for box, label, score in zip(cpu["boxes"], cpu["labels"], cpu["scores"]):
            if score < model.postprocess_cfg.score_threshold + score_tol:
                continue                      # may fall under the threshold on the other device
            # The same object: nearest centre, and its probability for the CPU's class (the top class
            # may swap between two near-equal classes in half precision) within the score tolerance.
            distance = (gpu["boxes"][:, :2] - box[:2]).norm(dim=1)
            nearest = int(distance.argmin()) if len(distance) else None
            same = (nearest is not None and distance[nearest] <= centre_tol
                    and abs(float(gpu["class_probabilities"][nearest, int(label)] - score)) <= score_tol)
            matches.append(same)
            failures += [] if same else [(index, [round(float(x), 2) for x in box[:2]], round(float(score), 3))]
    # fp32: every detection; half precision: the heatmap's top-k may pick another query for a
    # weak object, so at least 90 % of them (docs/deployment.md).
    assert matches, "no CPU detection above the threshold to compare"
    assert sum(matches) >= MATCHED_FRACTION[precision] * len(matches), (precision, sum(matches), len(matches), failures)


def test_failed_cameras_are_rewritten_and_valid_ones_kept_on_cuda(sequence):
    """The cascade's promise holds on the GPU: a failed camera's features change, a valid one's are
    exactly what the backbone gave (bit-identical on the same device)."""
    model, frames = sequence
    model = model.to(DEVICE)
    captured = {}
    hook = model.camera_branch.backbone.register_forward_hook(
        lambda module, args, output: captured.__setitem__("backbone", output))
    try:
        state = model.initial_state()
        for inputs in frames:
            with torch.no_grad():
                outputs = model(inputs.to(DEVICE), state)
            state = outputs["state"]
    finally:
        hook.remove()
        model.to("cpu")
    levels = captured["backbone"]                               # [B, V, C, h, w] per level
    valid = [v for v in range(frames[-1].cam_mask.shape[1]) if v not in FAILED_CAMERAS]
    completed = outputs["completion"]["features"]
    for level, (before, after) in enumerate(zip(levels, completed)):
        if before.shape != after.shape:
            continue
        assert torch.equal(after[:, valid], before[:, valid]), level
        assert not torch.equal(after[:, FAILED_CAMERAS], before[:, FAILED_CAMERAS]), level


def test_full_config_on_cuda_in_fp32_matches_the_cpu():
    """The full configuration (7 x 512 x 960, 120k points), random weights, two frames with two failed
    cameras: completed features and the fused BEV agree with the CPU."""
    torch.manual_seed(0)
    cfg = load_model_config("full")
    rig = cfg.load_rig()
    model = build_detector(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    frames = []
    for step in range(2):
        images = torch.randint(0, 256, (1, rig.num_cameras, 3, rig.image_height, rig.image_width), dtype=torch.uint8,
                               generator=gen)
        inputs = toy_scene.frame(rig, 0.1 * step, gen, images, lidar=cfg.lidar.enable)
        inputs.cam_mask[0, FAILED_CAMERAS] = step > 0
        frames.append(inputs)
    reference = run_sequence(model, frames, "cpu", None)
    on_gpu = run_sequence(model, frames, DEVICE, None)
    for index, (expected, actual) in enumerate(zip(reference, on_gpu)):
        for level, (a, e) in enumerate(zip(actual["features"], expected["features"])):
            assert relative_error(a, e) <= 1e-4, (index, level, relative_error(a, e))
        assert relative_error(actual["bev"], expected["bev"]) <= 1e-4, index


def test_an_amp_training_step_lowers_the_loss():
    """bf16 autocast on CUDA, as training runs there (TrainConfig.amp): repeated steps on one batch
    lower the total loss."""
    model, rig = micro_model(seed=0)
    model = model.to(DEVICE).train()
    gen = torch.Generator().manual_seed(3)
    inputs = toy_scene.frame(rig, 0.0, gen, torch.rand(1, rig.num_cameras, 3, 64, 128, generator=gen)).to(DEVICE)
    targets = [{k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in toy_scene.targets_at(0.0).items()}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        with torch.autocast(device_type=DEVICE, dtype=torch.bfloat16):
            total = sum(model(inputs, None, targets)["losses"].values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        losses.append(total.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses


def test_ddp_with_nccl_on_one_gpu_steps_with_the_local_gradient(tmp_path):
    """torchrun, one process, NCCL: the DDP gradient equals the gradient without DDP."""
    out = tmp_path / "grads.pt"
    env = {**os.environ, "DDP_TEST_OUT": str(out), "DDP_BACKEND": "nccl" if DEVICE == "cuda" else "gloo",
           "MASTER_ADDR": "127.0.0.1"}
    helper = Path(__file__).parent / "helpers" / "ddp_gradients.py"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1",
                           "--master_addr", "127.0.0.1", "--master_port", str(29500 + os.getpid() % 1000), str(helper)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    grads = torch.load(out)
    assert grads["local"].abs().sum() > 0
    torch.testing.assert_close(grads["ddp"][0], grads["local"][0], rtol=1e-5, atol=1e-7)
