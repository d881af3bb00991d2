"""The full model end to end: modalities, bad clouds, freezing, overfitting."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from sparsecomp_core.config import from_dict, to_dict
from sparsecomp_core.models.model_config import ModelConfig, load_model_config
from sparsecomp_core.models.detector import build_detector
from sparsecomp_core.training.freeze import apply_freeze_schedule, parameter_groups
from sparsecomp_core.training.train import TrainConfig, cosine_lr

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import toy_scene  # noqa: E402

MICRO = {"image_height": 64, "image_width": 128,
         "backbone": {"depth": 18, "base_width": 8, "out_channels": 32},
         "cascade": {"temporal": {"kv_downsample": 1, "num_heads": 4}, "vae": {"latent_channels": 8},
                     "planning_guided": {"num_heads": 4, "key_grid": [2, 4]}},
         "bev": {"cell_size": 3.2}, "bev_channels": 32,
         "view_transform": {"heights": [0.0, 1.5], "points_per_height": 1, "feature_level": 0},
         "lidar": {"pillar_channels": 16, "backbone_channels": 16},
         "head": {"num_queries": 48, "topk_query": 16, "embed_dims": 64, "num_heads": 4, "ffn_channels": 128,
                  "neck_channels": 64, "neck_blocks": 1, "num_top_when_random": 4,
                  "heatmap_queries": 32}}


# The micro tests were tuned on tiny.yaml as it was before issue 14's options
# (multi-sweep LiDAR, velocity from history over a longer queue, completed cameras
# in the BEV); they keep that base, and the options have tests of their own.
TINY_BEFORE_ISSUE_14 = {"lidar": {"sweeps": 1, "absent_embedding": False},
                        "head": {"velocity_from_history": False, "queue_length": 4},
                        "view_transform": {"use_completed_cameras": False, "extra_levels": [],
                                           "absent_embedding": False}}


def micro_config(**overrides) -> ModelConfig:
    data = to_dict(load_model_config("tiny"))
    for key, value in TINY_BEFORE_ISSUE_14.items():
        data[key].update(value)
    for key, value in {**MICRO, **overrides}.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return from_dict(ModelConfig, data)


def micro_model(lidar: bool = True, seed: int = 0, heatmap_queries: int = 32):
    torch.manual_seed(seed)
    cfg = micro_config(lidar={"enable": lidar}, head={"heatmap_queries": heatmap_queries})
    return build_detector(cfg), cfg.load_rig()


@pytest.mark.parametrize("lidar", [False, True])
def test_camera_only_and_camera_lidar_run_with_failed_cameras(lidar):
    model, rig = micro_model(lidar)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (1, rig.num_cameras, 3, 64, 128), dtype=torch.uint8, generator=gen)
    cam_mask = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    state = model.initial_state()
    for step in range(3):
        cam_mask[0, 2] = step > 0
        detections, state = model.infer(toy_scene.frame(rig, 0.1 * step, gen, images, cam_mask, lidar=lidar), state)
    assert set(detections[0]) >= {"boxes", "scores", "labels", "ids", "occlusion_probabilities"}
    assert (model.lidar is not None) == lidar
    assert len(state.cascade.temporal) == 2 and len(state.queries) == 3


@pytest.mark.parametrize("cloud", ["nan", "empty", "missing"])
def test_bad_clouds_run_and_give_finite_outputs(cloud):
    model, rig = micro_model(lidar=True)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    inputs = toy_scene.frame(rig, 0.0, gen, torch.rand(1, rig.num_cameras, 3, 64, 128))
    if cloud == "nan":
        inputs.lidar_points[0][::3] = float("nan")
        inputs.lidar_points[0][1::7, 3] = float("inf")
    elif cloud == "empty":
        inputs.lidar_points = [torch.zeros(0, 4)]
    else:
        inputs.lidar_points = None
    with torch.no_grad():
        outputs = model(inputs, model.initial_state())
    assert torch.isfinite(outputs["boxes"]).all() and torch.isfinite(outputs["cls_logits"]).all()


def test_frozen_modules_get_no_gradient_until_their_step():
    model, rig = micro_model()
    schedule = {"camera_branch.backbone.resnet": 2, "camera_branch.backbone.fpn": 2, "view_transform": 1,
                "lidar.vfe": 2, "lidar.bev_backbone": 2, "fuser": 1}
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, rig.num_cameras, 3, 64, 128)
    for step in range(3):
        model.train()
        frozen = apply_freeze_schedule(model, schedule, step)
        model.zero_grad(set_to_none=True)
        losses, _ = model.forward_train(toy_scene.frame(rig, 0.0, gen, images), [toy_scene.targets_at(0.0)])
        sum(losses.values()).backward()
        for name, until in schedule.items():
            grads = [p.grad for p in model.get_submodule(name).parameters()]
            if step < until:
                assert name in frozen and all(g is None for g in grads), (name, step)
                batch_norms = [m for m in model.get_submodule(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
                assert all(not m.training for m in batch_norms)
            else:
                assert any(g is not None and g.abs().sum() > 0 for g in grads), (name, step)
        assert model.head.query_embedding.weight.grad is not None          # never frozen


def test_parameter_groups_scale_learning_rates_by_module():
    model, _ = micro_model()
    groups = parameter_groups(model, 1e-3, {"camera_branch.backbone": 0.1, "camera_branch.backbone.fpn": 0.5})
    by_id = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert by_id[id(model.camera_branch.backbone.resnet.conv1.weight)] == pytest.approx(1e-4)
    assert by_id[id(model.camera_branch.backbone.fpn.extra.weight)] == pytest.approx(5e-4)
    assert by_id[id(model.head.query_embedding.weight)] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    single = parameter_groups(model, 1e-3, {"head.query_embedding.weight": 30.0})    # one parameter
    by_id = {id(p): g["lr"] for g in single for p in g["params"]}
    assert by_id[id(model.head.query_embedding.weight)] == pytest.approx(3e-2)
    assert by_id[id(model.camera_branch.backbone.resnet.conv1.weight)] == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="not a module"):
        parameter_groups(model, 1e-3, {"backbone": 0.1})


@pytest.mark.parametrize("heatmap_queries", [0, 32])
def test_overfitting_a_tiny_scene_finds_its_boxes_with_class_and_velocity_sign(heatmap_queries):
    """Both query set-ups: all learnable (the spec) and 32 of 48 from heatmap
    peaks (the tiny default). Trained on the same three-frame stream it is
    checked on, with the training CLI's schedule (warm-up, cosine decay) and
    gradient clipping: at a constant learning rate, or checked on a frame it
    never trained on, whether it passed depended on the seed and the CPU
    (docs/model.md has the seed study)."""
    steps, stream = 240, (0.0, 0.1, 0.2)
    model, rig = micro_model(seed=0, heatmap_queries=heatmap_queries)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(1, rig.num_cameras, 3, 64, 128, generator=gen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = TrainConfig(steps=steps * len(stream), warmup_steps=20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_lr(step, schedule))
    for step in range(steps):
        model.train()
        state = model.initial_state()
        for t in stream:                                  # a streamed sequence: history queries are used
            losses, state = model.forward_train(toy_scene.frame(rig, t, gen, images), [toy_scene.targets_at(t)], state)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            scheduler.step()
    model.eval()
    state = model.initial_state()
    found_ids = []
    for t in stream:
        detections, state = model.infer(toy_scene.frame(rig, t, gen, images), state)
        det, target = detections[0], toy_scene.targets_at(t)
        matched_ids, hits = [], 0
        for box, label in zip(target["boxes"], target["labels"]):
            distance = (det["boxes"][:, :2] - box[:2]).norm(dim=1)
            candidates = (distance < 1.5) & (det["labels"] == label)
            if not candidates.any():
                matched_ids.append(None)
                continue
            best = det["scores"].masked_fill(~candidates, -1.0).argmax()     # what a user would take
            velocity_ok = all(torch.sign(det["boxes"][best, 7 + a]) == torch.sign(box[7 + a])
                              for a in range(2) if abs(box[7 + a]) > 1.0)
            hits += int(velocity_ok)
            matched_ids.append(int(det["ids"][best]))
        found_ids.append(matched_ids)
        recall = hits / len(target["labels"])
        print(f"t={t:.1f}s recall with class and velocity sign: {recall:.2f}; detections {len(det['scores'])}; "
              f"ids {matched_ids}")
        assert recall >= 0.75
    for earlier, later in zip(found_ids, found_ids[1:]):
        assert earlier == later and None not in later, found_ids          # ids persist across frames
    assert len(set(found_ids[0])) == len(found_ids[0])


def test_boxes_outside_the_bev_grid_do_not_enter_the_loss():
    model, rig = micro_model()
    model.eval()                                  # no random query sampling / VAE bypass
    gen = torch.Generator().manual_seed(0)
    inputs = toy_scene.frame(rig, 0.0, gen, torch.rand(1, rig.num_cameras, 3, 64, 128, generator=gen))
    target = toy_scene.targets_at(0.0)
    far = {"boxes": torch.cat([target["boxes"], torch.tensor([[-55.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0, 0, 0, 0]])]),
           "labels": torch.cat([target["labels"], torch.tensor([0])]),
           "occlusion": torch.cat([target["occlusion"], torch.tensor([0])])}
    with torch.no_grad():
        plain = model(inputs, None, [target])["losses"]
        with_far = model(inputs, None, [far])["losses"]
    for key in plain:
        torch.testing.assert_close(with_far[key], plain[key])
    assert model.targets_in_range([far])[0]["boxes"].shape[0] == len(target["labels"])


@pytest.mark.parametrize("use_completed", [False, True])
def test_completed_cameras_reach_the_camera_bev_only_when_configured(use_completed):
    model, rig = micro_model(lidar=False)
    model.use_completed_cameras = use_completed
    model.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (1, rig.num_cameras, 3, 64, 128), dtype=torch.uint8, generator=gen)
    bev_maps = []
    model.view_transform.register_forward_hook(lambda module, args, out: bev_maps.append(out))
    failed = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    failed[0, 2] = True
    with torch.no_grad():
        state = model(toy_scene.frame(rig, 0.0, gen, images, lidar=False), None)["state"]
        completed = model(toy_scene.frame(rig, 0.1, gen, images, failed, lidar=False), state)
        left_out = model.view_transform([completed["completion"]["features"][level] for level in model.view_levels],
                                        failed, rig.calibration(1))
    assert completed["completion"]["completed_cameras"][0, 2]
    assert torch.equal(bev_maps[1], left_out) != use_completed


def test_a_gap_only_camera_fills_only_the_cells_no_live_camera_sees():
    """A completed camera in its gap: where a live camera also sees a cell, the cell is
    the live cameras' mean (as if the camera were left out); where none does, it is the
    camera's own sample (as if it were live)."""
    torch.manual_seed(0)
    view = build_detector(micro_config(lidar={"enable": False})).view_transform.eval()
    view.output = torch.nn.Identity()           # the per-cell mean itself, before the 3x3 output block
    rig = micro_config().load_rig()
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(1, rig.num_cameras, 32, 64, 128, generator=gen)
    none = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    completed = none.clone()
    completed[0, rig.camera_names.index("CAM_REAR_LEFT")] = True   # a 40 deg sector that only it sees
    calibration = rig.calibration(1)
    with torch.no_grad():
        as_live = view(features, none, calibration)
        left_out = view(features, completed, calibration)
        gap_filled = view(features, none, calibration, gap_only=completed)
    gap = (left_out == 0).all(dim=1)                          # [1, H, W]: no live camera sees the cell
    changed_by_camera = (as_live != left_out).any(dim=1)      # the camera sees the cell
    assert (gap & changed_by_camera).any()                     # cells only it sees
    assert (~gap & changed_by_camera).any()                    # cells it shares with a live camera
    torch.testing.assert_close(gap_filled.permute(0, 2, 3, 1)[gap], as_live.permute(0, 2, 3, 1)[gap])
    torch.testing.assert_close(gap_filled.permute(0, 2, 3, 1)[~gap], left_out.permute(0, 2, 3, 1)[~gap])
    with torch.no_grad():   # a failed camera nothing completed stays out, gap-only or not
        torch.testing.assert_close(view(features, completed, calibration, gap_only=completed), left_out)


def test_view_transform_levels_are_validated():
    with pytest.raises(ValueError, match="distinct FPN levels"):
        micro_config(view_transform={"extra_levels": [0]})   # the main level again
    with pytest.raises(ValueError, match="distinct FPN levels"):
        micro_config(view_transform={"extra_levels": [4]})


def test_extra_level_with_zero_weight_reproduces_the_single_level_bev():
    """The multi-level transform is the single-level one plus weighted samples of
    further levels: with the extra level's logits at -inf the two agree."""
    torch.manual_seed(0)
    single = build_detector(micro_config(lidar={"enable": False}))
    torch.manual_seed(0)
    multi = build_detector(micro_config(lidar={"enable": False},
                                        view_transform={**MICRO["view_transform"], "extra_levels": [2]}))
    rig = micro_config().load_rig()
    samples = single.view_transform.samples
    with torch.no_grad():
        multi.view_transform.load_state_dict({k: v for k, v in single.view_transform.state_dict().items()
                                              if not k.startswith("weights.")}, strict=False)
        multi.view_transform.weights.weight.zero_()
        multi.view_transform.weights.weight[:samples] = single.view_transform.weights.weight
        multi.view_transform.weights.bias.fill_(float("-inf"))
        multi.view_transform.weights.bias[:samples] = single.view_transform.weights.bias
    single.eval(), multi.eval()
    gen = torch.Generator().manual_seed(1)
    levels = [torch.randn(1, rig.num_cameras, 32, 64 // s, 128 // s, generator=gen) for s in (8, 16, 32, 64)]
    failed = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    failed[0, 1] = True
    with torch.no_grad():
        expected = single.view_transform(levels[0], failed, rig.calibration(1))
        got = multi.view_transform([levels[0], levels[2]], failed, rig.calibration(1))
        torch.testing.assert_close(got, expected)
        with pytest.raises(ValueError, match="2 feature levels, got 1"):
            multi.view_transform(levels[0], failed, rig.calibration(1))


@pytest.mark.parametrize("extra_levels", [[], [2]])
def test_temporal_completion_reaches_the_bev_only_through_its_level(extra_levels):
    """Temporal completion rewrites the 1/32 level only; the BEV changes with it
    only when the view transform samples that level too."""
    model = build_detector(micro_config(lidar={"enable": False}, cascade={"temporal_level": 2},
                                        view_transform={**MICRO["view_transform"], "use_completed_cameras": True,
                                                        "extra_levels": extra_levels}))
    rig = micro_config().load_rig()
    model.eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (1, rig.num_cameras, 3, 64, 128), dtype=torch.uint8, generator=gen)
    failed = torch.zeros(1, rig.num_cameras, dtype=torch.bool)
    failed[0, 2] = True
    bev_maps = []
    model.view_transform.register_forward_hook(lambda module, args, out: bev_maps.append(out))
    with torch.no_grad():
        state = model(toy_scene.frame(rig, 0.0, gen, images, lidar=False), None)["state"]
        model.camera_branch.cascade.vae = model.camera_branch.cascade.planning_guided = None
        outputs = model(toy_scene.frame(rig, 0.1, gen, images, failed, lidar=False), state)
        assert outputs["completion"]["completed_cameras"][0, 2]
        model.camera_branch.cascade.temporal.decoder.apply(   # the same history, a different completion
            lambda m: m.weight.mul_(3.0) if isinstance(m, torch.nn.Conv2d) else None)
        again = model(toy_scene.frame(rig, 0.1, gen, images, failed, lidar=False), state)
    assert again["completion"]["completed_cameras"][0, 2]   # still completed, so still in the BEV
    assert not torch.equal(outputs["completion"]["features"][2], again["completion"]["features"][2])
    assert torch.equal(outputs["completion"]["features"][0], again["completion"]["features"][0])
    assert torch.equal(bev_maps[1], bev_maps[2]) == (not extra_levels)
