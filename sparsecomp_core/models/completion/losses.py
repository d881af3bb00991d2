"""Losses of the completion cascade (SPEC 4.4). All are means over failed
cameras only, averaged over FPN levels; zero when no camera failed.

``relative``: each level's squared error is divided by the mean square of the
teacher's features there (failed cameras, no gradient), so a term is the
completion error as a fraction of a zero fill's; with ``centred`` as well, by
the teacher's variance about each channel's mean instead, so a term is the
error as a fraction of a per-channel-mean fill's (most of a trained
backbone's mean square is per-channel constant, docs/completion.md). In
feature units (the default) the terms grow with the backbone's feature
scale, which training raises (teacher RMS 2 -> 32 in the tiny recipe), until
their gradient dwarfs the detection losses' and the gradient clip scales
detection learning down (docs/completion.md, "Loss scale")."""
from __future__ import annotations

import torch
from torch import Tensor


def _failed(features: Tensor, cam_mask: Tensor) -> Tensor:
    return features[cam_mask]                                  # [N_failed, C, h, w]


def _scale(teacher_failed: Tensor, relative: bool, centred: bool = False) -> Tensor:
    """The divisor of a level's squared error (detached): 1, the teacher's mean square, or (centred)
    its variance about each channel's mean. teacher_failed: [N_failed, C, h, w]."""
    if not relative:
        return teacher_failed.new_ones(())
    teacher = teacher_failed.detach().float()
    if centred:
        teacher = teacher - teacher.mean(dim=(0, 2, 3), keepdim=True)
    return teacher.pow(2).mean().clamp(min=1e-6)


def ssl_consistency_loss(student: list[Tensor], teacher: list[Tensor], cam_mask: Tensor,
                         relative: bool = False, centred: bool = False) -> Tensor:
    """MSE between completed student features and the teacher's, failed cameras only."""
    if not bool(cam_mask.any()):
        return student[0].new_zeros(())
    terms = []
    for s, t in zip(student, teacher):
        target = _failed(t, cam_mask).detach()
        terms.append(torch.mean((_failed(s, cam_mask) - target) ** 2) / _scale(target, relative, centred))
    return torch.stack(terms).mean()


def vae_reconstruction_loss(reconstructions: list[Tensor], teacher: list[Tensor], cam_mask: Tensor,
                            relative: bool = False, centred: bool = False) -> Tensor:
    """MSE(reconstruction [N_failed, C, h, w], teacher of the failed cameras)."""
    if not reconstructions:
        return teacher[0].new_zeros(())
    terms = []
    for r, t in zip(reconstructions, teacher):
        target = _failed(t, cam_mask).detach()
        terms.append(torch.mean((r - target) ** 2) / _scale(target, relative, centred))
    return torch.stack(terms).mean()


def vae_kl_loss(mu: list[Tensor], logvar: list[Tensor]) -> Tensor:
    """KL(q(z|x) || N(0, I)), mean over latent elements."""
    if not mu:
        return torch.zeros(())
    return torch.stack([torch.mean(-0.5 * (1 + lv - m ** 2 - lv.exp())) for m, lv in zip(mu, logvar)]).mean()


def planning_guided_loss(completed: list[Tensor], teacher: list[Tensor], importance: list[Tensor],
                         cam_mask: Tensor, relative: bool = False, centred: bool = False) -> Tensor:
    """Importance-weighted MSE of level-3 completions; zero without a path."""
    if not completed:
        return teacher[0].new_zeros(())
    terms = []
    for comp, t, imp in zip(completed, teacher, importance):
        weight = imp[cam_mask][:, None]                        # [N_failed, 1, h, w]
        target = _failed(t, cam_mask).detach()
        error = ((comp - target) ** 2 * weight).sum()
        terms.append(error / (weight.sum() * comp.shape[1]).clamp(min=1e-6) / _scale(target, relative, centred))
    return torch.stack(terms).mean()
