"""Weight averaging ("model soup", Wortsman et al. 2022): the mean of models fine-tuned from one start.

Stages that start from the same weights and train on with other recipes (more
scenes and cameras failed, velocity weighed more) stay in one basin of the
loss, so the mean of their weights is a model too, often better than each:
docs/data_training_evaluation.md, "Stage 8: the average of stages 5, 6 and 7".

    python -m sparsecomp_core.training.average_weights --out checkpoints/tiny_averaged/model.pt \\
        checkpoints/tiny_stage5/model.pt checkpoints/tiny_stage6/model.pt checkpoints/tiny_stage7/model.pt

Floating-point tensors are averaged (in float64, stored in their own dtype);
every other tensor (counters) must be equal in all inputs. The inputs must
have the same tensors of the same shapes. The result keeps the first input's
model config (what differs between stages is how they trained, not the model)
and names its inputs under ``averaged_from``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..models.detector import read_checkpoint, write_checkpoint


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts with the same keys and shapes (float tensors;
    other tensors must be equal and are kept)."""
    if not states:
        raise ValueError("nothing to average")
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


def average_checkpoints(paths: list[str | Path], out: str | Path) -> Path:
    """Write the average of the model checkpoints at ``paths`` to ``out`` (``{"model",
    "model_config", "averaged_from"}``, atomically)."""
    checkpoints = [read_checkpoint(path) for path in paths]
    for path, checkpoint in zip(paths, checkpoints):
        if "model" not in checkpoint or "model_config" not in checkpoint:
            raise ValueError(f"{path} is not a model checkpoint (needs 'model' and 'model_config')")
    averaged = average_state_dicts([checkpoint["model"] for checkpoint in checkpoints])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(out, {"model": averaged, "model_config": checkpoints[0]["model_config"],
                                  "averaged_from": [str(path) for path in paths]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="model checkpoints (model.pt) fine-tuned from one start")
    parser.add_argument("--out", required=True, help="where to write the averaged model.pt")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("give at least two checkpoints to average")
    print(average_checkpoints(args.checkpoints, args.out))


if __name__ == "__main__":
    main()
