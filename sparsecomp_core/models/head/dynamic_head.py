"""Streaming temporal query head (SPEC 6): queries, history, decoder, predictions."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from ..bev.grid import BEVGrid
from ..blocks import KeyMaskedAttention
from .boxes import NUM_ANGLE_BINS, NUM_CLASSES, NUM_OCCLUSION_STATES, decode_boxes
from .heatmap import BEVHeatmapHead, heatmap_peaks
from .query_queue import (CompensatedQueries, KeptQueries, QueryQueue, compensated_history, select_queries,
                          zero_static_velocities)
from .track_ids import associate_ids, inheritable_past
from .velocity_history import HistoryVelocityFusion

REG_SIZE = 11   # centre (3, metres), log size (3), sin yaw, cos yaw, velocity (3)


@dataclass
class DynamicHeadConfig:
    num_queries: int = 384
    topk_query: int = 128
    queue_length: int = 4                   # frames, the current one included
    embed_dims: int = 256
    num_layers: int = 3
    num_heads: int = 8
    ffn_channels: int = 1024
    neck_channels: int = 512
    neck_blocks: int = 2
    random_sampling_probability: float = 0.5
    num_top_when_random: int = 20
    max_time_gap_s: float = 2.0
    id_gate_m: float = 2.0                  # an output continues a past object's id within this distance
    id_min_score: float = 0.1               # outputs below this score get no inherited id
    # Current queries initialised from BEV heatmap peaks (0: all learnable, as the
    # spec); they take the last slots, so the propagated ones never replace them.
    heatmap_queries: int = 0
    # Velocity also from the history: each query's velocity is weighed with the
    # displacements of the nearest past detections over their time differences
    # (head/velocity_history.py, docs/model.md). Off: the regressed velocity only.
    velocity_from_history: bool = False
    velocity_history_gate_m: float = 4.0    # a past detection farther than this from where it was expected is no evidence
    # Past detections that count as velocity evidence: kept queries that scored at
    # least this. Separate from id_min_score because it shapes what the network
    # learns from, while the id rule is post-processing and may change after training.
    velocity_history_min_score: float = 0.1

    def __post_init__(self) -> None:
        if not 0 < self.topk_query <= self.num_queries:
            raise ValueError("need 0 < topk_query <= num_queries")
        if not 0 <= self.heatmap_queries <= self.num_queries - self.topk_query:
            raise ValueError("need 0 <= heatmap_queries <= num_queries - topk_query "
                             "(the first topk_query slots continue propagated queries)")
        if self.queue_length < 1:
            raise ValueError("queue_length must be >= 1")
        if not 0 <= self.num_top_when_random <= self.topk_query:
            raise ValueError("need 0 <= num_top_when_random <= topk_query")


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class PositionEncoder3D(nn.Module):
    """Normalised points [..., 3] in [0, 1] -> embeddings [..., C] (sine features + MLP)."""

    def __init__(self, channels: int, frequencies: int = 32):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.exp(torch.linspace(0, math.log(64.0), frequencies)),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(6 * frequencies, channels), nn.ReLU(inplace=True), nn.Linear(channels, channels))

    def forward(self, points: Tensor) -> Tensor:
        angles = points[..., None] * self.freqs                                      # [..., 3, F]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2))


class StreamTransformerLayer(nn.Module):
    """Self-attention over current + history queries, cross-attention to BEV
    tokens, FFN (post-norm). queries [B, Q, C] -> [B, Q, C]."""

    def __init__(self, channels: int, num_heads: int, ffn_channels: int):
        super().__init__()
        self.self_attention = KeyMaskedAttention(channels, num_heads)
        self.cross_attention = KeyMaskedAttention(channels, num_heads)
        self.ffn = nn.Sequential(nn.Linear(channels, ffn_channels), nn.ReLU(inplace=True), nn.Linear(ffn_channels, channels))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(3))

    def forward(self, queries: Tensor, query_pos: Tensor, history: Tensor | None, history_pos: Tensor | None,
                history_valid: Tensor | None, bev: Tensor, bev_pos: Tensor) -> Tensor:
        keys, key_pos, key_valid = queries, query_pos, None
        if history is not None:
            keys, key_pos = torch.cat([queries, history], dim=1), torch.cat([query_pos, history_pos], dim=1)
            key_valid = torch.cat([torch.ones_like(history_valid[:, :1]).expand(-1, queries.shape[1]), history_valid], 1)
        attended, _, _ = self.self_attention(queries + query_pos, keys + key_pos, keys, key_valid)
        queries = self.norms[0](queries + attended)
        attended, _, _ = self.cross_attention(queries + query_pos, bev + bev_pos, bev, None)
        queries = self.norms[1](queries + attended)
        return self.norms[2](queries + self.ffn(queries))


class PredictionBranches(nn.Module):
    """Per-query outputs of one decoder layer."""

    def __init__(self, channels: int):
        super().__init__()

        def mlp(out: int) -> nn.Sequential:
            return nn.Sequential(nn.Linear(channels, channels), nn.ReLU(inplace=True), nn.Linear(channels, out))
        self.classification = mlp(NUM_CLASSES)
        self.regression = mlp(REG_SIZE)
        self.angle_bins = mlp(NUM_ANGLE_BINS)
        self.occlusion = mlp(NUM_OCCLUSION_STATES)
        nn.init.constant_(self.classification[-1].bias, -math.log((1 - 0.01) / 0.01))   # prior 0.01

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"cls_logits": self.classification(x), "regression": self.regression(x),
                "angle_logits": self.angle_bins(x), "occlusion_logits": self.occlusion(x)}


class DynamicHead(nn.Module):
    """forward(tokens [B, H*W, C_neck], ego2global [B, 4, 4], timestamp_us [B],
    queue: QueryQueue, sequence_ids) -> dict with, per decoder layer (leading
    dim L): cls_logits [L, B, Q, 8], regression [L, B, Q, 11] (centre in metres,
    log size, sin/cos yaw, velocity), angle_logits [L, B, Q, 8],
    occlusion_logits [L, B, Q, 4], boxes [L, B, Q, 10] decoded; with
    heatmap_queries > 0 also heatmap_logits [B, 8, H, W]; and embeddings [B, Q, C], ids [B, Q] (see track_ids), propagated [B, Q] bool
    (slot continues a kept query), queue (checked for scene changes;
    ``update_queue`` pushes this frame). With ``velocity_from_history`` the
    velocity in regression and boxes is HistoryVelocityFusion's.
    """

    def __init__(self, grid: BEVGrid, num_queries: int = 384, topk_query: int = 128, queue_length: int = 4,
                 embed_dims: int = 256, num_layers: int = 3, num_heads: int = 8, ffn_channels: int = 1024,
                 neck_channels: int = 512, random_sampling_probability: float = 0.5, num_top_when_random: int = 20,
                 max_time_gap_s: float = 2.0, id_gate_m: float = 2.0, id_min_score: float = 0.1,
                 heatmap_queries: int = 0, velocity_from_history: bool = False, velocity_history_gate_m: float = 4.0,
                 velocity_history_min_score: float = 0.1):
        super().__init__()
        self.grid = grid
        self.id_gate_m, self.id_min_score = id_gate_m, id_min_score
        self.num_queries, self.topk, self.history_frames = num_queries, topk_query, queue_length - 1
        self.random_sampling_probability, self.num_top_when_random = random_sampling_probability, num_top_when_random
        self.max_time_gap_s = max_time_gap_s
        self.heatmap_queries = heatmap_queries
        self.query_embedding = nn.Embedding(num_queries - heatmap_queries, embed_dims)
        self.reference_logits = nn.Embedding(num_queries - heatmap_queries, 3)
        if heatmap_queries > 0:
            self.heatmap = BEVHeatmapHead(neck_channels, embed_dims)
            self.class_embedding = nn.Linear(NUM_CLASSES, embed_dims)
        nn.init.uniform_(self.reference_logits.weight, -2.0, 2.0)
        self.memory_projection = nn.Linear(neck_channels, embed_dims)
        self.position_encoder = PositionEncoder3D(embed_dims)
        self.layers = nn.ModuleList(StreamTransformerLayer(embed_dims, num_heads, ffn_channels) for _ in range(num_layers))
        self.branches = nn.ModuleList(PredictionBranches(embed_dims) for _ in range(num_layers))
        self.velocity_fusion = None
        if velocity_from_history:
            self.velocity_fusion = nn.ModuleList(HistoryVelocityFusion(embed_dims, self.history_frames, velocity_history_gate_m,
                                                                       velocity_history_min_score) for _ in range(num_layers))
        cells = torch.cat([grid.normalise(torch.cat([grid.cell_centres(), torch.zeros(grid.height * grid.width, 1)], 1))[:, :2],
                           torch.full((grid.height * grid.width, 1), 0.5)], dim=1)
        self.register_buffer("bev_cells", cells, persistent=False)                     # [HW, 3] normalised

    def empty_queue(self) -> QueryQueue:
        return QueryQueue(max_gap_s=self.max_time_gap_s)

    def forward(self, tokens: Tensor, ego2global: Tensor, timestamp_us: Tensor, queue: QueryQueue,
                sequence_ids: Sequence | None = None) -> dict:
        queue = queue.checked_for_scene_change(timestamp_us, sequence_ids)
        history = compensated_history(queue, ego2global, timestamp_us)
        result = self.decode(tokens, history)
        scores, labels = torch.sigmoid(result["cls_logits"][-1]).max(dim=-1)
        past = inheritable_past(queue, history, self.id_min_score)
        ids, next_id = associate_ids(result["boxes"][-1][..., :3], labels, scores, past, queue.next_id,
                                     self.id_gate_m, self.id_min_score)
        result.update(ids=ids, queue=queue, next_id=next_id)
        return result

    def decode(self, tokens: Tensor, history: CompensatedQueries | None) -> dict:
        """The decoder on BEV tokens [B, H*W, C_neck] with the motion-compensated history
        (None: none); the newest kept frame's valid queries (the first
        ``history.frame_sizes[0]``) continue as the first current queries. Returns forward's
        dict without ids, queue and next_id (object ids are associated outside: Hungarian
        matching on the CPU, which the fixed-shape path keeps outside its graph)."""
        batch = tokens.shape[0]
        bev = self.memory_projection(tokens)
        bev_pos = self.position_encoder(self.bev_cells)[None]
        queries = self.query_embedding.weight[None].expand(batch, -1, -1)
        reference = torch.sigmoid(self.reference_logits.weight)[None].expand(batch, -1, -1)
        heatmap_logits = None
        if self.heatmap_queries > 0:
            heatmap_logits = self.heatmap(tokens.transpose(1, 2).reshape(batch, -1, self.grid.height, self.grid.width))
            peak_queries, peak_reference = self.peak_queries(heatmap_logits, bev)
            queries = torch.cat([queries, peak_queries], dim=1)
            reference = torch.cat([reference, peak_reference], dim=1)
        propagated = torch.zeros(batch, self.num_queries, dtype=torch.bool, device=tokens.device)

        history_emb = history_pos = history_valid = None
        if history is not None:
            history_emb, history_valid = history.embeddings, history.valid
            history_pos = self.position_encoder(self.grid.normalise(history.reference_points).clamp(0, 1))
            # The newest frame's kept queries continue as the first k current queries.
            k = history.frame_sizes[0]
            use = history.valid[:, :k]                                                  # [B, k]
            propagated[:, :k] = use
            queries = torch.cat([torch.where(use[..., None], history.embeddings[:, :k], queries[:, :k]), queries[:, k:]], 1)
            reference = torch.cat([torch.where(use[..., None], self.grid.normalise(history.reference_points[:, :k]).clamp(0, 1),
                                               reference[:, :k]), reference[:, k:]], 1)

        per_layer = {key: [] for key in ("cls_logits", "regression", "angle_logits", "occlusion_logits", "boxes")}
        for index, (layer, branches) in enumerate(zip(self.layers, self.branches)):
            queries = layer(queries, self.position_encoder(reference), history_emb, history_pos, history_valid, bev, bev_pos)
            out = branches(queries)
            centre_norm = torch.sigmoid(inverse_sigmoid(reference) + out["regression"][..., :3])
            centre, velocity = self.grid.denormalise(centre_norm), out["regression"][..., 8:]
            if self.velocity_fusion is not None:
                velocity = self.velocity_fusion[index](queries, centre, out["cls_logits"].argmax(-1), velocity, history)
            regression = torch.cat([centre, out["regression"][..., 3:8], velocity], dim=-1)
            out["regression"] = regression
            out["boxes"] = decode_boxes(regression, out["angle_logits"])
            for key in per_layer:
                per_layer[key].append(out[key])
            reference = centre_norm.detach()
        result = {key: torch.stack(values) for key, values in per_layer.items()}
        result.update(embeddings=queries, propagated=propagated)
        if heatmap_logits is not None:
            result["heatmap_logits"] = heatmap_logits
        return result

    def peak_queries(self, heatmap_logits: Tensor, bev: Tensor) -> tuple[Tensor, Tensor]:
        """Queries at the heatmap's strongest peaks: (content [B, N, C] = the
        projected BEV feature there + an embedding of the peak's class,
        reference points [B, N, 3] normalised, at the cell centre)."""
        cell, label, _ = heatmap_peaks(heatmap_logits, self.heatmap_queries)
        content = bev.gather(1, cell[..., None].expand(-1, -1, bev.shape[-1]))
        content = content + self.class_embedding(nn.functional.one_hot(label, NUM_CLASSES).to(bev.dtype))
        return content, self.bev_cells[cell]

    def update_queue(self, outputs: dict, ego2global: Tensor, timestamp_us: Tensor,
                     sequence_ids: Sequence | None = None) -> QueryQueue:
        """The queue with this frame's kept queries pushed (detached)."""
        queue: QueryQueue = outputs["queue"]
        if self.history_frames == 0:  # queue_length 1: no temporal queries
            return QueryQueue(next_id=outputs["next_id"], max_gap_s=self.max_time_gap_s)
        scores, labels = torch.sigmoid(outputs["cls_logits"][-1]).max(dim=-1)
        random_sampling = self.training and bool(torch.rand(()) < self.random_sampling_probability)
        index = select_queries(scores.detach(), self.topk, random_sampling, self.num_top_when_random)

        def pick(x: Tensor) -> Tensor:
            return x.gather(1, index.reshape(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))
        boxes = outputs["boxes"][-1].detach()
        kept_labels = pick(labels)
        kept = KeptQueries(
            embeddings=pick(outputs["embeddings"].detach()), reference_points=pick(boxes[..., :3]),
            velocities=zero_static_velocities(pick(boxes[..., 7:10]), kept_labels), labels=kept_labels,
            scores=pick(scores.detach()), ids=pick(outputs["ids"]), timestamp_us=timestamp_us.to(torch.int64),
            ego2global=ego2global.to(torch.float64),
            valid=torch.ones(index.shape[0], dtype=torch.bool, device=index.device))
        return queue.pushed(kept, sequence_ids, self.history_frames, outputs["next_id"])


def build_dynamic_head(cfg: DynamicHeadConfig, grid: BEVGrid) -> DynamicHead:
    return DynamicHead(grid, cfg.num_queries, cfg.topk_query, cfg.queue_length, cfg.embed_dims, cfg.num_layers,
                       cfg.num_heads, cfg.ffn_channels, cfg.neck_channels, cfg.random_sampling_probability,
                       cfg.num_top_when_random, cfg.max_time_gap_s, cfg.id_gate_m, cfg.id_min_score,
                       cfg.heatmap_queries, cfg.velocity_from_history, cfg.velocity_history_gate_m,
                       cfg.velocity_history_min_score)
