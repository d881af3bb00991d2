"""Small checkpoints and data sets for the evaluation and checkpoint tests."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from test_detector import micro_config  # noqa: E402

from sparsecomp_core.data.synthetic.generate import generate  # noqa: E402
from sparsecomp_core.models.detector import build_detector, save_model_checkpoint  # noqa: E402

SMALL_DATA = dict(image_size=(64, 128), lidar_beams=8, lidar_azimuths=128, progress=False)


def micro_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    """A randomly initialised micro model (test_detector.micro_config) saved as training saves model.pt."""
    torch.manual_seed(seed)
    cfg = micro_config(**overrides)
    return save_model_checkpoint(path, build_detector(cfg), cfg)


def small_dataset(root: Path, version: str = "v1.0-eval", rig: str = "default7", seed: int = 9, scenes: int = 1,
                  frames: int = 4, **overrides) -> Path:
    generate(root, version, rig, seed=seed, scenes=scenes, frames=frames, **{**SMALL_DATA, **overrides})
    return root
