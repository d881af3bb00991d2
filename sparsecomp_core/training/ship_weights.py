"""A trained checkpoint as the file a model ships as: its weights and model config, with the
track filter of the current model config.

The track filter is post-processing without weights (head/track_filter.py), tuned after
a model trained, so the shipped file takes the current ``config/model/<model>.yaml``'s
filter, not the one the weights trained with; everything else of the model config is
the checkpoint's. scripts/train_default.sh exports its result with this, and a
candidate evaluated beside the shipped model should be exported the same way:

    python -m sparsecomp_core.training.ship_weights --model tiny \\
        checkpoints/tiny_shipped/model.pt checkpoints/tiny_default.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import to_dict
from ..models.detector import read_checkpoint, write_checkpoint
from ..models.model_config import load_model_config


def ship_weights(checkpoint: str | Path, out: str | Path, model: str) -> Path:
    """Writes ``{"model": weights, "model_config": config}`` to ``out``: the checkpoint's
    weights and model config with ``model``'s current track filter. Returns ``out``."""
    state = read_checkpoint(checkpoint)
    config = dict(state["model_config"])
    config["track_filter"] = to_dict(load_model_config(model).track_filter)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_checkpoint(out, {"model": state["model"], "model_config": config})


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model config (config/model/<model>.yaml) of the track filter")
    parser.add_argument("checkpoint", help="trained weights (a training's model.pt or an average)")
    parser.add_argument("out", help="the file to write, e.g. checkpoints/tiny_default.pt")
    args = parser.parse_args(argv)
    out = ship_weights(args.checkpoint, args.out, args.model)
    print("wrote", out)
    return out


if __name__ == "__main__":
    main()
