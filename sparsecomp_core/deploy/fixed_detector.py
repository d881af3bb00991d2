"""One frame of the detector at fixed shapes: tensors in, tensors out.

``FixedShapeDetector`` shares the eager ``SparseCompDetector``'s modules (and
so its weights) and runs the same computation with every shape fixed by the
rig, the LiDAR bucket and the state layout: no ``nonzero``, no Python lists
that grow, no Python sequence ids, no host syncs, no matrix inverse op. That
is what ``torch.compile`` (fullgraph), CUDA graphs and the ONNX export need.
What stays outside (``runner.FixedShapeRunner`` does it): padding the clouds,
the sequence-id comparison, the planned path's importance maps, object ids
(Hungarian matching) and post-processing (threshold, top-N, NMS).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..geometry import scale_intrinsics
from ..models.detector import SparseCompDetector
from .affine import affine_inverse
from .fixed_completion import FixedShapeCascade
from .fixed_head import FixedShapeHead
from .lidar_bucket import PaddedLidarBranch
from .static_state import StateLayout

# One frame's inputs, in the order of the ONNX graph's inputs (the state follows).
FRAME_INPUTS = ("images", "cam_mask", "intrinsics", "cam2ego", "ego2global", "timestamp_us", "sequence_changed",
                "key_cameras", "points", "points_valid")
# Outputs besides the new state (past_* and kept_index only with a query queue).
FRAME_OUTPUTS = ("cls_logits", "boxes", "occlusion_logits", "kept_index", "past_centres", "past_usable")


@dataclass(frozen=True)
class FixedShapes:
    """Everything that fixes the graph's shapes."""
    batch: int
    cameras: int
    image_size: tuple[int, int]
    lidar_bucket: int              # points per cloud (0: a model without LiDAR)
    point_channels: int
    key_cameras: int               # K of key_cameras [V, K]
    importance_sizes: tuple[tuple[int, int], ...]   # (h, w) per FPN level with planning-guided completion
    layout: StateLayout


class FixedShapeDetector(nn.Module):
    """forward(frame: dict, state: dict) -> dict of tensors.

    frame: images [B, V, 3, H, W] (uint8 0..255 or float 0..1), cam_mask [B, V]
    bool, intrinsics [B, V, 3, 3] float32 (model input), cam2ego [B, V, 4, 4]
    float32, ego2global [B, 4, 4] float64, timestamp_us [B] int64,
    sequence_changed [B] bool, key_cameras [V, K] int64 (temporal completion's
    key cameras, ``TemporalCompletion.key_cameras``), points [B, P, C_point]
    float32 and points_valid [B, P] bool (LiDAR models), importance_<l> [B, V,
    h_l, w_l] per FPN level (planning-guided completion).
    state: the buffers of ``static_state`` (``layout.empty()`` to start).
    Returns cls_logits [B, Q, 8], boxes [B, Q, 10], occlusion_logits [B, Q, 4]
    of the last decoder layer, completed_cameras [B, V], kept_index [B, k],
    past_centres [B, F, k, 3], past_usable [B, F, k] (see FixedShapeHead) and
    the new state's buffers under their own names.
    """

    def __init__(self, model: SparseCompDetector):
        super().__init__()
        if model.training:
            raise ValueError("the fixed-shape path is for inference: put the model in eval mode")
        self.model = model
        self.cascade = FixedShapeCascade(model.camera_branch.cascade)
        self.lidar = None if model.lidar is None else PaddedLidarBranch(model.lidar)
        self.head = FixedShapeHead(model.head)

    def forward(self, frame: dict[str, Tensor], state: dict[str, Tensor]) -> dict[str, Tensor]:
        model = self.model
        cam_mask, intrinsics, cam2ego = frame["cam_mask"], frame["intrinsics"], frame["cam2ego"]
        ego2global, timestamp_us = frame["ego2global"], frame["timestamp_us"]
        features = model.camera_branch.backbone(model.normalise_images(frame["images"]))
        importance = [frame[f"importance_{level}"] for level in range(len(features)) if f"importance_{level}" in frame]
        camera = self.cascade(features, cam_mask, intrinsics, cam2ego, ego2global, timestamp_us,
                              frame["sequence_changed"], frame["key_cameras"], importance, state)
        excluded, gap_only, completed = model.view_camera_masks(cam_mask, camera["completed_cameras"])
        view = model.view_transform
        maps = [view.sample_bev([camera["features"][level] for level in model.view_levels], excluded,
                                scale_intrinsics(intrinsics, 1.0 / view.stride),
                                affine_inverse(cam2ego), gap_only, completed)]
        if self.lidar is not None:
            maps.append(self.lidar(frame["points"], frame["points_valid"]))
        tokens = model.neck(model.fuser(maps))["tokens"]
        head = self.head(tokens, ego2global, timestamp_us, frame["sequence_changed"], state)
        outputs = {key: value for key, value in head.items() if key != "state"}
        outputs["completed_cameras"] = camera["completed_cameras"]
        outputs.update(camera["state"])
        outputs.update(head["state"])
        return outputs


def fixed_shapes(model: SparseCompDetector, batch: int, cameras: int, image_size: tuple[int, int],
                 lidar_bucket: int) -> FixedShapes:
    """The shapes of ``FixedShapeDetector`` for this model, batch, rig and bucket."""
    cascade, head = model.camera_branch.cascade, model.head
    strides = model.camera_branch.backbone.strides
    height, width = image_size
    sizes = tuple((height // s, width // s) for s in strides)
    temporal = cascade.temporal
    level_h, level_w = sizes[cascade.temporal_level]
    key_count = 0
    if temporal is not None:
        key_count = cameras if temporal.mode == "global" else min(temporal.num_neighbours, cameras)
    layout = StateLayout(batch=batch, cameras=cameras, history_frames=0 if temporal is None else temporal.queue_length,
                         channels=0 if temporal is None else temporal.channels, height=level_h, width=level_w,
                         kept_frames=head.history_frames, kept_queries=head.topk,
                         embed_dims=head.query_embedding.embedding_dim)
    return FixedShapes(batch, cameras, image_size, lidar_bucket if model.lidar is not None else 0,
                       model.lidar.point_channels if model.lidar is not None else 0, key_count,
                       sizes if cascade.planning_guided is not None else (), layout)
