"""Weight averaging (training/average_weights.py): the shipped camera + LiDAR model is the
mean of stages 5, 6 and 7."""
from __future__ import annotations

import pytest
import torch

from sparsecomp_core.config import to_dict
from sparsecomp_core.models.detector import build_detector, load_detector
from sparsecomp_core.training.average_weights import average_checkpoints, average_state_dicts

from test_detector import micro_config


def test_the_average_is_the_element_wise_mean_and_keeps_counters():
    a = {"weight": torch.tensor([1.0, 2.0]), "half": torch.tensor([1.0], dtype=torch.float16),
         "batches": torch.tensor(7)}
    b = {"weight": torch.tensor([3.0, 6.0]), "half": torch.tensor([2.0], dtype=torch.float16),
         "batches": torch.tensor(7)}
    mean = average_state_dicts([a, b])
    assert torch.equal(mean["weight"], torch.tensor([2.0, 4.0]))
    assert mean["half"].dtype == torch.float16 and float(mean["half"]) == 1.5
    assert int(mean["batches"]) == 7
    assert torch.equal(average_state_dicts([a, a, a])["weight"], a["weight"])   # of one model: itself


@pytest.mark.parametrize("case", ["other tensors", "other shape", "counters differ"])
def test_inputs_that_are_not_one_model_are_refused(case):
    a = {"weight": torch.zeros(2), "batches": torch.tensor(7)}
    b = {"other tensors": {"weight": torch.zeros(2), "bias": torch.zeros(1), "batches": torch.tensor(7)},
         "other shape": {"weight": torch.zeros(3), "batches": torch.tensor(7)},
         "counters differ": {"weight": torch.zeros(2), "batches": torch.tensor(8)}}[case]
    with pytest.raises(ValueError):
        average_state_dicts([a, b])


def test_averaged_checkpoints_load_as_a_detector_with_the_mean_weights(tmp_path):
    cfg = micro_config()
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_detector(cfg)
        paths.append(tmp_path / f"stage{seed}.pt")
        torch.save({"model": model.state_dict(), "model_config": to_dict(cfg)}, paths[-1])
    out = average_checkpoints(paths, tmp_path / "averaged" / "model.pt")
    model, loaded_cfg = load_detector(out)
    first, second = (torch.load(p, weights_only=True)["model"] for p in paths)
    name = next(n for n, v in first.items() if v.is_floating_point() and not torch.equal(v, second[n]))
    torch.testing.assert_close(model.state_dict()[name], (first[name] + second[name]) / 2)
    assert torch.load(out, weights_only=True)["averaged_from"] == [str(p) for p in paths]
    assert to_dict(loaded_cfg) == to_dict(cfg)


def test_a_tensor_only_some_inputs_hold_counts_as_zeros_only_when_asked():
    marked = {"weight": torch.tensor([1.0, 2.0]), "completed": torch.tensor([4.0, -2.0]), "batches": torch.tensor(7)}
    plain = {"weight": torch.tensor([3.0, 6.0]), "batches": torch.tensor(7)}
    with pytest.raises(ValueError, match="other tensors"):
        average_state_dicts([marked, plain])
    mean = average_state_dicts([marked, plain], missing_as_zero=True)
    assert torch.equal(mean["completed"], torch.tensor([2.0, -1.0]))     # (4 + 0) / 2, (-2 + 0) / 2
    assert torch.equal(mean["weight"], torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match="not floating point"):            # a counter has no neutral value
        average_state_dicts([marked, {"weight": torch.zeros(2)}], missing_as_zero=True)


def test_a_soup_with_a_model_lacking_the_completed_vector_keeps_the_marked_config(tmp_path):
    marked_cfg = micro_config()
    marked_cfg.view_transform.completed_embedding = True
    plain_cfg = micro_config()
    torch.manual_seed(0)
    marked = build_detector(marked_cfg)
    with torch.no_grad():
        marked.view_transform.completed.fill_(0.5)
    torch.manual_seed(1)
    plain = build_detector(plain_cfg)
    paths = [tmp_path / "marked.pt", tmp_path / "plain.pt"]
    torch.save({"model": marked.state_dict(), "model_config": to_dict(marked_cfg)}, paths[0])
    torch.save({"model": plain.state_dict(), "model_config": to_dict(plain_cfg)}, paths[1])
    with pytest.raises(ValueError, match="first input must hold every tensor"):
        average_checkpoints(paths[::-1], tmp_path / "wrong.pt", missing_as_zero=True)
    model, cfg = load_detector(average_checkpoints(paths, tmp_path / "soup.pt", missing_as_zero=True))
    assert cfg.view_transform.completed_embedding
    assert torch.allclose(model.view_transform.completed, torch.full_like(model.view_transform.completed, 0.25))
