"""Weight averaging ("model soup", Wortsman et al. 2022): the mean of models fine-tuned from one start.

Stages that start from the same weights and train on with other recipes (more
scenes and cameras failed, velocity weighed more) stay in one basin of the
loss, so the mean of their weights is a model too, often better than each:
docs/data_training_evaluation.md, "Stage 8: the average of stages 5, 6 and 7".

    python -m sparsecomp_core.training.average_weights --out checkpoints/tiny_averaged/model.pt \\
        checkpoints/tiny_stage5/model.pt checkpoints/tiny_stage6/model.pt checkpoints/tiny_stage7/model.pt

Floating-point tensors are averaged (in float64, stored in their own dtype);
every other tensor (counters) must be equal in all inputs. The inputs must
have the same tensors of the same shapes, except with ``--missing-as-zero``:
then a floating-point tensor that some inputs lack counts as zeros in them. That
is right only for a parameter an option adds at zero (``completed_embedding``,
``absent_embedding``): a model without it computes what the same model with it
at zero computes, so a fine-tune of the plain model and one of the model with the
option still share their start. The result keeps the first input's
model config (what differs between stages is how they trained, not the model)
and names its inputs under ``averaged_from``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..models.detector import read_checkpoint, write_checkpoint


def average_state_dicts(states: list[dict[str, torch.Tensor]], missing_as_zero: bool = False) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (float tensors;
    other tensors must be equal and are kept). With ``missing_as_zero`` a float tensor
    that some states lack is zeros in them (the others' shapes must agree)."""
    if not states:
        raise ValueError("nothing to average")
    if missing_as_zero:
        states = fill_missing_with_zeros(states)
    first = states[0]
    for index, state in enumerate(states[1:], start=1):
        if state.keys() != first.keys():
            differ = sorted(set(state) ^ set(first))
            raise ValueError(f"input {index} has other tensors than input 0: {differ[:5]}")
        for name, value in state.items():
            if value.shape != first[name].shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} in input {index}, "
                                 f"{tuple(first[name].shape)} in input 0")
    averaged = {}
    for name, value in first.items():
        if value.is_floating_point():
            mean = sum(state[name].double() for state in states) / len(states)
            averaged[name] = mean.to(value.dtype)
        else:
            if not all(torch.equal(state[name], value) for state in states):
                raise ValueError(f"{name} ({value.dtype}) differs between the inputs and cannot be averaged")
            averaged[name] = value.clone()
    return averaged


def fill_missing_with_zeros(states: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    """The states, each given zeros for the float tensors that only others hold; the
    model config of the result must then be that of an input holding every tensor."""
    everything: dict[str, torch.Tensor] = {}
    for state in states:
        for name, value in state.items():
            everything.setdefault(name, value)
    filled = []
    for state in states:
        missing = {name: torch.zeros_like(value) for name, value in everything.items() if name not in state}
        counters = [name for name, value in missing.items() if not value.is_floating_point()]
        if counters:
            raise ValueError(f"only some inputs hold {counters[:5]}, which are not floating point")
        filled.append({**state, **missing})
    return filled


def average_checkpoints(paths: list[str | Path], out: str | Path, missing_as_zero: bool = False) -> Path:
    """Write the average of the model checkpoints at ``paths`` to ``out`` (``{"model",
    "model_config", "averaged_from"}``, atomically). The model config is the first
    input's: with ``missing_as_zero`` the first must hold every tensor."""
    checkpoints = [read_checkpoint(path) for path in paths]
    for path, checkpoint in zip(paths, checkpoints):
        if "model" not in checkpoint or "model_config" not in checkpoint:
            raise ValueError(f"{path} is not a model checkpoint (needs 'model' and 'model_config')")
    if missing_as_zero:
        lacking = set().union(*(c["model"].keys() for c in checkpoints)) - set(checkpoints[0]["model"])
        if lacking:
            raise ValueError(f"with missing_as_zero the first input must hold every tensor; it lacks {sorted(lacking)[:5]}")
    averaged = average_state_dicts([checkpoint["model"] for checkpoint in checkpoints], missing_as_zero)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(out, {"model": averaged, "model_config": checkpoints[0]["model_config"],
                                  "averaged_from": [str(path) for path in paths]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="model checkpoints (model.pt) fine-tuned from one start")
    parser.add_argument("--out", required=True, help="where to write the averaged model.pt")
    parser.add_argument("--missing-as-zero", action="store_true",
                        help="a float tensor only some inputs hold (a parameter an option adds at zero) is zeros in "
                             "the others; the first input must hold every tensor (its model config is kept)")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints to average")
    print(average_checkpoints(args.checkpoints, args.out, args.missing_as_zero))


if __name__ == "__main__":
    main()
