"""Sensor dropout in training: a stream's whole LiDAR, all its cameras or a few crashed ones removed,
decided once per stream."""
from __future__ import annotations

import pytest
import torch

from sparsecomp_core.sensor_dropout import CameraCrash, SensorDropout, drop_cameras, drop_lidar


def clouds(batch: int = 2) -> list[torch.Tensor]:
    return [torch.rand(50 + b, 5) for b in range(batch)]


def test_dropped_clouds_are_empty_with_their_columns_and_kept_ones_untouched():
    inputs = clouds()
    no_lidar, no_cameras = SensorDropout(lidar=1.0)(["a", "b"], torch.tensor([0, 0]))
    assert no_lidar.tolist() == [True, True] and no_cameras.tolist() == [False, False]
    out = drop_lidar(inputs, no_lidar)
    assert all(c.shape == (0, 5) and c.dtype == torch.float32 for c in out)
    no_lidar, _ = SensorDropout(lidar=0.0)(["a", "b"], torch.tensor([0, 0]))
    assert no_lidar.tolist() == [False, False]
    assert all(o is i for o, i in zip(drop_lidar(inputs, no_lidar), inputs))


def test_a_stream_without_cameras_has_every_camera_failed_and_black_and_the_others_are_untouched():
    images = torch.rand(2, 7, 3, 4, 8) + 0.1
    cam_mask = torch.zeros(2, 7, dtype=torch.bool)
    cam_mask[1, 3] = True                                   # an ordinary camera fault in the kept stream
    no_lidar, no_cameras = SensorDropout(cameras=1.0)(["a", "b"], torch.tensor([0, 0]))
    assert no_lidar.tolist() == [False, False] and no_cameras.tolist() == [True, True]
    out, mask = drop_cameras(images, cam_mask, torch.tensor([True, False]))
    assert mask[0].all() and (out[0] == 0).all()
    assert mask[1].tolist() == cam_mask[1].tolist()         # the kept stream: its own faults only
    assert torch.equal(out[1, :3], images[1, :3]) and (out[1, 3] == 0).all()


def test_the_decision_holds_for_a_stream_and_is_drawn_again_when_a_new_one_starts():
    dropout = SensorDropout(lidar=0.3, cameras=0.3, generator=torch.Generator().manual_seed(0))
    decisions = []
    for stream in range(60):                   # slot 0: 60 streams of 5 frames; slot 1: one long stream
        for frame in range(5):
            stamps = torch.tensor([stream * 10_000_000 + frame * 100_000, (stream * 5 + frame) * 100_000])
            no_lidar, no_cameras = dropout([f"scene{stream}", "long"], stamps)
            assert not (no_lidar & no_cameras).any()                   # never both in one stream
            decisions.append((int(no_lidar[0]) + 2 * int(no_cameras[0]), int(no_lidar[1]) + 2 * int(no_cameras[1])))
    per_stream = [[decisions[s * 5 + f][0] for f in range(5)] for s in range(60)]
    assert all(len(set(frames)) == 1 for frames in per_stream)          # constant within a stream
    first = [frames[0] for frames in per_stream]
    assert 8 <= first.count(1) <= 30 and 8 <= first.count(2) <= 30 and first.count(0) >= 8   # drawn anew (0.3 / 0.3 / 0.4)
    assert len({d[1] for d in decisions}) == 1                           # the long stream never redraws
    # Time going back within the same sequence id is a new stream too (as for the temporal state).
    redraws = SensorDropout(lidar=1.0)
    redraws(["s"], torch.tensor([500_000]))
    redraws.lidar = 0.0
    assert redraws(["s"], torch.tensor([600_000]))[0].tolist() == [True]
    assert redraws(["s"], torch.tensor([100_000]))[0].tolist() == [False]


def test_probabilities_outside_0_1_or_summing_over_1_are_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SensorDropout(lidar=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SensorDropout(cameras=-0.1)
    with pytest.raises(ValueError, match="at most one modality"):
        SensorDropout(lidar=0.6, cameras=0.5)


def test_crashed_cameras_stay_failed_for_their_stream_and_are_drawn_again_for_the_next():
    crash = CameraCrash(0.5, num_cameras=7, n_min=1, n_max=2, generator=torch.Generator().manual_seed(0))
    per_stream = []
    for stream in range(80):                   # slot 0: 80 streams of 4 frames; slot 1: one long stream
        masks = []
        for frame in range(4):
            stamps = torch.tensor([stream * 10_000_000 + frame * 100_000, (stream * 4 + frame) * 100_000])
            crashed = crash([f"scene{stream}", "long"], stamps)
            assert crashed.shape == (2, 7) and crashed.dtype == torch.bool
            masks.append(crashed)
        assert all(torch.equal(m[0], masks[0][0]) for m in masks)        # constant within a stream
        per_stream.append(masks[0])
    counts = [int(m[0].sum()) for m in per_stream]
    assert set(counts) <= {0, 1, 2} and 25 <= counts.count(0) <= 55      # p 0.5 of 1 or 2 cameras
    assert counts.count(1) >= 8 and counts.count(2) >= 8
    assert len({tuple(m[0].tolist()) for m in per_stream}) > 10           # which cameras: drawn anew
    assert len({tuple(m[1].tolist()) for m in per_stream}) == 1           # the long stream never redraws


def test_a_resumed_camera_crash_keeps_its_streams_faults():
    crash = CameraCrash(1.0, num_cameras=7)
    first = crash(["a", "b"], torch.tensor([0, 0]))
    resumed = CameraCrash(1.0, num_cameras=7)
    resumed.load_state_dict(crash.state_dict())
    assert torch.equal(resumed(["a", "b"], torch.tensor([100_000, 100_000])), first)


def test_crashed_cameras_are_black_and_failed_and_the_rest_untouched():
    images = torch.rand(2, 7, 3, 4, 8) + 0.1
    cam_mask = torch.zeros(2, 7, dtype=torch.bool)
    cam_mask[1, 3] = True                                   # an ordinary per-frame fault
    crashed = torch.zeros(2, 7, dtype=torch.bool)
    crashed[0, [0, 4]] = True
    out, mask = drop_cameras(images, cam_mask, crashed)
    assert mask[0].tolist() == [True, False, False, False, True, False, False]
    assert mask[1].tolist() == cam_mask[1].tolist()
    assert (out[0, [0, 4]] == 0).all() and torch.equal(out[0, 1:4], images[0, 1:4])
    assert (out[1, 3] == 0).all() and torch.equal(out[1, :3], images[1, :3])


def test_camera_crash_settings_are_checked():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CameraCrash(1.2, num_cameras=7)
    with pytest.raises(ValueError, match="n_max <= 7 cameras"):
        CameraCrash(0.5, num_cameras=7, n_min=1, n_max=8)
