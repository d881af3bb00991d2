"""The model's temporal state as fixed-shape tensors ("static buffers").

The eager model keeps its state in Python containers whose length grows with
the history (``FeatureHistory.frames``, ``QueryQueue.frames``) and compares
Python sequence ids; a compiled graph, a CUDA graph and an ONNX graph need the
same tensors at the same shapes every frame. Here every history slot always
exists and a validity flag says whether it holds a usable frame; slot 0 is the
newest. The scene-change test on timestamps runs inside the graph; the
sequence-id comparison (Python objects) runs in the runner, which passes its
outcome as the ``sequence_changed`` input.

Names and shapes (B batch, V cameras, T = cascade.temporal.queue_length,
C x h x w the temporal level's features, F = head.queue_length - 1 kept
frames of k = head.topk_query queries of E channels):

- history_features [B, T, V, C, h, w] float32: 1/32 features as observed
- history_cam_mask [B, T, V] bool; history_intrinsics [B, T, V, 3, 3] float32
  (model-input resolution); history_cam2ego [B, T, V, 4, 4] float32
- history_ego2global [B, T, 4, 4] float64; history_timestamp_us [B, T] int64
- history_valid [B, T] bool
- queue_embeddings [B, F, k, E] float32; queue_reference_points [B, F, k, 3]
  (metres, that frame's ego frame); queue_velocities [B, F, k, 3] (m/s);
  queue_labels [B, F, k] int64; queue_scores [B, F, k] float32
- queue_ego2global [B, F, 4, 4] float64; queue_timestamp_us [B, F] int64;
  queue_valid [B, F] bool

Empty slots hold identity poses and intrinsics, so the closed-form inverses
of ``affine`` stay finite on them; their contents never reach an output
(every use is masked by the validity flags).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BufferSpec:
    """One state tensor: its name, shape and dtype."""
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass(frozen=True)
class StateLayout:
    """The sizes that fix every state buffer's shape (see the module docstring)."""
    batch: int
    cameras: int
    history_frames: int          # T; 0 when temporal completion is disabled
    channels: int
    height: int
    width: int
    kept_frames: int             # F; 0 with head.queue_length 1
    kept_queries: int            # k
    embed_dims: int              # E

    def buffers(self) -> list[BufferSpec]:
        b, v, t, f, k = self.batch, self.cameras, self.history_frames, self.kept_frames, self.kept_queries
        specs = []
        if t > 0:
            specs += [BufferSpec("history_features", (b, t, v, self.channels, self.height, self.width), torch.float32),
                      BufferSpec("history_cam_mask", (b, t, v), torch.bool),
                      BufferSpec("history_intrinsics", (b, t, v, 3, 3), torch.float32),
                      BufferSpec("history_cam2ego", (b, t, v, 4, 4), torch.float32),
                      BufferSpec("history_ego2global", (b, t, 4, 4), torch.float64),
                      BufferSpec("history_timestamp_us", (b, t), torch.int64),
                      BufferSpec("history_valid", (b, t), torch.bool)]
        if f > 0:
            specs += [BufferSpec("queue_embeddings", (b, f, k, self.embed_dims), torch.float32),
                      BufferSpec("queue_reference_points", (b, f, k, 3), torch.float32),
                      BufferSpec("queue_velocities", (b, f, k, 3), torch.float32),
                      BufferSpec("queue_labels", (b, f, k), torch.int64),
                      BufferSpec("queue_scores", (b, f, k), torch.float32),
                      BufferSpec("queue_ego2global", (b, f, 4, 4), torch.float64),
                      BufferSpec("queue_timestamp_us", (b, f), torch.int64),
                      BufferSpec("queue_valid", (b, f), torch.bool)]
        return specs

    def empty(self, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """Every buffer with no valid slot: zeros, identity matrices for poses and intrinsics."""
        state = {}
        for spec in self.buffers():
            if spec.shape[-2:] in ((3, 3), (4, 4)):
                eye = torch.eye(spec.shape[-1], dtype=spec.dtype, device=device)
                state[spec.name] = eye.expand(spec.shape).clone()
            else:
                state[spec.name] = torch.zeros(spec.shape, dtype=spec.dtype, device=device)
        return state


def scene_changed_in_graph(last_timestamp_us: Tensor, timestamp_us: Tensor, sequence_changed: Tensor,
                           max_gap_s: float) -> Tensor:
    """[B] bool: the tensor-only form of ``models.scene.scene_changed``: time gap beyond
    ``max_gap_s``, time not moving forward, or a new sequence (decided by the runner)."""
    gap_us = timestamp_us - last_timestamp_us
    return (gap_us <= 0) | (gap_us > int(max_gap_s * 1e6)) | sequence_changed


def pushed(buffer: Tensor, newest: Tensor) -> Tensor:
    """``buffer`` [B, S, ...] with ``newest`` [B, ...] in slot 0 and the oldest slot dropped."""
    return torch.cat([newest[:, None], buffer[:, :-1]], dim=1)
