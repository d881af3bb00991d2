"""LiDAR dropout in training: whole clouds removed, decided once per stream."""
from __future__ import annotations

import pytest
import torch

from sparsecomp_core.lidar_dropout import LidarDropout


def clouds(batch: int = 2) -> list[torch.Tensor]:
    return [torch.rand(50 + b, 5) for b in range(batch)]


def test_dropped_clouds_are_empty_with_their_columns_and_kept_ones_untouched():
    inputs = clouds()
    out, dropped = LidarDropout(1.0)(inputs, ["a", "b"], torch.tensor([0, 0]))
    assert dropped.tolist() == [True, True] and all(c.shape == (0, 5) and c.dtype == torch.float32 for c in out)
    out, dropped = LidarDropout(0.0)(inputs, ["a", "b"], torch.tensor([0, 0]))
    assert dropped.tolist() == [False, False] and all(o is i for o, i in zip(out, inputs))


def test_the_decision_holds_for_a_stream_and_is_drawn_again_when_a_new_one_starts():
    dropout = LidarDropout(0.5, generator=torch.Generator().manual_seed(0))
    decisions = []
    for stream in range(40):                   # slot 0: 40 streams of 5 frames; slot 1: one long stream
        for frame in range(5):
            stamps = torch.tensor([stream * 10_000_000 + frame * 100_000, (stream * 5 + frame) * 100_000])
            _, dropped = dropout(clouds(), [f"scene{stream}", "long"], stamps)
            decisions.append(dropped.tolist())
    per_stream = [[decisions[s * 5 + f][0] for f in range(5)] for s in range(40)]
    assert all(len(set(frames)) == 1 for frames in per_stream)          # constant within a stream
    assert 10 <= sum(frames[0] for frames in per_stream) <= 30           # drawn anew per stream (p = 0.5)
    assert len({d[1] for d in decisions}) == 1                           # the long stream never redraws
    # Time going back within the same sequence id is a new stream too (as for the temporal state).
    redraws = LidarDropout(1.0)
    redraws(clouds(1), ["s"], torch.tensor([500_000]))
    redraws.probability = 0.0
    assert redraws(clouds(1), ["s"], torch.tensor([600_000]))[1].tolist() == [True]
    assert redraws(clouds(1), ["s"], torch.tensor([100_000]))[1].tolist() == [False]


def test_a_probability_outside_0_1_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        LidarDropout(1.5)
