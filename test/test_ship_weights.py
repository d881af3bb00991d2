"""Shipping a checkpoint (training/ship_weights.py): the weights and model config it trained
with, the track filter of the current model config."""
from __future__ import annotations

import torch

from sparsecomp_core.config import to_dict
from sparsecomp_core.models.detector import build_detector, load_detector
from sparsecomp_core.models.model_config import load_model_config
from sparsecomp_core.training.ship_weights import main

from test_detector import micro_config


def test_shipped_file_keeps_the_weights_and_takes_the_current_track_filter(tmp_path):
    cfg = micro_config()
    trained_with = to_dict(cfg)
    trained_with["track_filter"] = {**trained_with["track_filter"], "gate_m": 1.25, "enabled": False}
    torch.manual_seed(0)
    model = build_detector(cfg)
    checkpoint = tmp_path / "stage" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": model.state_dict(), "model_config": trained_with, "optimizer": {"step": 3}}, checkpoint)

    out = main(["--model", "tiny", str(checkpoint), str(tmp_path / "shipped" / "tiny_default.pt")])

    shipped = torch.load(out, weights_only=True)
    assert set(shipped) == {"model", "model_config"}             # no training state in a shipped file
    current = to_dict(load_model_config("tiny").track_filter)
    assert shipped["model_config"]["track_filter"] == current != trained_with["track_filter"]
    rest = {k: v for k, v in shipped["model_config"].items() if k != "track_filter"}
    assert rest == {k: v for k, v in trained_with.items() if k != "track_filter"}
    loaded, _ = load_detector(out)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
