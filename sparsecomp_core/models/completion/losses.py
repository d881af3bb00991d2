"""Losses of the completion cascade (SPEC 4.4). All are means over failed
cameras only, averaged over FPN levels; zero when no camera failed."""
from __future__ import annotations

import torch
from torch import Tensor


def _failed(features: Tensor, cam_mask: Tensor) -> Tensor:
    return features[cam_mask]                                  # [N_failed, C, h, w]


def ssl_consistency_loss(student: list[Tensor], teacher: list[Tensor], cam_mask: Tensor) -> Tensor:
    """MSE between completed student features and the teacher's, failed cameras only."""
    if not bool(cam_mask.any()):
        return student[0].new_zeros(())
    return torch.stack([torch.mean((_failed(s, cam_mask) - _failed(t, cam_mask).detach()) ** 2)
                        for s, t in zip(student, teacher)]).mean()


def vae_reconstruction_loss(reconstructions: list[Tensor], teacher: list[Tensor], cam_mask: Tensor) -> Tensor:
    """MSE(reconstruction [N_failed, C, h, w], teacher of the failed cameras)."""
    if not reconstructions:
        return teacher[0].new_zeros(())
    return torch.stack([torch.mean((r - _failed(t, cam_mask).detach()) ** 2)
                        for r, t in zip(reconstructions, teacher)]).mean()


def vae_kl_loss(mu: list[Tensor], logvar: list[Tensor]) -> Tensor:
    """KL(q(z|x) || N(0, I)), mean over latent elements."""
    if not mu:
        return torch.zeros(())
    return torch.stack([torch.mean(-0.5 * (1 + lv - m ** 2 - lv.exp())) for m, lv in zip(mu, logvar)]).mean()


def planning_guided_loss(completed: list[Tensor], teacher: list[Tensor], importance: list[Tensor],
                         cam_mask: Tensor) -> Tensor:
    """Importance-weighted MSE of level-3 completions; zero without a path."""
    if not completed:
        return teacher[0].new_zeros(())
    terms = []
    for comp, t, imp in zip(completed, teacher, importance):
        weight = imp[cam_mask][:, None]                        # [N_failed, 1, h, w]
        error = ((comp - _failed(t, cam_mask).detach()) ** 2 * weight).sum()
        terms.append(error / (weight.sum() * comp.shape[1]).clamp(min=1e-6))
    return torch.stack(terms).mean()
