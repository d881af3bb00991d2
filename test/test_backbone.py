"""ResNet + FPN backbone and the camera branch (backbone, teacher, cascade)."""
from __future__ import annotations

import pytest
import torch

from sparsecomp_core.camera_dropout import RandCamMask
from sparsecomp_core.config import from_dict
from sparsecomp_core.models.model_config import ModelConfig, load_model_config
from sparsecomp_core.models.backbone import ImageBackbone, build_backbone
from sparsecomp_core.models.camera_branch import build_camera_branch


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_four_levels_at_strides_8_to_64(depth):
    backbone = ImageBackbone(depth, base_width=8, out_channels=16).eval()
    with torch.no_grad():
        levels = backbone(torch.randn(1, 2, 3, 128, 192))
    assert [tuple(f.shape) for f in levels] == [(1, 2, 16, 128 // s, 192 // s) for s in (8, 16, 32, 64)]
    assert all(f.dtype == torch.float32 for f in levels)


def test_cameras_are_processed_independently():
    backbone = ImageBackbone(18, base_width=8, out_channels=16).eval()
    images = torch.randn(1, 3, 3, 64, 64)
    with torch.no_grad():
        reference = backbone(images)
        changed = images.clone()
        changed[:, 1] = 0
        result = backbone(changed)
    for a, b in zip(reference, result):
        assert torch.equal(a[:, [0, 2]], b[:, [0, 2]]) and not torch.equal(a[:, 1], b[:, 1])


def test_pretrained_weights_load_from_a_local_file(tmp_path):
    source = ImageBackbone(18, base_width=8, out_channels=16)
    state = {**source.resnet.state_dict(), "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "resnet18.pth")
    cfg = from_dict(ModelConfig, {"name": "t", "backbone": {"depth": 18, "base_width": 8, "out_channels": 16,
                                                           "pretrained": str(tmp_path / "resnet18.pth")}})
    loaded = build_backbone(cfg.backbone)
    for key, value in source.resnet.state_dict().items():
        assert torch.equal(loaded.resnet.state_dict()[key], value), key
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not a matching ResNet"):
        ImageBackbone(18, 8, 16).load_pretrained(str(tmp_path / "wrong.pth"))


def test_camera_branch_trains_student_through_the_cascade_and_not_the_teacher():
    cfg = load_model_config("tiny")
    rig = cfg.load_rig()
    torch.manual_seed(0)
    branch = build_camera_branch(cfg, rig.num_cameras).train()
    images = torch.rand(2, rig.num_cameras, 3, rig.image_height, rig.image_width)
    masked, cam_mask = RandCamMask(1.0, 1, 2, torch.Generator().manual_seed(0))(images)
    pose = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).clone()
    state = branch.initial_state()
    for t_us in (0, 100_000):
        out = branch(masked, cam_mask, rig.calibration(2), pose, torch.tensor([t_us, t_us]), state,
                     teacher_images=images)
        state = out["state"]
    assert set(out["losses"]) == {"loss_ssl", "loss_vae_rec", "loss_vae_kl", "loss_planning_guided"}
    assert out["temporal_gate"] is not None
    sum(out["losses"].values()).backward()
    assert branch.backbone.resnet.conv1.weight.grad.abs().sum() > 0
    assert branch.cascade.temporal.attention.q_proj.weight.grad.abs().sum() > 0


def test_channels_last_computes_the_same_features_and_hands_on_contiguous_maps():
    torch.manual_seed(0)
    plain = ImageBackbone(18, 16, 32).eval()
    nhwc = ImageBackbone(18, 16, 32, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    assert nhwc.resnet.conv1.weight.is_contiguous(memory_format=torch.channels_last)   # kept through loading
    images = torch.rand(1, 3, 3, 64, 128)
    with torch.no_grad():
        expected, got = plain(images), nhwc(images)
    for a, b in zip(expected, got):
        assert b.is_contiguous()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    for model in (plain, nhwc):                                  # training: the same gradients
        model.train()
        sum(level.square().mean() for level in model(images)).backward()
    torch.testing.assert_close(nhwc.resnet.conv1.weight.grad, plain.resnet.conv1.weight.grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(nhwc.fpn.extra.weight.grad, plain.fpn.extra.weight.grad, rtol=1e-3, atol=1e-5)
