"""Behaviour of the camera-dropout simulation and the completion cascade."""
from __future__ import annotations

import math

import pytest
import torch

from sparsecomp_core.camera_dropout import RandCamMask
from sparsecomp_core.config import from_dict
from sparsecomp_core.data.feature_world import DirectionalFeatureWorld, yaw_pose
from sparsecomp_core.geometry import cam2ego_from_heading, pinhole_intrinsics, scale_intrinsics
from sparsecomp_core.models.blocks import KeyMaskedAttention
from sparsecomp_core.models.completion.cascade import CascadeConfig, build_completion_cascade
from sparsecomp_core.models.completion.planning_guided import trajectory_importance
from sparsecomp_core.models.completion.temporal import TemporalCompletion
from sparsecomp_core.models.completion.warp import MotionCompensatedWarp
from sparsecomp_core.rig import load_rig
from sparsecomp_core.training import completion_feature_task as task

CHANNELS = 16
STRIDES = task.STRIDES
SMALL = {"temporal": {"kv_downsample": 2, "num_heads": 4}, "vae": {"latent_channels": 8},
         "planning_guided": {"num_heads": 4, "key_grid": [4, 8]}}


def small_cascade(overrides: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    cfg = from_dict(CascadeConfig, {k: {**SMALL.get(k, {}), **(overrides or {}).get(k, {})}
                                    for k in set(SMALL) | set(overrides or {})})
    return build_completion_cascade(cfg, CHANNELS, 6, STRIDES)


def scene(batch: int = 2, seed: int = 0):
    """Calibration, poses and features of two frames 0.1 s apart, the ego turning 15 deg."""
    calibration = load_rig("nuscenes6").calibration(batch, (128, 256))
    world = DirectionalFeatureWorld(CHANNELS, seed=seed)
    past_pose = yaw_pose(torch.zeros(batch))
    current_pose = yaw_pose(torch.full((batch,), math.radians(15)))
    return (calibration, past_pose, current_pose, world.features(calibration, past_pose, STRIDES),
            world.features(calibration, current_pose, STRIDES))


def stamps(batch: int, t_us: int) -> torch.Tensor:
    return torch.full((batch,), t_us, dtype=torch.int64)


def run_two_frames(cascade, cam_mask, past_mask=None, current=None, sequence_ids=(None, None), gap_us=100_000,
                   trajectory=None):
    calibration, past_pose, current_pose, past, current_default = scene(cam_mask.shape[0])
    current = current_default if current is None else current
    past_mask = torch.zeros_like(cam_mask) if past_mask is None else past_mask
    first = cascade(past, past_mask, calibration, past_pose, stamps(cam_mask.shape[0], 1_000_000),
                    cascade.initial_state(), sequence_ids[0])
    return current, cascade(current, cam_mask, calibration, current_pose, stamps(cam_mask.shape[0], 1_000_000 + gap_us),
                            first["state"], sequence_ids[1], trajectory)


# --- camera dropout --------------------------------------------------------

def test_rand_cam_mask_statistics_and_zeroing():
    dropout = RandCamMask(0.6, 1, 2, torch.Generator().manual_seed(0))
    masks = dropout.sample_mask(4000, 7)
    counts = masks.sum(dim=1)
    assert set(counts.unique().tolist()) == {0, 1, 2}
    assert abs((counts > 0).float().mean().item() - 0.6) < 0.03
    assert abs((counts[counts > 0] == 2).float().mean().item() - 0.5) < 0.05
    assert (masks.float().mean(dim=0) - masks.float().mean()).abs().max() < 0.03   # no favourite camera

    images = torch.rand(8, 7, 3, 4, 6) + 0.1
    masked, cam_mask = RandCamMask(1.0, 1, 2, torch.Generator().manual_seed(1))(images)
    assert cam_mask.any(dim=1).all()
    assert (masked[cam_mask] == 0).all()
    assert torch.equal(masked[~cam_mask], images[~cam_mask])


def test_rand_cam_mask_is_deterministic_for_a_seed():
    a = RandCamMask(0.6, 1, 2, torch.Generator().manual_seed(3)).sample_mask(16, 7)
    b = RandCamMask(0.6, 1, 2, torch.Generator().manual_seed(3)).sample_mask(16, 7)
    assert torch.equal(a, b)


# --- bit-identical healthy cameras, no work without failures ----------------------

@pytest.mark.parametrize("vae_at_inference", [False, True])
def test_healthy_cameras_are_bit_identical_and_failed_ones_rewritten(vae_at_inference):
    cascade = small_cascade({"vae": {"use_at_inference": vae_at_inference}}).eval()
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[0, 1] = cam_mask[1, 4] = cam_mask[1, 5] = True
    with torch.no_grad():
        current, out = run_two_frames(cascade, cam_mask, trajectory=torch.tensor([[[5.0, 0.0], [15.0, 1.0]]] * 2))
    assert out["temporal_gate"] is not None and (out["vae"] is not None) == vae_at_inference
    for given, result in zip(current, out["features"]):
        assert torch.equal(result[~cam_mask], given[~cam_mask])
        assert not torch.allclose(result[cam_mask], given[cam_mask])


def test_each_level_leaves_healthy_cameras_bit_identical_in_training():
    cascade = small_cascade().train()
    calibration, _, pose, _, feats = scene()
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[:, 2] = True
    history = cascade.temporal(feats[2], torch.zeros_like(cam_mask), calibration, pose, stamps(2, 0),
                               cascade.temporal.empty_history())["history"]
    temporal = cascade.temporal(feats[2], cam_mask, calibration, pose, stamps(2, 100_000), history)["features"]
    vae = cascade.vae(feats, cam_mask)["features"]
    planning = cascade.planning_guided(feats, cam_mask, calibration, None)["features"]
    for level_output, given in [(temporal, feats[2])] + list(zip(vae, feats)) + list(zip(planning, feats)):
        assert torch.equal(level_output[~cam_mask], given[~cam_mask])
        assert not torch.equal(level_output[cam_mask], given[cam_mask])


def test_without_failed_cameras_no_attention_runs_and_features_pass_through():
    cascade = small_cascade({"vae": {"use_at_inference": True}}).eval()
    calls = []
    for module in cascade.modules():
        if isinstance(module, (KeyMaskedAttention, MotionCompensatedWarp)):
            module.register_forward_hook(lambda *args: calls.append(args[0]))
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    with torch.no_grad():
        current, out = run_two_frames(cascade, cam_mask)
    assert calls == []
    assert all(result is given for result, given in zip(out["features"], current))
    assert len(out["state"].temporal) == 2          # the frames were still queued


def test_completed_cameras_are_the_failed_ones_a_level_rewrote_with_evidence():
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[0, 1] = cam_mask[1, 4] = True
    temporal_only = small_cascade({"vae": {"enable": False}, "planning_guided": {"enable": False}}).eval()
    calibration, _, pose, _, feats = scene()
    with torch.no_grad():
        first = temporal_only(feats, cam_mask, calibration, pose, stamps(2, 0), temporal_only.initial_state())
        _, second = run_two_frames(temporal_only, cam_mask)
    assert not first["completed_cameras"].any()                  # no history yet: nothing to complete from
    assert torch.equal(second["completed_cameras"], cam_mask)     # history of those cameras: completed
    with torch.no_grad():
        _, out = run_two_frames(small_cascade().eval(), cam_mask, past_mask=cam_mask)
    assert torch.equal(out["completed_cameras"], cam_mask)        # level 3 completes from the live cameras


# --- motion-compensated warp -----------------------------------------------------

def ramp_features(height: int, width: int) -> torch.Tensor:
    """[1, 1, 1, 2, h, w]: channel 0 = column centre u, channel 1 = row centre v."""
    us = (torch.arange(width) + 0.5).expand(height, width)
    vs = (torch.arange(height) + 0.5)[:, None].expand(height, width)
    return torch.stack([us, vs])[None, None, None]


def test_warp_with_identity_motion_returns_the_history():
    warp = MotionCompensatedWarp(2, (10.0, 30.0), learn_offsets=True)
    intrinsics = scale_intrinsics(pinhole_intrinsics(70.0, 256, 128), 1 / 8)
    cam2ego = cam2ego_from_heading(40.0, 5.0, (1.0, 0.3, 1.5))
    past = torch.randn(1, 1, 1, 2, 16, 32)
    warped, valid = warp(past, intrinsics[None], cam2ego[None], torch.eye(4)[None, None],
                         intrinsics[None, None, None], cam2ego[None, None, None], (16, 32))
    assert valid.all()
    torch.testing.assert_close(warped, past, atol=1e-4, rtol=0)   # float32 lift + projection


def test_warp_shifts_by_the_ego_translation():
    """Ego drove 2 m forward: a left-looking camera saw a point at depth 10 m
    2 * f / 10 pixels further right (toward the front) before."""
    warp = MotionCompensatedWarp(2, (10.0,), learn_offsets=False)
    intrinsics = scale_intrinsics(pinhole_intrinsics(90.0, 256, 128), 1 / 8)   # f = 16 feature px
    cam2ego = cam2ego_from_heading(90.0)
    cur2past = torch.eye(4)
    cur2past[0, 3] = 2.0
    warped, valid = warp(ramp_features(16, 32), intrinsics[None], cam2ego[None], cur2past[None, None],
                         intrinsics[None, None, None], cam2ego[None, None, None], (16, 32))
    u = ramp_features(16, 32)[0, 0, 0, 0]
    shift = 2.0 * 16.0 / 10.0
    expected_valid = (u + shift) < 32
    assert torch.equal(valid[0, 0, 0], expected_valid)
    interior = (u + shift) <= 31.5          # beyond the last pixel centre, bilinear blends with the padding
    torch.testing.assert_close(warped[0, 0, 0, 0][interior], (u + shift)[interior], atol=1e-4, rtol=0)
    torch.testing.assert_close(warped[0, 0, 0, 1][interior], ramp_features(16, 32)[0, 0, 0, 1][interior],
                               atol=1e-4, rtol=0)   # rows do not move


def test_warp_under_ego_rotation_finds_the_neighbour_camera():
    """After a 55 deg left turn, CAM_FRONT looks where CAM_FRONT_LEFT looked."""
    calibration = load_rig("nuscenes6").calibration(1, (128, 256))
    world = DirectionalFeatureWorld(4, seed=1)
    past_pose, current_pose = yaw_pose(torch.zeros(1)), yaw_pose(torch.tensor([math.radians(55.0)]))
    past, current = world.features(calibration, past_pose, (32,))[0], world.features(calibration, current_pose, (32,))[0]
    warp = MotionCompensatedWarp(4, (1000.0,), learn_offsets=False)      # a scene at infinity
    intrinsics = calibration.at_stride(32)
    cur2past = (torch.linalg.inv(past_pose) @ current_pose).float()
    warped, valid = warp(past[:, None, 1:2], intrinsics[:, 0], calibration.cam2ego[:, 0], cur2past[:, None],
                         intrinsics[:, None, 1:2], calibration.cam2ego[:, None, 1:2], (4, 8))
    assert valid[0, 0, 0].float().mean() > 0.9
    error = (warped[0, 0, 0] - current[0, 0])[:, valid[0, 0, 0]].abs().mean()
    assert error < 0.1 * current[0, 0].abs().mean()


# --- history and scene changes ---------------------------------------------------------

@pytest.mark.parametrize("gap_us, ids, cleared", [
    (100_000, ("a", "a"), False),
    (2_500_000, ("a", "a"), True),     # gap > 2 s
    (-100_000, ("a", "a"), True),      # time backwards
    (100_000, ("a", "b"), True),       # new sequence
])
def test_scene_change_clears_history(gap_us, ids, cleared):
    cascade = small_cascade().eval()
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[:, 0] = True
    with torch.no_grad():
        current, out = run_two_frames(cascade, cam_mask, sequence_ids=([ids[0]] * 2, [ids[1]] * 2), gap_us=gap_us)
    assert len(out["state"].temporal) == (1 if cleared else 2)
    assert (out["temporal_gate"] is None) == cleared


def test_scene_change_of_one_sample_keeps_the_other_samples_history():
    cascade = small_cascade().eval()
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[:, 0] = True
    temporal = cascade.temporal
    calibration, past_pose, pose, past, current = scene()
    first = temporal(past[2], torch.zeros_like(cam_mask), calibration, past_pose, stamps(2, 0),
                     temporal.empty_history(), ["a", "b"])
    with torch.no_grad():
        out = temporal(current[2], cam_mask, calibration, pose, stamps(2, 100_000), first["history"], ["a", "c"])
    assert out["history"].frames[1].valid.tolist() == [True, False]
    assert out["gate"][0].abs().sum() > 0 and out["gate"][1].abs().sum() == 0
    assert torch.equal(out["features"][1], current[2][1])     # no evidence: unchanged


# --- masked keys ---------------------------------------------------------------------

def test_masked_keys_get_exactly_zero_attention():
    attention = KeyMaskedAttention(16, 4)
    query, keys = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    key_valid = torch.rand(3, 7) > 0.5
    key_valid[2] = False                                          # no evidence at all
    key_valid[0, 0] = True
    out, has_keys, weights = attention(query, keys, keys, key_valid, need_weights=True)
    assert has_keys.tolist() == [True, key_valid[1].any().item(), False]
    assert (weights.permute(0, 2, 1, 3)[~key_valid[:, None, None, :].expand(-1, 5, 4, -1)] == 0).all()
    assert (out[2] == 0).all()
    fused, _, _ = attention(query, keys, keys, key_valid)
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["global", "neighbours"])
def test_keys_from_cameras_failed_at_that_time_do_not_influence_the_output(mode):
    cascade = small_cascade({"temporal": {"mode": mode}}).eval()
    temporal: TemporalCompletion = cascade.temporal
    calibration, past_pose, pose, past, current = scene()
    past_mask = torch.zeros(2, 6, dtype=torch.bool)
    past_mask[:, 1] = True                                       # CAM_FRONT_LEFT failed then
    cam_mask = torch.zeros(2, 6, dtype=torch.bool)
    cam_mask[:, 0] = True                                        # CAM_FRONT fails now

    def complete(past_features):
        history = temporal(past_features, past_mask, calibration, past_pose, stamps(2, 0),
                           temporal.empty_history())["history"]
        with torch.no_grad():
            return temporal(current[2], cam_mask, calibration, pose, stamps(2, 100_000), history)["features"]

    reference = complete(past[2])
    perturbed_failed = past[2].clone()
    perturbed_failed[:, 1] += 5 * torch.randn_like(perturbed_failed[:, 1])
    assert torch.equal(complete(perturbed_failed), reference)
    perturbed_valid = past[2].clone()
    perturbed_valid[:, 0] += 5 * torch.randn_like(perturbed_valid[:, 0])   # CAM_FRONT itself was fine then
    assert not torch.allclose(complete(perturbed_valid), reference)


def test_neighbour_mode_ignores_cameras_outside_the_group():
    """After a 110 deg turn, CAM_BACK_LEFT saw what CAM_FRONT sees now, but it is
    not CAM_FRONT's neighbour: V1 (global) reads it, V2 (neighbours) must not."""
    outputs = {}
    calibration = load_rig("nuscenes6").calibration(2, (128, 256))
    world = DirectionalFeatureWorld(CHANNELS, seed=0)
    past_pose, pose = yaw_pose(torch.full((2,), math.radians(-110.0))), yaw_pose(torch.zeros(2))
    past, current = world.features(calibration, past_pose, STRIDES), world.features(calibration, pose, STRIDES)
    for mode in ("global", "neighbours"):
        temporal = small_cascade({"temporal": {"mode": mode}}).eval().temporal
        cam_mask = torch.zeros(2, 6, dtype=torch.bool)
        cam_mask[:, 0] = True
        results = []
        for scale in (1.0, 3.0):
            history_features = past[2].clone()
            history_features[:, 3] *= scale
            history = temporal(history_features, torch.zeros_like(cam_mask), calibration, past_pose, stamps(2, 0),
                               temporal.empty_history())["history"]
            with torch.no_grad():
                results.append(temporal(current[2], cam_mask, calibration, pose, stamps(2, 100_000), history)["features"])
        outputs[mode] = torch.equal(*results)
    assert outputs == {"global": False, "neighbours": True}


# --- planning-guided importance ----------------------------------------------------

def test_trajectory_importance_lights_the_path_in_front_cameras_only():
    calibration = load_rig("nuscenes6").calibration(1, (128, 256))
    path = torch.tensor([[[4.0, 0.0], [8.0, 0.0], [12.0, 0.0], [16.0, 0.0]]])
    importance = trajectory_importance(path, calibration.at_stride(8), calibration.cam2ego, (16, 32), sigma_px=2.0)
    front, back = importance[0, 0], importance[0, 5]
    assert importance.min() >= 0 and importance.max() <= 1
    assert front.max() > 0.9 and back.max() < 1e-3
    lower_centre, upper_rows = front[10:, 12:20].mean(), front[:6].mean()   # the road is below the horizon
    assert lower_centre > 0.3 and upper_rows < 0.01
    none = trajectory_importance(None, calibration.at_stride(8), calibration.cam2ego, (16, 32), sigma_px=2.0)
    assert torch.equal(none, torch.zeros(1, 6, 16, 32))


# --- learning ----------------------------------------------------------------------------

def test_training_brings_failed_cameras_closer_to_the_teacher_than_zero_filling():
    torch.manual_seed(0)
    calibration = load_rig("nuscenes6").calibration(4, (128, 256))
    cascade = small_cascade()
    world = DirectionalFeatureWorld(CHANNELS, seed=0)
    before = task.evaluate(cascade, world, calibration, episodes=6)
    losses = task.train(cascade, world, calibration, steps=250, seed=0)
    after = task.evaluate(cascade, world, calibration, episodes=6)          # held-out episodes
    ratio = [c / z for c, z in zip(after["completed_mse"], after["zero_fill_mse"])]
    print("completed/zero-fill MSE per level (strides 8..64): before",
          [round(c / z, 3) for c, z in zip(before["completed_mse"], before["zero_fill_mse"])], "after",
          [round(r, 3) for r in ratio])
    assert sum(losses[-25:]) < 0.7 * sum(losses[:25])
    assert max(ratio) < 0.7
    assert ratio[2] < 0.35          # the 1/32 level has the temporal evidence


def test_relative_losses_do_not_grow_with_the_feature_scale_and_zero_fill_costs_one():
    """relative_to_teacher: the reconstruction terms are the completion error as a fraction of a zero
    fill's, so scaling student and teacher features together leaves them unchanged (in feature units
    they grow with the square of the scale) and a zero completion costs exactly 1."""
    from sparsecomp_core.models.completion.losses import (planning_guided_loss, ssl_consistency_loss,
                                                          vae_reconstruction_loss)
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 3, 8, 4, 6, generator=gen) for _ in range(2)]
    student = [t + 0.3 * torch.randn(t.shape, generator=gen) for t in teacher]
    cam_mask = torch.tensor([[True, False, False], [False, True, True]])
    importance = [torch.rand(2, 3, 4, 6, generator=gen) for _ in range(2)]

    def terms(scale: float, relative: bool) -> list[torch.Tensor]:
        t, s = [x * scale for x in teacher], [x * scale for x in student]
        completed = [x[cam_mask] for x in s]                  # what the VAE and level 3 output
        return [ssl_consistency_loss(s, t, cam_mask, relative), vae_reconstruction_loss(completed, t, cam_mask, relative),
                planning_guided_loss(completed, t, importance, cam_mask, relative)]
    for relative, growth in ((True, 1.0), (False, 100.0)):
        for small, large in zip(terms(1.0, relative), terms(10.0, relative)):
            torch.testing.assert_close(large, small * growth, rtol=1e-4, atol=0)
    assert all(float(term) < 0.2 for term in terms(1.0, True))         # a close completion: a small fraction
    zero_fill = [torch.zeros_like(t) for t in teacher]
    torch.testing.assert_close(ssl_consistency_loss(zero_fill, teacher, cam_mask, True), torch.tensor(1.0))


def test_centred_relative_losses_cost_one_for_the_channel_mean_fill_and_ignore_a_constant_offset():
    """centred: the divisor is the teacher's variance about each channel's mean, so filling a failed
    camera with that mean costs exactly 1 however large the per-channel constant, and adding a
    constant per channel to both student and teacher changes nothing (the mean-square divisor
    shrinks the same error as the constant grows)."""
    from sparsecomp_core.models.completion.losses import ssl_consistency_loss
    gen = torch.Generator().manual_seed(1)
    teacher = [torch.randn(2, 3, 4, 5, 6, generator=gen)]
    student = [teacher[0] + 0.2 * torch.randn(teacher[0].shape, generator=gen)]
    cam_mask = torch.tensor([[True, False, True], [False, True, False]])
    offset = 20.0 * torch.randn(1, 1, 4, 1, 1, generator=gen)           # a per-channel constant
    shifted_teacher, shifted_student = [teacher[0] + offset], [student[0] + offset]
    torch.testing.assert_close(ssl_consistency_loss(shifted_student, shifted_teacher, cam_mask, True, True),
                               ssl_consistency_loss(student, teacher, cam_mask, True, True), rtol=1e-4, atol=0)
    uncentred_plain = ssl_consistency_loss(student, teacher, cam_mask, True)
    uncentred_shifted = ssl_consistency_loss(shifted_student, shifted_teacher, cam_mask, True)
    assert float(uncentred_shifted) < 0.1 * float(uncentred_plain)
    failed = shifted_teacher[0][cam_mask]
    mean_fill = shifted_teacher[0].clone()
    mean_fill[cam_mask] = failed.mean(dim=(0, 2, 3), keepdim=True).expand_as(failed)
    torch.testing.assert_close(ssl_consistency_loss([mean_fill], shifted_teacher, cam_mask, True, True),
                               torch.tensor(1.0), rtol=1e-4, atol=0)
