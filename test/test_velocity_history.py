"""Velocity from time (head.velocity_from_history): displacement over dt under ego motion,
a velocity output that follows the displacement, learning to use it, old behaviour when off."""
from __future__ import annotations

import math

import torch

from sparsecomp_core.models.bev.grid import BEVGrid, BEVGridConfig
from sparsecomp_core.models.head.dynamic_head import DynamicHead
from sparsecomp_core.models.head.query_queue import KeptQueries, QueryQueue, compensated_history
from sparsecomp_core.models.head.velocity_history import HistoryVelocityFusion, history_hypotheses

T0_US = 5_000_000


def pose(yaw: float, x: float, y: float) -> torch.Tensor:
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    matrix[:2, 3] = torch.tensor([x, y])
    return matrix


def to_ego(point_global: torch.Tensor, ego2global: torch.Tensor) -> torch.Tensor:
    return ego2global[:3, :3].T @ (point_global - ego2global[:3, 3])


def kept_frame(centres: list, velocities: list, labels: list, t_us: int, ego2global: torch.Tensor,
               channels: int = 8, scores: list | None = None) -> KeptQueries:
    k = len(centres)
    return KeptQueries(torch.zeros(1, k, channels), torch.tensor([centres]), torch.tensor([velocities]),
                       torch.tensor([labels]), torch.ones(1, k) if scores is None else torch.tensor([scores]),
                       torch.arange(k)[None], torch.tensor([t_us]), ego2global[None], torch.tensor([True]))


def test_the_hypothesis_is_the_displacement_over_dt_under_ego_translation_and_yaw():
    """An object moving at 5 m/s, seen 0.2 s ago while the ego drove and turned: its finite-difference
    velocity is its true velocity in the current ego axes, whatever velocity the past frame predicted."""
    past_pose, current_pose, dt = pose(0.3, 100.0, 40.0), pose(0.5, 102.0, 40.8), 0.2
    start, velocity = torch.tensor([115.0, 48.0, 0.8], dtype=torch.float64), torch.tensor([-4.0, 3.0, 0.0],
                                                                                             dtype=torch.float64)
    past_centre = to_ego(start, past_pose)
    current_centre = to_ego(start + velocity * dt, current_pose)
    # The past frame predicted a wrong 2 m/s forward: only used to expect where the object is now. A
    # low-score kept query (no object) lies nearer to that expectation than the object's own detection.
    expected_now = past_pose[:3, :3] @ past_centre + past_pose[:3, 3] + past_pose[:3, :3] @ torch.tensor(
        [2.0, 0.0, 0.0], dtype=torch.float64) * dt
    stray = to_ego(expected_now, past_pose).tolist()
    queue = QueryQueue(frames=(kept_frame([past_centre.tolist(), [0.0, 30.0, 0.5], stray], [[2.0, 0.0, 0.0]] * 3,
                                          [0, 0, 0], T0_US, past_pose, scores=[0.8, 0.8, 0.05]),))
    history = compensated_history(queue, current_pose[None], torch.tensor([T0_US + int(dt * 1e6)]))
    centres = torch.stack([current_centre, torch.tensor([-30.0, -30.0, 0.0], dtype=torch.float64)])[None].float()
    velocities, features, matched = history_hypotheses(centres, torch.tensor([[0, 0]]), history, 3, gate_m=4.0)
    assert matched[0].tolist() == [[True, False, False], [False, False, False]]     # far query: no evidence
    expected = (current_pose[:3, :3].T @ velocity)[:2].float()
    torch.testing.assert_close(velocities[0, 0, 0], expected, atol=2e-3, rtol=0)
    assert features[0, 1].abs().sum() == 0 and abs(features[0, 0, 3].item() - 0.2) < 1e-6   # dt in seconds


def one_frame_history(past_centre: list, dt_s: float = 0.1) -> tuple:
    queue = QueryQueue(frames=(kept_frame([past_centre], [[0.0, 0.0, 0.0]], [0], T0_US, pose(0.0, 0.0, 0.0)),))
    return compensated_history(queue, pose(0.0, 0.0, 0.0)[None], torch.tensor([T0_US + int(dt_s * 1e6)]))


def test_the_velocity_output_follows_the_displacement_and_is_the_own_one_without_history():
    torch.manual_seed(0)
    fusion = HistoryVelocityFusion(channels=8, history_frames=3)
    queries, own = torch.randn(1, 1, 8), torch.tensor([[[1.0, -2.0, 0.3]]])
    labels = torch.zeros(1, 1, dtype=torch.long)
    centre = torch.tensor([[[10.0, 5.0, 0.0]]])
    assert torch.equal(fusion(queries, centre, labels, own, None), own)
    far = one_frame_history([40.0, 5.0, 0.0])                                          # beyond the gate
    assert torch.equal(fusion(queries, centre, labels, own, far), own)
    with torch.no_grad():                     # at initialisation: the mean of the own and the history estimate
        mean = fusion(queries, centre, labels, own, one_frame_history([9.5, 5.2, 0.0]))
    torch.testing.assert_close(mean[0, 0, :2], (own[0, 0, :2] + torch.tensor([5.0, -2.0])) / 2)
    assert mean[0, 0, 2] == own[0, 0, 2]
    with torch.no_grad():                     # trust the newest frame: velocity = displacement / dt
        fusion.weights[-1].bias.copy_(torch.tensor([-30.0, 30.0, -30.0, -30.0]))
    for shift in (0.0, 0.3, -0.6):
        moved = centre + torch.tensor([shift, 0.0, 0.0])
        velocity = fusion(queries, moved, labels, own, one_frame_history([9.5, 5.2, 0.0]))
        torch.testing.assert_close(velocity[0, 0, :2], torch.tensor([(0.5 + shift) / 0.1, -0.2 / 0.1]))


def test_training_learns_to_read_velocity_from_the_history():
    """Query embeddings carry no motion (one frame cannot), the history does: with the fusion the
    velocity error falls far below what the own regression alone can reach (about the mean speed)."""
    gen = torch.Generator().manual_seed(0)
    channels, batch, queries, dt = 16, 8, 6, 0.1

    def episode() -> tuple:
        velocity = (torch.rand(batch, queries, 2, generator=gen) - 0.5) * 16.0
        now = torch.rand(batch, queries, 2, generator=gen) * 60.0 - 30.0
        noise = lambda: torch.randn(batch, queries, 2, generator=gen) * 0.05     # noqa: E731  detector jitter
        centres = torch.cat([now + noise(), torch.zeros(batch, queries, 1)], -1)
        past = torch.cat([now - velocity * dt + noise(), torch.zeros(batch, queries, 1)], -1)
        frames = (KeptQueries(torch.zeros(batch, queries, 1), past, torch.zeros(batch, queries, 3),
                              torch.zeros(batch, queries, dtype=torch.long), torch.ones(batch, queries),
                              torch.zeros(batch, queries, dtype=torch.long), torch.full((batch,), T0_US),
                              torch.eye(4, dtype=torch.float64).expand(batch, 4, 4), torch.ones(batch, dtype=torch.bool)),)
        history = compensated_history(QueryQueue(frames=frames), torch.eye(4, dtype=torch.float64).expand(batch, 4, 4),
                                      torch.full((batch,), T0_US + int(dt * 1e6)))
        return torch.randn(batch, queries, channels, generator=gen), centres, history, velocity

    def train(use_history: bool) -> float:
        torch.manual_seed(1)
        own_head, fusion = torch.nn.Linear(channels, 3), HistoryVelocityFusion(channels, history_frames=3)
        optimiser = torch.optim.Adam([*own_head.parameters(), *fusion.parameters()], lr=3e-3)
        labels = torch.zeros(batch, queries, dtype=torch.long)
        for step in range(120):
            embeddings, centres, history, velocity = episode()
            predicted = fusion(embeddings, centres, labels, own_head(embeddings), history if use_history else None)
            loss = (predicted[..., :2] - velocity).abs().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            errors = []
            for _ in range(5):
                embeddings, centres, history, velocity = episode()
                predicted = fusion(embeddings, centres, labels, own_head(embeddings), history if use_history else None)
                errors.append((predicted[..., :2] - velocity).norm(dim=-1).mean())
        return float(torch.stack(errors).mean())

    without, with_history = train(False), train(True)
    assert without > 4.0                     # the own regression cannot know the speed
    assert with_history < 0.3 * without


def micro_head(velocity_from_history: bool, id_min_score: float = 0.0) -> DynamicHead:
    grid = BEVGrid(BEVGridConfig(x_range=(-16.0, 16.0), y_range=(-16.0, 16.0), cell_size=4.0))
    torch.manual_seed(0)
    return DynamicHead(grid, num_queries=12, topk_query=4, queue_length=3, embed_dims=16, num_layers=2, num_heads=2,
                       ffn_channels=32, neck_channels=8, num_top_when_random=2, heatmap_queries=4,
                       velocity_from_history=velocity_from_history, id_min_score=id_min_score,
                       velocity_history_min_score=0.0).eval()     # untrained scores sit near the 0.01 prior


def test_the_flag_keeps_old_weights_loadable_and_changes_nothing_without_history():
    off, on = micro_head(False), micro_head(True)
    assert not any("velocity_fusion" in key for key in off.state_dict())
    missing, unexpected = on.load_state_dict(off.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("velocity_fusion.") for key in missing)
    tokens = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(3))
    ego, stamps = torch.eye(4, dtype=torch.float64)[None], [torch.tensor([T0_US + k * 100_000]) for k in range(2)]
    with torch.no_grad():
        first_off = off(tokens, ego, stamps[0], off.empty_queue(), ["s"])
        first_on = on(tokens, ego, stamps[0], on.empty_queue(), ["s"])
        torch.testing.assert_close(first_on["boxes"], first_off["boxes"], rtol=0, atol=0)   # stage 1: no history
        second_off = off(tokens, ego, stamps[1], off.update_queue(first_off, ego, stamps[0], ["s"]), ["s"])
        second_on = on(tokens, ego, stamps[1], on.update_queue(first_on, ego, stamps[0], ["s"]), ["s"])
    torch.testing.assert_close(second_on["boxes"][..., :7], second_off["boxes"][..., :7], rtol=0, atol=0)
    assert not torch.equal(second_on["boxes"][..., 7:9], second_off["boxes"][..., 7:9])     # history used


def test_the_id_threshold_does_not_change_what_the_network_sees():
    """Ids are post-processing: raising id_min_score after training changes ids only,
    never boxes or velocities (the velocity evidence has its own threshold)."""
    low, high = micro_head(True, id_min_score=0.0), micro_head(True, id_min_score=0.9)
    tokens = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(3))
    ego, stamps = torch.eye(4, dtype=torch.float64)[None], [torch.tensor([T0_US + k * 100_000]) for k in range(3)]
    outputs = {}
    with torch.no_grad():
        for name, head in (("low", low), ("high", high)):
            queue, frames = head.empty_queue(), []
            for stamp in stamps:
                out = head(tokens, ego, stamp, queue, ["s"])
                queue = head.update_queue(out, ego, stamp, ["s"])
                frames.append(out)
            outputs[name] = frames
    for a, b in zip(outputs["low"], outputs["high"]):
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)
    # the untrained scores (~0.01) pass 0.0 but not 0.9: only the low threshold hands ids on
    def inherited(frames: list[dict]) -> int:
        return len(set(frames[2]["ids"][0].tolist()) & set(frames[1]["ids"][0].tolist()))
    assert inherited(outputs["low"]) > 0 and inherited(outputs["high"]) == 0
