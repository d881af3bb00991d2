"""Checkpoints load safely (weights_only=True) and every failure names the file and
what is wrong; a rig mismatch between checkpoint and data or caller is an error."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT
from sparsecomp_core.data.dataset import SequenceDataset, StreamSampler
from sparsecomp_core.evaluation import evaluate as evaluate_cli
from sparsecomp_core.evaluation.evaluate import evaluate, standard_conditions
from sparsecomp_core.models.detector import (CheckpointError, build_detector, checkpoint_cameras, load_detector,
                                             read_checkpoint)
from sparsecomp_core.training.train import TrainConfig, save_checkpoint

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from eval_fixtures import micro_checkpoint, small_dataset  # noqa: E402

SHIPPED = REPO_ROOT / "models" / "tiny_default.pt"
DEFAULT7 = ["CAM_FRONT_WIDE", "CAM_FRONT_TELE", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_REAR_LEFT",
            "CAM_REAR_RIGHT", "CAM_REAR"]


def test_the_shipped_model_loads_with_weights_only():
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    assert set(state) == {"model", "model_config"}
    model, cfg = load_detector(SHIPPED, "cpu", expected_cameras=DEFAULT7)
    # tiny with the completed-cells vector (stage 13's, through the means after it: scripts/train_default.sh)
    assert cfg.name == "tiny_marked" and cfg.view_transform.completed_embedding and not model.training
    assert model.view_transform.completed.abs().sum() > 0
    weights = model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())
    assert checkpoint_cameras(SHIPPED) == DEFAULT7


@pytest.mark.parametrize("expected", [DEFAULT7[::-1], DEFAULT7[:6],
                                      ["CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT",
                                       "CAM_BACK_RIGHT", "CAM_BACK"]])
def test_expected_cameras_that_differ_in_names_or_order_are_refused(tmp_path, expected):
    checkpoint = micro_checkpoint(tmp_path / "micro.pt")
    with pytest.raises(ValueError) as error:
        load_detector(checkpoint, expected_cameras=expected)
    message = str(error.value)
    assert str(checkpoint) in message and str(DEFAULT7) in message and str(expected) in message


def test_missing_corrupt_and_foreign_files_are_named_with_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_detector(tmp_path / "nothing.pt")
    good = micro_checkpoint(tmp_path / "micro.pt")
    cases = {"text.pt": b"this is not a checkpoint\n", "empty.pt": b"",
             "truncated.pt": good.read_bytes()[: good.stat().st_size // 2]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as error:
            load_detector(tmp_path / name)
        assert str(error.value).startswith(f"{tmp_path / name} is not a sparsecomp checkpoint "
                                           "(corrupt or not a torch file): "), name

    torch.save({"model": {}, "model_config": {}, "extra": torch.nn.Linear(1, 1)}, tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match="unsupported global torch.nn.modules.linear.Linear"):
        load_detector(tmp_path / "object.pt")
    torch.save(build_detector(load_detector(good)[1]).state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="bare state dict"):
        load_detector(tmp_path / "bare.pt")
    state = read_checkpoint(good)
    state["model_config"]["bev_channels"] = 48                      # weights of another model size
    torch.save(state, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="weights do not fit its model config"):
        load_detector(tmp_path / "mismatch.pt")


def test_training_checkpoints_load_for_evaluation_or_say_which_file_to_use(tmp_path):
    model, cfg = load_detector(micro_checkpoint(tmp_path / "micro.pt", seed=3))
    optimizer = torch.optim.AdamW(model.parameters())
    sampler = StreamSampler([5, 7], 2, streaming=True, seed=1)
    save_checkpoint(tmp_path / "last.pt", model, optimizer, sampler, 250, TrainConfig(), cfg)
    state = torch.load(tmp_path / "last.pt", weights_only=True)      # resume reads it safely too
    assert state["step"] == 250 and "optimizer" in state and "sampler" in state
    loaded, loaded_cfg = load_detector(tmp_path / "last.pt")
    assert loaded_cfg == cfg
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())

    del state["model_config"]                                         # a last.pt from before it stored the config
    (tmp_path / "old").mkdir()
    torch.save(state, tmp_path / "old" / "last.pt")
    with pytest.raises(CheckpointError) as error:
        load_detector(tmp_path / "old" / "last.pt")
    message = str(error.value)
    assert "training checkpoint (step 250) without the model config" in message
    assert str(tmp_path / "old" / "model.pt") in message


def test_a_checkpoint_evaluated_on_data_of_another_rig_is_an_error(tmp_path, monkeypatch):
    data = small_dataset(tmp_path / "data", rig="nuscenes6", frames=2)
    checkpoint = micro_checkpoint(tmp_path / "micro.pt")                 # default7
    model, cfg = load_detector(checkpoint)
    dataset = SequenceDataset(str(data), "v1.0-eval", cfg.load_rig())
    with pytest.raises(ValueError, match="rig mismatch") as error:
        evaluate(model, dataset, standard_conditions(DEFAULT7)["clean"], progress=False)
    message = str(error.value)
    assert "missing from the data: ['CAM_FRONT_WIDE', 'CAM_FRONT_TELE'" in message and "'CAM_BACK'" in message
    monkeypatch.setattr(sys, "argv", ["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data),
                                      "--version", "v1.0-eval", "--device", "cpu"])
    with pytest.raises(ValueError, match=f"rig mismatch: {checkpoint} uses the cameras"):
        evaluate_cli.main()
