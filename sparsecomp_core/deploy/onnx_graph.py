"""The fixed-shape detector as a graph with flat, named tensor inputs and outputs.

``GraphAdapter`` turns ``FixedShapeDetector``'s dicts into positional tensors
in the order of ``GraphSignature`` (frame inputs, then the state buffers;
outputs, then the new state buffers), which is what ``torch.onnx.export`` and
the sidecar describe. Images enter as float32 in [0, 1] (the runner divides a
uint8 image by 255, as ``normalise_images`` does, so the result is the same).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .fixed_detector import FixedShapeDetector, FixedShapes

DESCRIPTIONS = {
    "images": "camera images, float32 in [0, 1], failed cameras as delivered",
    "cam_mask": "True = that camera has failed",
    "intrinsics": "camera intrinsics at model-input resolution",
    "cam2ego": "camera -> ego transforms",
    "ego2global": "ego pose (ego -> odom/map)",
    "timestamp_us": "frame time, microseconds",
    "sequence_changed": "True where the stream's sequence id differs from the last frame's (the runner compares)",
    "key_cameras": "cameras whose history serves as keys for each camera (TemporalCompletion.key_cameras)",
    "points": "LiDAR points (x, y, z, intensity[, time lag s]) padded to the bucket",
    "points_valid": "which rows of points are real points",
    "cls_logits": "class logits of every query (last decoder layer)",
    "boxes": "decoded boxes x, y, z, l, w, h, yaw, vx, vy, vz (ego frame)",
    "occlusion_logits": "occlusion-state logits",
    "completed_cameras": "failed cameras the cascade rewrote with evidence",
    "kept_index": "queries pushed into the query queue, best first (the runner keeps their ids)",
    "past_centres": "kept queries' centres compensated to now (for id association outside)",
    "past_usable": "kept queries that may hand their id on",
}


@dataclass(frozen=True)
class GraphSignature:
    """Names, shapes and dtypes of the graph's inputs and outputs, in order."""
    inputs: list[tuple[str, tuple[int, ...], torch.dtype]]
    outputs: list[tuple[str, tuple[int, ...], torch.dtype]]
    state: list[str]

    @staticmethod
    def of(shapes: FixedShapes, num_queries: int) -> "GraphSignature":
        b, v = shapes.batch, shapes.cameras
        layout = shapes.layout
        inputs = [("images", (b, v, 3, *shapes.image_size), torch.float32), ("cam_mask", (b, v), torch.bool),
                  ("intrinsics", (b, v, 3, 3), torch.float32), ("cam2ego", (b, v, 4, 4), torch.float32),
                  ("ego2global", (b, 4, 4), torch.float64), ("timestamp_us", (b,), torch.int64),
                  ("sequence_changed", (b,), torch.bool)]
        if layout.history_frames > 0:
            inputs.append(("key_cameras", (v, shapes.key_cameras), torch.int64))
        if shapes.lidar_bucket > 0:
            inputs += [("points", (b, shapes.lidar_bucket, shapes.point_channels), torch.float32),
                       ("points_valid", (b, shapes.lidar_bucket), torch.bool)]
        inputs += [(f"importance_{level}", (b, v, h, w), torch.float32)
                   for level, (h, w) in enumerate(shapes.importance_sizes)]
        buffers = layout.buffers()
        inputs += [(spec.name, spec.shape, spec.dtype) for spec in buffers]
        outputs = [("cls_logits", (b, num_queries, 8), torch.float32), ("boxes", (b, num_queries, 10), torch.float32),
                   ("occlusion_logits", (b, num_queries, 4), torch.float32), ("completed_cameras", (b, v), torch.bool)]
        if layout.kept_frames > 0:
            f, k = layout.kept_frames, layout.kept_queries
            outputs += [("kept_index", (b, k), torch.int64), ("past_centres", (b, f, k, 3), torch.float32),
                        ("past_usable", (b, f, k), torch.bool)]
        outputs += [(f"new_{spec.name}", spec.shape, spec.dtype) for spec in buffers]
        return GraphSignature(inputs, outputs, [spec.name for spec in buffers])

    @property
    def input_names(self) -> list[str]:
        return [name for name, _, _ in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _, _ in self.outputs]

    def example_inputs(self, frame: dict[str, Tensor], state: dict[str, Tensor]) -> tuple[Tensor, ...]:
        """The positional inputs from a frame dict (images as float in [0, 1]) and a state dict."""
        merged = {**frame, **state}
        return tuple(merged[name] for name in self.input_names)


class GraphAdapter(nn.Module):
    """forward(*inputs in GraphSignature order) -> tuple of outputs in its order."""

    def __init__(self, detector: FixedShapeDetector, signature: GraphSignature):
        super().__init__()
        self.detector, self.signature = detector, signature

    def forward(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        named = dict(zip(self.signature.input_names, tensors, strict=True))
        state = {name: named.pop(name) for name in self.signature.state}
        outputs = self.detector(named, state)
        return tuple(outputs[name[len("new_"):]] if name.startswith("new_") else outputs[name]
                     for name in self.signature.output_names)


def float_images(images: Tensor) -> Tensor:
    """Images as the graph takes them: float32 in [0, 1] (uint8 / 255, as normalise_images)."""
    return images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.to(torch.float32)
