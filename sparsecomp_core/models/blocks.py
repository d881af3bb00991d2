"""Building blocks shared by the completion levels and the dynamic head: key-masked
multi-head attention, sine position codes, the gate and gated fusion of completion
levels 1 and 3 (SPEC 4.1 step 4, 4.3 step 5), and the GroupNorm group count."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_position_encoding(height: int, width: int, channels: int, device=None) -> Tensor:
    """[height * width, channels] sinusoidal encoding of normalised (x, y) in [0, 1],
    so grids of different resolution over the same image agree at the same place."""
    if channels % 4:
        raise ValueError(f"channels must be a multiple of 4, got {channels}")
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    quarter = channels // 4
    freqs = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(1000.0) / quarter))
    angles_y = ys[:, None] * freqs[None] * 2 * math.pi   # [h, q]
    angles_x = xs[:, None] * freqs[None] * 2 * math.pi   # [w, q]
    enc_y = torch.cat([angles_y.sin(), angles_y.cos()], dim=1)[:, None, :].expand(height, width, -1)
    enc_x = torch.cat([angles_x.sin(), angles_x.cos()], dim=1)[None, :, :].expand(height, width, -1)
    return torch.cat([enc_y, enc_x], dim=-1).reshape(height * width, channels)


class KeyMaskedAttention(nn.Module):
    """Multi-head attention in which masked keys get exactly zero weight.

    forward(query [N, Lq, C], key [N, Lk, C], value [N, Lk, C], key_valid [N, Lk] bool
    or None (all valid)) -> (out [N, Lq, C], has_keys [N] bool, weights [N, heads, Lq, Lk] or None).
    Rows with no valid key at all produce zeros and ``has_keys = False``: the
    caller must keep its input there. Uses scaled_dot_product_attention
    (fused kernels on GPU); ``need_weights`` computes weights explicitly.
    """

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.out_proj = nn.Linear(channels, channels)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # [N, heads, L, d]

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_valid: Tensor | None,
                need_weights: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
        if key_valid is None:
            key_valid = torch.ones(key.shape[:2], dtype=torch.bool, device=key.device)
        has_keys = key_valid.any(dim=1)
        # A row without keys would be NaN; let it attend anywhere, then zero it.
        mask = (key_valid | ~has_keys[:, None])[:, None, None, :]
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        weights = None
        if need_weights:
            logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            weights = logits.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            attended = weights @ v
            weights = weights * has_keys[:, None, None, None]
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.out_proj(attended.transpose(1, 2).flatten(2))
        return out * has_keys[:, None, None].to(out.dtype), has_keys, weights


class GateNetwork(nn.Module):
    """gate [N, 1, h, w] in [0, 1] from the original and completed features [N, C, h, w]."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(channels // 4, 8)
        self.body = nn.Sequential(nn.Conv2d(2 * channels, hidden, 3, 1, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, 1, 1))

    def forward(self, original: Tensor, completed: Tensor) -> Tensor:
        return torch.sigmoid(self.body(torch.cat([original, completed], dim=1)))


def gated_fusion(original: Tensor, completed: Tensor, gate: Tensor) -> Tensor:
    """original * (1 - gate) + completed * gate; gate broadcast over channels."""
    return original * (1 - gate) + completed * gate


def norm_groups(channels: int) -> int:
    """The largest GroupNorm group count (32 at most) that divides ``channels``."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
