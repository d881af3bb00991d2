"""``FixedShapeRunner``: the fixed-shape path behind ``model.infer``'s call shape.

``runner.infer(inputs: FrameInputs, state) -> (detections per sample, new
state)``, so the perception node swaps it in for the model. Around the graph
(``FixedShapeDetector``, optionally ``torch.compile``d) it does what a graph
cannot: pads the clouds into the bucket, compares sequence ids, draws the
planned path's importance maps, associates object ids (Hungarian, as the eager
head) and post-processes. ``FrameEncoder`` holds that outside part so the
ONNX runner shares it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch
from torch import Tensor

from ..models.backbone import STRIDES
from ..models.bev.grid import BEVGrid
from ..models.completion.planning_guided import trajectory_importance
from ..models.detector import SparseCompDetector
from ..models.head.blind_zone_hold import hold_detections
from ..models.head.postprocess import PostProcessConfig, postprocess
from ..models.head.track_filter import filter_detections
from ..models.head.track_ids import associate_ids
from ..models.inputs import FrameInputs
from ..models.model_config import ModelConfig
from .fixed_detector import FixedShapeDetector, fixed_shapes
from .lidar_bucket import pad_points
from .static_state import StateLayout, pushed

log = logging.getLogger(__name__)

DEFAULT_LIDAR_BUCKET = 150_000      # points per merged cloud; a 5-sweep tiny frame of the generated data has ~40k


@dataclass(frozen=True)
class RunnerState:
    """The runner's temporal state: the graph's fixed-shape buffers (None before the
    first frame fixes the batch size) plus what stays outside the graph: the kept
    queries' ids [B, F, k] int64, the id counter, the last frame's sequence ids, the
    track filter's state per sample (head/track_filter.py) and the blind-zone hold's
    (head/blind_zone_hold.py)."""
    buffers: dict[str, Tensor] | None = None
    kept_ids: Tensor | None = None
    next_id: int = 1
    sequence_ids: tuple | None = None
    tracks: tuple = ()
    held: tuple = ()


class FrameEncoder:
    """FrameInputs -> the graph's frame tensors, and the graph's outputs -> detections,
    ids and the next RunnerState: everything outside the graph, from the model config
    alone (no weights), for the PyTorch and the ONNX runner alike."""

    def __init__(self, cfg: ModelConfig, lidar_bucket: int):
        self.cfg, self.lidar_bucket = cfg, lidar_bucket
        self.lidar = cfg.lidar.enable
        self.point_channels = 5 if cfg.lidar.sweeps > 1 else 4
        temporal = cfg.cascade.temporal
        self.temporal_mode = temporal.mode if temporal.enable else None
        self.num_neighbours = temporal.num_neighbours
        self.planning = cfg.cascade.planning_guided if cfg.cascade.planning_guided.enable else None
        self.kept_frames = cfg.head.queue_length - 1
        self.grid = BEVGrid(cfg.bev)

    def key_cameras(self, inputs: FrameInputs) -> Tensor:
        """[V, K] as ``TemporalCompletion.key_cameras`` (K = 0 without temporal completion)."""
        calibration = inputs.calibration
        cameras = calibration.num_cameras
        device = inputs.cam_mask.device
        if self.temporal_mode is None:
            return torch.zeros(cameras, 0, dtype=torch.int64, device=device)
        if self.temporal_mode == "global":
            return torch.arange(cameras, device=device)[None].expand(cameras, -1).contiguous()
        return calibration.neighbours(self.num_neighbours).to(device)

    def frame(self, inputs: FrameInputs, state: RunnerState) -> dict[str, Tensor]:
        """The graph's frame inputs (see FixedShapeDetector)."""
        batch = inputs.cam_mask.shape[0]
        device = inputs.cam_mask.device
        changed = [False] * batch
        if inputs.sequence_ids is not None and state.sequence_ids is not None:
            changed = [a != b for a, b in zip(state.sequence_ids, inputs.sequence_ids)]
        frame = {"images": inputs.images, "cam_mask": inputs.cam_mask.to(torch.bool),
                 "intrinsics": inputs.calibration.intrinsics.float(), "cam2ego": inputs.calibration.cam2ego.float(),
                 "ego2global": inputs.ego2global.to(torch.float64), "timestamp_us": inputs.timestamp_us.to(torch.int64),
                 "sequence_changed": torch.tensor(changed, dtype=torch.bool, device=device),
                 "key_cameras": self.key_cameras(inputs)}
        if self.lidar:
            frame["points"], frame["points_valid"], cut = pad_points(inputs.lidar_points, batch, self.lidar_bucket,
                                                                     self.point_channels, device)
            if cut:
                log.warning("%d LiDAR points past the bucket of %d per cloud were dropped", cut, self.lidar_bucket)
        if self.planning is not None:
            height, width = inputs.images.shape[-2:]
            for level, stride in enumerate(STRIDES):
                frame[f"importance_{level}"] = trajectory_importance(
                    inputs.ego_trajectory, inputs.calibration.at_stride(stride), inputs.calibration.cam2ego,
                    (height // stride, width // stride), self.planning.importance_sigma_px / stride,
                    self.planning.path_samples_per_metre, self.planning.ground_height)
        return frame

    def finish(self, outputs: dict[str, Tensor], state: RunnerState, inputs: FrameInputs,
               buffer_names: Sequence[str], postprocess_cfg: PostProcessConfig) -> tuple[list[dict], RunnerState]:
        """Ids (associate_ids on the graph's past_* outputs), post-processing, the track
        filter, the blind-zone hold and the new state."""
        cls_logits, boxes = outputs["cls_logits"], outputs["boxes"]
        scores, labels = torch.sigmoid(cls_logits).max(dim=-1)
        past = []
        if self.kept_frames > 0:
            past = [(outputs["past_centres"][:, f], state.buffers["queue_labels"][:, f], state.kept_ids[:, f],
                     outputs["past_usable"][:, f]) for f in range(self.kept_frames)]
        ids, next_id = associate_ids(boxes[..., :3], labels, scores, past, state.next_id, self.cfg.head.id_gate_m,
                                     self.cfg.head.id_min_score)
        kept_ids = state.kept_ids
        if self.kept_frames > 0:
            kept_ids = pushed(kept_ids, ids.gather(1, outputs["kept_index"]))
        detections = postprocess({"cls_logits": cls_logits[None], "occlusion_logits": outputs["occlusion_logits"][None],
                                  "boxes": boxes[None], "ids": ids}, postprocess_cfg)
        points = inputs.lidar_points if self.cfg.lidar.enable else None      # a camera-only model: none
        detections, tracks = filter_detections(detections, inputs.ego2global, inputs.timestamp_us, state.tracks,
                                               self.cfg.track_filter, inputs.sequence_ids, points)
        detections, held = hold_detections(detections, inputs.cam_mask, inputs.calibration.intrinsics,
                                           inputs.calibration.cam2ego, inputs.calibration.image_size,
                                           inputs.ego2global, inputs.timestamp_us, state.held,
                                           self.cfg.blind_zone_hold, inputs.sequence_ids,
                                           self.grid, postprocess_cfg.score_threshold, points)
        new_state = RunnerState({name: outputs[name] for name in buffer_names}, kept_ids, next_id,
                                None if inputs.sequence_ids is None else tuple(inputs.sequence_ids), tracks, held)
        return detections, new_state

    def started(self, state: RunnerState | None, layout: StateLayout, device) -> RunnerState:
        """``state`` with buffers for this layout (empty ones on the first frame or when the
        batch size changed: a new stream, as the eager state's scene check decides)."""
        state = state or RunnerState()
        if state.buffers is not None and state.kept_ids is not None and state.kept_ids.shape[0] == layout.batch:
            return state
        kept_ids = torch.zeros(layout.batch, layout.kept_frames, layout.kept_queries, dtype=torch.int64, device=device)
        return replace(state, buffers=layout.empty(device), kept_ids=kept_ids, sequence_ids=None, tracks=(),
                       held=())


class FixedShapeRunner:
    """``infer(inputs: FrameInputs, state: RunnerState | None) -> (detections per sample,
    RunnerState)``, the call shape of ``SparseCompDetector.infer``, on the fixed-shape
    graph. ``compile``: run the graph through ``torch.compile(fullgraph=True,
    dynamic=False)`` (one compilation per shape; the first frame pays it).
    ``postprocess_cfg`` is the model's object: settings changed there apply here."""

    def __init__(self, model: SparseCompDetector, cfg: ModelConfig, lidar_bucket: int = DEFAULT_LIDAR_BUCKET,
                 compile: bool = False):
        if lidar_bucket < 1:
            raise ValueError(f"lidar_bucket must be >= 1, got {lidar_bucket}")
        self.model = model.eval()
        self.graph = FixedShapeDetector(self.model)
        self.encoder = FrameEncoder(cfg, lidar_bucket)
        self.postprocess_cfg = model.postprocess_cfg
        self.step_graph: Callable = self.graph
        if compile:
            self.step_graph = torch.compile(self.graph, fullgraph=True, dynamic=False)

    def initial_state(self) -> RunnerState:
        return RunnerState()

    def layout(self, inputs: FrameInputs) -> StateLayout:
        batch, cameras = inputs.cam_mask.shape
        return fixed_shapes(self.model, batch, cameras, tuple(inputs.images.shape[-2:]),
                            self.encoder.lidar_bucket).layout

    @torch.no_grad()
    def step(self, inputs: FrameInputs, state: RunnerState | None = None) -> tuple[dict[str, Tensor], RunnerState]:
        """The graph's raw outputs for one frame and the state they start from (with buffers)."""
        layout = self.layout(inputs)
        state = self.encoder.started(state, layout, inputs.cam_mask.device)
        return self.step_graph(self.encoder.frame(inputs, state), state.buffers), state

    @torch.no_grad()
    def infer(self, inputs: FrameInputs, state: RunnerState | None = None,
              postprocess_cfg: PostProcessConfig | None = None) -> tuple[list[dict], RunnerState]:
        outputs, state = self.step(inputs, state)
        names = [spec.name for spec in self.layout(inputs).buffers()]
        return self.encoder.finish(outputs, state, inputs, names, postprocess_cfg or self.postprocess_cfg)
