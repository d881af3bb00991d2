"""Freeze schedules and per-group learning rates, by module name.

``freeze_module_schedules`` maps a module path (as in ``model.named_modules()``,
e.g. ``camera_branch.backbone.fpn``) to the step until which it is frozen:
frozen = ``step < until``. Frozen modules get ``requires_grad = False`` (no
gradient at all) and their batch norms stay in eval mode.
"""
from __future__ import annotations

from torch import nn


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        top = sorted({n.split(".")[0] for n, _ in model.named_modules() if n})
        raise ValueError(f"freeze/learning-rate group {name!r} is not a module of the model "
                         f"(top-level modules: {top})") from exc


def apply_freeze_schedule(model: nn.Module, schedules: dict[str, int], step: int) -> list[str]:
    """Freeze or unfreeze each scheduled module for ``step``; call after
    ``model.train()`` each step. Returns the names frozen now."""
    frozen = []
    for name, until in schedules.items():
        module = _module(model, name)
        freeze = step < until
        for parameter in module.parameters():
            parameter.requires_grad_(not freeze)
        if freeze:
            for sub in module.modules():
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    sub.eval()
            frozen.append(name)
    return frozen


def keep_norms_in_eval(model: nn.Module) -> int:
    """Put every batch norm of ``model`` in eval mode (running statistics, which
    then stay as they are; the affine parameters still train), as mmdetection's
    ``norm_eval`` does for small batches; call after ``model.train()`` each step.
    Returns how many batch norms it set."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.eval()
    return len(norms)


def parameter_groups(model: nn.Module, base_lr: float, lr_scales: dict[str, float],
                     weight_decay: float = 0.0) -> list[dict]:
    """Optimizer groups: each parameter takes the scale of the longest module
    name in ``lr_scales`` that contains it (1.0 otherwise)."""
    parameters = dict(model.named_parameters())
    for name in lr_scales:
        if name not in parameters:       # a single parameter may take its own scale too
            _module(model, name)
    groups: dict[float, list] = {}
    for param_name, parameter in model.named_parameters():
        matches = [n for n in lr_scales if param_name == n or param_name.startswith(n + ".")]
        scale = lr_scales[max(matches, key=len)] if matches else 1.0
        groups.setdefault(scale, []).append(parameter)
    return [{"params": params, "lr": base_lr * scale, "lr_scale": scale, "weight_decay": weight_decay}
            for scale, params in groups.items()]
