"""Train and evaluate the completion cascade alone on a synthetic feature task.

Two-frame episodes in a DirectionalFeatureWorld: the ego turns by 10-30 deg
between a past frame (all cameras healthy) and the current frame, in which
1-2 cameras fail (their features are zero). The cascade must bring the
failed cameras' features close to the teacher's (the true features).
Used by the tests and by ``bench/completion_feature_task.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..camera_dropout import RandCamMask
from ..data.feature_world import DirectionalFeatureWorld, yaw_pose
from ..geometry import Calibration
from ..models.completion.cascade import CompletionCascade

STRIDES = (8, 16, 32, 64)
FRAME_INTERVAL_US = 100_000


@dataclass
class Episode:
    calibration: Calibration
    past_pose: Tensor                 # [B, 4, 4]
    current_pose: Tensor
    past_features: list[Tensor]       # per level [B, V, C, h, w]
    teacher: list[Tensor]             # current frame, true features
    student: list[Tensor]             # current frame, failed cameras zeroed
    cam_mask: Tensor                  # [B, V]


def sample_episode(world: DirectionalFeatureWorld, calibration: Calibration, gen: torch.Generator) -> Episode:
    batch, cameras = calibration.intrinsics.shape[:2]
    start = torch.rand(batch, generator=gen) * 2 * math.pi
    turn = (torch.rand(batch, generator=gen) * 20 + 10) * math.pi / 180
    turn = turn * torch.where(torch.rand(batch, generator=gen) < 0.5, -1.0, 1.0)
    past_pose, current_pose = yaw_pose(start), yaw_pose(start + turn)
    cam_mask = RandCamMask(1.0, 1, 2, gen).sample_mask(batch, cameras)
    teacher = world.features(calibration, current_pose, STRIDES)
    keep = (~cam_mask)[..., None, None, None].float()
    return Episode(calibration, past_pose, current_pose, world.features(calibration, past_pose, STRIDES),
                   teacher, [t * keep for t in teacher], cam_mask)


def run_episode(cascade: CompletionCascade, episode: Episode) -> dict:
    batch = episode.cam_mask.shape[0]
    timestamps = torch.arange(batch, dtype=torch.int64) * 0 + 1_000_000
    healthy = torch.zeros_like(episode.cam_mask)
    past = cascade(episode.past_features, healthy, episode.calibration, episode.past_pose, timestamps,
                   cascade.initial_state())
    return cascade(episode.student, episode.cam_mask, episode.calibration, episode.current_pose,
                   timestamps + FRAME_INTERVAL_US, past["state"])


def train(cascade: CompletionCascade, world: DirectionalFeatureWorld, calibration: Calibration, steps: int,
          seed: int = 0, lr: float = 2e-3) -> list[float]:
    """Adam on the cascade's own losses; returns the loss of every step."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(cascade.parameters(), lr=lr)
    cascade.train()
    history = []
    for _ in range(steps):
        episode = sample_episode(world, calibration, gen)
        outputs = run_episode(cascade, episode)
        loss = sum(cascade.losses(outputs, episode.teacher, episode.cam_mask).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history


@torch.no_grad()
def evaluate(cascade: CompletionCascade, world: DirectionalFeatureWorld, calibration: Calibration,
             episodes: int = 10, seed: int = 1000) -> dict[str, list[float]]:
    """Per level, MSE of the completed failed cameras against the teacher and
    the MSE of zero-filling (what a failed camera gives without completion)."""
    gen = torch.Generator().manual_seed(seed)
    cascade.eval()
    completed_error = torch.zeros(len(STRIDES))
    zero_error = torch.zeros(len(STRIDES))
    for _ in range(episodes):
        episode = sample_episode(world, calibration, gen)
        outputs = run_episode(cascade, episode)
        for level, (out, teacher) in enumerate(zip(outputs["features"], episode.teacher)):
            failed_teacher = teacher[episode.cam_mask]
            completed_error[level] += torch.mean((out[episode.cam_mask] - failed_teacher) ** 2)
            zero_error[level] += torch.mean(failed_teacher ** 2)
    return {"completed_mse": (completed_error / episodes).tolist(), "zero_fill_mse": (zero_error / episodes).tolist()}
