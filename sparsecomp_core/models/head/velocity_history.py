"""Velocity from time: each query's velocity also from where its object was.

A single frame shows where an object is, not how fast it moves; the
streaming head's history does show it. For every current query and every
kept past frame, the past detection nearest to where the query's object is
expected (the kept centres moved by their velocity and the ego motion, as
``query_queue.compensate`` does) gives a finite-difference velocity

    (centre_now - centre_past moved rigidly into the current ego frame) / dt,

the displacement over the time difference, over ground in the current ego
axes. The velocity output is a learned convex combination of the query's own
regressed velocity and these hypotheses: an MLP on the query embedding and
each hypothesis's evidence (the velocity, how far the past detection was from
where it was expected, dt, whether the classes agree) weighs them. A frame
without a past detection within the gate adds no hypothesis, and without
history the output is the query's own velocity, exactly.

Association is geometric, not by decoder slot, for the reason ids are
(docs/model.md): nothing forces a propagated slot to keep predicting its
object, and heatmap-initialised queries have no slot history at all.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .query_queue import CompensatedQueries

SPEED_SCALE = 10.0          # m/s: finite-difference velocities enter the weighting MLP divided by this
FEATURES_PER_FRAME = 7      # vx, vy (scaled), miss distance / gate, dt (s), same class, past score, matched


def past_centres_rigid(history: CompensatedQueries) -> Tensor:
    """The kept centres [B, N, 3] moved rigidly (ego motion only, not their
    velocity) into the current ego frame: ``history.reference_points`` is
    centre + velocity * dt, compensated, so subtract the compensated velocity x dt."""
    return history.reference_points - history.velocities * history.dt_s[..., None]


def history_hypotheses(centres: Tensor, labels: Tensor, history: CompensatedQueries, history_frames: int,
                       gate_m: float, min_score: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """Per query and kept frame, the finite-difference velocity hypothesis.

    centres [B, Q, 3] (metres, current ego frame; detach them: the hypotheses
    are evidence, not a path for gradients into the centre), labels [B, Q]
    (the query's predicted class). Only kept queries that scored at least
    ``min_score`` count as past detections (the others are no object, and one
    of them lying nearer than the object's own past detection would give a
    false displacement). Frames beyond those in the queue count as empty.
    Returns velocities [B, Q, F, 2] (m/s, current ego axes),
    features [B, Q, F * FEATURES_PER_FRAME] and matched [B, Q, F] bool, with
    F = history_frames (zero velocity and features where unmatched).
    """
    batch, queries = labels.shape
    velocities = centres.new_zeros(batch, queries, history_frames, 2)
    features = centres.new_zeros(batch, queries, history_frames, FEATURES_PER_FRAME)
    matched = torch.zeros(batch, queries, history_frames, dtype=torch.bool, device=centres.device)
    rigid = past_centres_rigid(history)
    usable = history.valid & (history.scores >= min_score)
    parts = zip(*(x.split(history.frame_sizes, 1) for x in (history.reference_points, rigid, history.labels, usable,
                                                             history.dt_s, history.scores)))
    for frame, (expected, past, past_labels, valid, dt, past_scores) in enumerate(parts):
        if frame >= history_frames:
            break
        distance = torch.cdist(centres[..., :2].float(), expected[..., :2].float())           # [B, Q, k]
        distance = distance.masked_fill(~valid[:, None, :], float("inf"))
        miss, nearest = distance.min(dim=2)                                                    # [B, Q]
        hit = miss < gate_m

        def pick(x: Tensor) -> Tensor:
            return x.gather(1, nearest.reshape(batch, queries, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
        lag = pick(dt).clamp(min=1e-3)
        velocity = (centres[..., :2] - pick(past)[..., :2]) / lag[..., None]
        same_class = (pick(past_labels) == labels).to(centres.dtype)
        frame_features = torch.stack([velocity[..., 0] / SPEED_SCALE, velocity[..., 1] / SPEED_SCALE,
                                      miss.clamp(max=gate_m) / gate_m, lag, same_class,
                                      pick(past_scores).to(centres.dtype), torch.ones_like(lag)], -1)
        velocities[:, :, frame] = torch.where(hit[..., None], velocity, torch.zeros_like(velocity))
        features[:, :, frame] = torch.where(hit[..., None], frame_features, torch.zeros_like(frame_features))
        matched[:, :, frame] = hit
    return velocities, features.flatten(2), matched


class HistoryVelocityFusion(nn.Module):
    """forward(queries [B, Q, C], centres [B, Q, 3] metres (current ego frame),
    labels [B, Q], own_velocity [B, Q, 3], history: CompensatedQueries or None)
    -> velocity [B, Q, 3]: vx, vy a weighted mean of the own velocity and the
    matched history hypotheses (weights: softmax of an MLP on the query and
    the hypotheses' features, unmatched ones excluded); vz the own one. With
    no history, or nothing matched, the own velocity unchanged. ``min_score``:
    see ``history_hypotheses`` (the head passes ``velocity_history_min_score``)."""

    def __init__(self, channels: int, history_frames: int, gate_m: float = 4.0, min_score: float = 0.1):
        super().__init__()
        self.history_frames, self.gate_m, self.min_score = history_frames, gate_m, min_score
        self.weights = nn.Sequential(nn.Linear(channels + history_frames * FEATURES_PER_FRAME, channels),
                                     nn.ReLU(inplace=True), nn.Linear(channels, history_frames + 1))
        nn.init.zeros_(self.weights[-1].weight)     # start with equal weights on every available estimate
        nn.init.zeros_(self.weights[-1].bias)

    def forward(self, queries: Tensor, centres: Tensor, labels: Tensor, own_velocity: Tensor,
                history: CompensatedQueries | None) -> Tensor:
        if history is None or self.history_frames == 0:
            return own_velocity
        velocities, features, matched = history_hypotheses(centres.detach(), labels, history, self.history_frames,
                                                           self.gate_m, self.min_score)
        logits = self.weights(torch.cat([queries, features.to(queries.dtype)], dim=-1))
        available = torch.cat([torch.ones_like(matched[..., :1]), matched], dim=-1)            # own always
        weights = torch.softmax(logits.float().masked_fill(~available, float("-inf")), dim=-1)
        candidates = torch.cat([own_velocity[..., None, :2].float(), velocities.float()], dim=-2)   # [B, Q, F+1, 2]
        planar = (weights[..., None] * candidates).sum(dim=-2).to(own_velocity.dtype)
        return torch.cat([planar, own_velocity[..., 2:]], dim=-1)
