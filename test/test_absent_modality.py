"""A missing modality is a learned "absent" vector, the same in training and inference.

Without it, a frame with every camera failed gives a camera BEV of the output
block applied to zeros, and a frame without LiDAR the BEV backbone applied to
an empty map: what the batch norms make of that depends on the batch it is in
(training) or on the running statistics (inference), so a model trained to
detect without a modality meets another input at inference (docs/model.md,
"Sensor dropout"). ``norm_eval`` keeps every batch norm on its running
statistics in training.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml

from sparsecomp_core.config import to_dict
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.deploy.lidar_bucket import PaddedLidarBranch, pad_points
from sparsecomp_core.models.detector import build_detector
from sparsecomp_core.training.freeze import keep_norms_in_eval
from sparsecomp_core.training.train import train

sys.path.insert(0, str(Path(__file__).parent))
from test_detector import MICRO, micro_config  # noqa: E402
from test_training import config  # noqa: E402


ABSENT = {"view_transform": {**MICRO["view_transform"], "absent_embedding": True},
          "lidar": {**MICRO["lidar"], "absent_embedding": True}}


def micro_pair(**overrides):
    """The same micro detector (same weights) without and with absent embeddings; the
    absent vectors set to random values so they cannot pass for zeros."""
    cfg_plain = micro_config(**overrides)
    cfg_absent = micro_config(**overrides, **ABSENT)
    torch.manual_seed(0)
    plain = build_detector(cfg_plain)
    torch.manual_seed(0)
    absent = build_detector(cfg_absent)
    missing, unexpected = absent.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["lidar.absent", "view_transform.absent"] and not unexpected
    with torch.no_grad():
        absent.view_transform.absent.normal_()
        absent.lidar.absent.normal_()
    return plain, absent, cfg_plain.load_rig()


def camera_features(rig, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, rig.num_cameras, 32, 8, 16, generator=generator)


def test_with_every_camera_failed_the_camera_bev_is_the_absent_vector_in_training_and_inference():
    plain, absent, rig = micro_pair()
    features = camera_features(rig)
    no_cameras = torch.zeros(2, rig.num_cameras, dtype=torch.bool)
    no_cameras[0] = True                                        # sample 0 lost every camera, sample 1 none
    calibration = rig.calibration(2)
    bevs = {}
    for mode in ("train", "eval"):
        for name, model in (("plain", plain), ("absent", absent)):
            model.view_transform.train(mode == "train")
            with torch.no_grad():
                bevs[name, mode] = model.view_transform(features, no_cameras, calibration)
    expected = absent.view_transform.absent[0].expand_as(bevs["absent", "eval"][0])
    for mode in ("train", "eval"):
        torch.testing.assert_close(bevs["absent", mode][0], expected, rtol=0, atol=0)
    # Without it the same camera-less sample differs between a training batch and inference.
    assert (bevs["plain", "train"][0] - bevs["plain", "eval"][0]).abs().max() > 0.1
    # The sample whose cameras work is the plain transform's output wherever a camera sees.
    seen = (bevs["absent", "eval"][1] != absent.view_transform.absent[0]).any(0)
    assert seen.float().mean() > 0.5
    torch.testing.assert_close(bevs["absent", "eval"][1][:, seen], bevs["plain", "eval"][1][:, seen], rtol=0, atol=0)


def test_a_frame_without_lidar_points_is_the_absent_vector_and_one_with_points_is_unchanged():
    plain, absent, _ = micro_pair()
    generator = torch.Generator().manual_seed(2)
    cloud = torch.rand(800, 4, generator=generator) * torch.tensor([100.0, 90.0, 6.0, 255.0]) \
        - torch.tensor([40.0, 45.0, 3.0, 0.0])
    clouds = [torch.zeros(0, 4), cloud]
    outside = [torch.tensor([[500.0, 0.0, 0.0, 10.0]]), cloud]  # points, but none usable: no LiDAR either
    for mode in (False, True):      # inference first: training-mode calls move the running statistics
        plain.lidar.train(mode), absent.lidar.train(mode)
        with torch.no_grad():
            got, reference = absent.lidar(clouds), plain.lidar(clouds)
            torch.testing.assert_close(got[0], absent.lidar.absent[0].expand_as(got[0]), rtol=0, atol=0)
            torch.testing.assert_close(got[1], reference[1], rtol=0, atol=0)
            torch.testing.assert_close(absent.lidar(outside)[0], got[0], rtol=0, atol=0)
    absent.lidar.eval()
    with torch.no_grad():
        points, valid, _ = pad_points(clouds, 2, 1000, 4)
        points[~valid] = torch.tensor([1.0, 2.0, 0.5, 100.0])     # padding inside the grid
        torch.testing.assert_close(PaddedLidarBranch(absent.lidar)(points, valid), absent.lidar(clouds),
                                   atol=1e-5, rtol=0)


def test_norm_eval_trains_affine_parameters_but_keeps_running_statistics(tmp_path):
    """Stage 2 with norm_eval and both dropouts: every step normalises with stage 1's statistics,
    which come out unchanged, while the batch norms' affine parameters and the absent vectors train."""
    generate(tmp_path / "data", "v1.0-train", "default7", seed=4, scenes=2, frames=5, image_size=(64, 128),
             lidar_beams=8, lidar_azimuths=128, progress=False)
    model_yaml = tmp_path / "micro_absent.yaml"
    model_yaml.write_text(yaml.safe_dump(to_dict(micro_config(**ABSENT))))
    cfg = config(tmp_path, "start", 2)
    cfg.model = str(model_yaml)
    start = torch.load(train(cfg), weights_only=True)["model"]
    cfg = config(tmp_path, "norm_eval", 6, stage="stage2")
    cfg.model, cfg.init_from, cfg.norm_eval = str(model_yaml), str(tmp_path / "start" / "model.pt"), True
    cfg.lidar_dropout, cfg.camera_stream_dropout, cfg.freeze_module_schedules = 0.4, 0.4, {}
    end = torch.load(train(cfg), weights_only=True)["model"]
    log = [json.loads(line) for line in (tmp_path / "norm_eval" / "train_log.jsonl").read_text().splitlines()]
    assert sum(r["lidar_dropped"] for r in log) > 0 and sum(r["cameras_dropped"] for r in log) > 0
    statistics = [k for k in start if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    affine = [k[:-len("running_mean")] + "weight" for k in statistics if k.endswith("running_mean")]
    assert statistics and affine
    for key in statistics:
        torch.testing.assert_close(end[key], start[key], rtol=0, atol=0, msg=key)
    assert sum(not torch.equal(end[key], start[key]) for key in affine) > len(affine) // 2
    assert not torch.equal(end["lidar.absent"], start["lidar.absent"])
    assert not torch.equal(end["view_transform.absent"], start["view_transform.absent"])


def test_keep_norms_in_eval_sets_every_batch_norm_and_nothing_else():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                                torch.nn.Sequential(torch.nn.BatchNorm1d(4)))
    model.train()
    assert keep_norms_in_eval(model) == 2
    assert not model[1].training and not model[3][0].training
    assert model[0].training and model[2].training


def test_cells_only_completed_cameras_see_take_the_completed_vector_and_no_other_cell_changes():
    """A camera whose features were completed (a crashed one) is used like a live one, but the
    cells no live camera sees (its blind arc) get the learned "completed" vector added; every
    other cell is bit-identical, and with no completed camera nothing changes."""
    cfg_plain = micro_config(lidar={**MICRO["lidar"], "enable": False}, view_transform=ABSENT["view_transform"])
    cfg_marked = micro_config(lidar={**MICRO["lidar"], "enable": False},
                              view_transform={**ABSENT["view_transform"], "completed_embedding": True})
    torch.manual_seed(0)
    plain = build_detector(cfg_plain).eval()
    marked = build_detector(cfg_marked).eval()
    with torch.no_grad():
        plain.view_transform.absent.normal_()                 # not zeros, which a ReLU output can be
    missing, unexpected = marked.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["view_transform.completed"] and not unexpected
    assert not marked.view_transform.completed.any()          # zero at first: a loaded model is unchanged
    with torch.no_grad():
        marked.view_transform.completed.normal_()
    rig = cfg_plain.load_rig()
    calibration = rig.calibration(2)
    features = camera_features(rig)
    none_left_out = torch.zeros(2, rig.num_cameras, dtype=torch.bool)
    completed = none_left_out.clone()
    completed[0, 4] = True               # sample 0: the rear-left camera (crashed) completed; sample 1: none
    with torch.no_grad():
        expected = plain.view_transform(features, none_left_out, calibration)
        got = marked.view_transform(features, none_left_out, calibration, None, completed)
        without_camera = plain.view_transform(features, completed, calibration)   # the camera left out
    # The cells only that camera sees: those that become "absent" without it.
    blind = (without_camera[0] == plain.view_transform.absent[0]).all(0) \
        & ~(expected[0] == plain.view_transform.absent[0]).all(0)
    assert 0 < int(blind.sum()) < blind.numel()
    torch.testing.assert_close(got[0][:, blind], expected[0][:, blind] + marked.view_transform.completed[0, :, 0],
                               rtol=0, atol=1e-6)
    assert torch.equal(got[0][:, ~blind], expected[0][:, ~blind])
    assert torch.equal(got[1], expected[1])
