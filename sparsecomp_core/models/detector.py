"""The full model: cameras (+ LiDAR) -> completion -> BEV -> temporal query head -> boxes."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from ..config import from_dict, to_dict
from .bev.grid import BEVGrid
from .bev.lidar import ConvFuser, LidarBranch
from .bev.view_transform import CameraViewTransform
from .camera_branch import CameraBranch, build_camera_branch
from .completion.cascade import CascadeState
from .head.blind_zone_hold import BlindZoneHoldConfig, hold_detections
from .head.dynamic_head import DynamicHead, build_dynamic_head
from .head.losses import DynamicLoss
from .head.neck import ConvResBlockNeck
from .head.postprocess import PostProcessConfig, postprocess
from .head.query_queue import QueryQueue
from .head.track_filter import TrackFilterConfig, filter_detections
from .inputs import FrameInputs
from .model_config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelState:
    """All temporal state of the model (explicit; pass it in, take it back). ``tracks``:
    the track filter's state per sample (head/track_filter.py), ``held``: the blind-zone
    hold's per sample (head/blind_zone_hold.py); both ``infer`` only."""
    cascade: CascadeState = field(default_factory=CascadeState)
    queries: QueryQueue = field(default_factory=QueryQueue)
    tracks: tuple = ()
    held: tuple = ()


class SparseCompDetector(nn.Module):
    """forward(inputs: FrameInputs, state: ModelState, targets=None) -> dict(
    head outputs (see DynamicHead), cascade outputs under "completion", state:
    ModelState, and with targets "losses": every loss). Losses are computed
    inside forward so a DistributedDataParallel wrapper sees the whole step.
    ``forward_train`` returns (losses, state); ``infer`` post-processes (no grad)."""

    def __init__(self, grid: BEVGrid, camera_branch: CameraBranch, view_transform: CameraViewTransform,
                 lidar: LidarBranch | None, fuser: ConvFuser, neck: ConvResBlockNeck, head: DynamicHead,
                 loss: DynamicLoss, postprocess_cfg: PostProcessConfig, view_levels: tuple[int, ...] = (1,),
                 use_completed_cameras: bool = False, track_filter_cfg: TrackFilterConfig | None = None,
                 completed_cameras_in_gaps_only: bool = False, blind_zone_hold_cfg: BlindZoneHoldConfig | None = None):
        super().__init__()
        self.blind_zone_hold_cfg = blind_zone_hold_cfg or BlindZoneHoldConfig(enabled=False)
        self.completed_cameras_in_gaps_only = completed_cameras_in_gaps_only
        self.track_filter_cfg = track_filter_cfg or TrackFilterConfig(enabled=False)
        self.use_completed_cameras = use_completed_cameras
        self.grid = grid
        self.camera_branch, self.view_transform, self.lidar = camera_branch, view_transform, lidar
        self.fuser, self.neck, self.head, self.loss = fuser, neck, head, loss
        self.postprocess_cfg, self.view_levels = postprocess_cfg, tuple(view_levels)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def initial_state(self) -> ModelState:
        return ModelState(self.camera_branch.initial_state(), self.head.empty_queue())

    def normalise_images(self, images: Tensor) -> Tensor:
        """[B, V, 3, H, W] float32, contiguous, from uint8 (0..255) or float (0..1) images in any
        memory layout (the node passes a view of an HWC buffer; this conversion reorders it)."""
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        images = images.to(torch.float32, memory_format=torch.contiguous_format)
        return (images / scale - self.pixel_mean) / self.pixel_std

    def forward(self, inputs: FrameInputs, state: ModelState | None = None, targets: list[dict] | None = None) -> dict:
        state = state or self.initial_state()
        teacher = None if inputs.teacher_images is None else self.normalise_images(inputs.teacher_images)
        camera = self.camera_branch(self.normalise_images(inputs.images), inputs.cam_mask, inputs.calibration,
                                    inputs.ego2global, inputs.timestamp_us, state.cascade, inputs.sequence_ids,
                                    inputs.ego_trajectory, teacher)
        excluded, gap_only, completed = self.view_camera_masks(inputs.cam_mask, camera["completed_cameras"])
        maps = [self.view_transform([camera["features"][level] for level in self.view_levels], excluded,
                                    inputs.calibration, gap_only, completed)]
        if self.lidar is not None:
            clouds = inputs.lidar_points
            if clouds is None:   # LiDAR configured but absent this frame: an empty sweep
                clouds = [maps[0].new_zeros(0, 4) for _ in range(maps[0].shape[0])]
            maps.append(self.lidar(clouds))
        neck = self.neck(self.fuser(maps))
        outputs = self.head(neck["tokens"], inputs.ego2global, inputs.timestamp_us, state.queries, inputs.sequence_ids)
        queue = self.head.update_queue(outputs, inputs.ego2global, inputs.timestamp_us, inputs.sequence_ids)
        outputs["completion"] = camera
        outputs["state"] = ModelState(camera["state"], queue)
        if targets is not None:
            outputs["losses"] = {**camera["losses"], **self.loss(outputs, self.targets_in_range(targets))}
        return outputs

    def view_camera_masks(self, cam_mask: Tensor, completed: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """cam_mask, completed_cameras [B, V] bool -> (cameras the view transform leaves out,
        cameras it uses only where no live camera sees, or None, failed cameras whose features
        were completed: the view transform's ``completed``)."""
        completed_failed = cam_mask & completed
        if not self.use_completed_cameras:
            return cam_mask, None, completed_failed
        gap_only = completed_failed if self.completed_cameras_in_gaps_only else None
        return cam_mask & ~completed, gap_only, completed_failed

    def targets_in_range(self, targets: list[dict]) -> list[dict]:
        """Targets without the boxes whose centre lies outside the BEV grid: the
        head cannot place a box there, and matching one would drag a query to the edge."""
        kept = []
        for target in targets:
            inside = self.grid.contains(target["boxes"][:, :2])
            kept.append({k: (v[inside] if isinstance(v, Tensor) and len(v) == len(inside) else v)
                         for k, v in target.items()})
        return kept

    def forward_train(self, inputs: FrameInputs, targets: list[dict], state: ModelState | None = None) -> tuple[dict, ModelState]:
        """All losses in one dict (cascade losses need inputs.teacher_images) and the new state."""
        outputs = self(inputs, state, targets)
        return outputs["losses"], outputs["state"]

    @torch.no_grad()
    def infer(self, inputs: FrameInputs, state: ModelState | None = None,
              postprocess_cfg: PostProcessConfig | None = None) -> tuple[list[dict], ModelState]:
        """Detections per sample (see head.postprocess; the model's own settings
        unless ``postprocess_cfg`` is given; velocities from the track filter when
        ``track_filter_cfg.enabled``; objects in the failed cameras' blind zone held when
        ``blind_zone_hold_cfg.enabled``) and the new state."""
        state = state or self.initial_state()
        outputs = self(inputs, state)
        detections, tracks, held = self.detections(outputs, inputs, state.tracks, postprocess_cfg, state.held)
        return detections, replace(outputs["state"], tracks=tracks, held=held)

    def detections(self, outputs: dict, inputs: FrameInputs, tracks: tuple = (),
                   postprocess_cfg: PostProcessConfig | None = None,
                   held: tuple = ()) -> tuple[list[dict], tuple, tuple]:
        """forward's outputs for ``inputs`` -> (detections per sample, new track-filter
        state, new blind-zone hold state): post-processed, through the track filter from
        ``tracks`` (ModelState.tracks), then the blind-zone hold from ``held`` (ModelState.held)."""
        postprocess_cfg = postprocess_cfg or self.postprocess_cfg
        detections = postprocess(outputs, postprocess_cfg)
        points = inputs.lidar_points if self.lidar is not None else None    # a camera-only model: none
        detections, tracks = filter_detections(detections, inputs.ego2global, inputs.timestamp_us, tracks,
                                               self.track_filter_cfg, inputs.sequence_ids, points)
        detections, held = hold_detections(detections, inputs.cam_mask, inputs.calibration.intrinsics,
                                           inputs.calibration.cam2ego, inputs.calibration.image_size,
                                           inputs.ego2global, inputs.timestamp_us, held, self.blind_zone_hold_cfg,
                                           inputs.sequence_ids, self.grid, postprocess_cfg.score_threshold, points)
        return detections, tracks, held


def build_detector(cfg: ModelConfig) -> SparseCompDetector:
    rig = cfg.load_rig()
    grid = BEVGrid(cfg.bev)
    camera_branch = build_camera_branch(cfg, rig.num_cameras)
    vt = cfg.view_transform
    view_levels = (vt.feature_level, *vt.extra_levels)
    view_transform = CameraViewTransform(grid, cfg.backbone.out_channels, cfg.bev_channels,
                                         camera_branch.backbone.strides[vt.feature_level], tuple(vt.heights),
                                         vt.points_per_height, vt.max_offset_px, len(view_levels), vt.absent_embedding,
                                         vt.completed_embedding)
    lidar = None
    if cfg.lidar.enable:
        lidar = LidarBranch(grid, cfg.bev_channels, cfg.lidar.pillar_channels, cfg.lidar.backbone_channels,
                            tuple(cfg.lidar.z_range), cfg.lidar.max_intensity, time_channel=cfg.lidar.sweeps > 1,
                            absent_embedding=cfg.lidar.absent_embedding)
    fuser = ConvFuser([cfg.bev_channels] * (2 if lidar is not None else 1), cfg.bev_channels)
    neck = ConvResBlockNeck(cfg.bev_channels, cfg.head.neck_channels, cfg.head.neck_blocks)
    return SparseCompDetector(grid, camera_branch, view_transform, lidar, fuser, neck, build_dynamic_head(cfg.head, grid),
                              DynamicLoss(cfg.loss, grid), cfg.postprocess, view_levels, vt.use_completed_cameras,
                              cfg.track_filter, vt.completed_cameras_in_gaps_only, cfg.blind_zone_hold)


class CheckpointError(ValueError):
    """A checkpoint file that cannot give a detector: the message names the file and what is wrong."""


_NOT_A_CHECKPOINT = "{path} is not a sparsecomp checkpoint (corrupt or not a torch file): {reason}"


def _short_reason(exc: BaseException) -> str:
    """The informative part of a torch.load error (its messages run to a page)."""
    text = " ".join(str(exc).split())
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"unsupported global {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    if found:
        text = found.group(1)
    text = text.split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def read_checkpoint(checkpoint: str | Path) -> dict:
    """The dict stored in a torch checkpoint, read with ``weights_only=True`` (tensors and
    plain containers only: no code runs while loading). Raises FileNotFoundError for a
    missing file and CheckpointError for one torch cannot read safely."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(_NOT_A_CHECKPOINT.format(path=path, reason="the file is empty"))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:        # torch raises KeyError, EOFError, RuntimeError, UnpicklingError, ... here
        if "Unsupported global" in str(exc):
            raise CheckpointError(f"{path} holds Python objects that the safe loader (weights_only=True) refuses "
                                  f"({_short_reason(exc)}); a sparsecomp checkpoint holds only tensors and plain "
                                  "dicts, lists, numbers and strings") from exc
        raise CheckpointError(_NOT_A_CHECKPOINT.format(path=path, reason=_short_reason(exc))) from exc
    if not isinstance(state, dict):
        raise CheckpointError(_NOT_A_CHECKPOINT.format(path=path, reason=f"it holds a {type(state).__name__}, "
                                                                         "not a dict"))
    return state


def checkpoint_model_config(checkpoint: str | Path, state: dict | None = None) -> ModelConfig:
    """The ModelConfig stored in a checkpoint (``state``: the already-read dict).

    A model file (``models/*.pt``, training's ``model.pt``) and a training checkpoint
    (``last.pt``) written since training stores the model config in it both qualify;
    an older ``last.pt`` or a bare state dict is refused with the file to use instead."""
    path = Path(checkpoint)
    state = read_checkpoint(path) if state is None else state
    if "model_config" not in state:
        if "train_config" in state or "optimizer" in state:
            raise CheckpointError(
                f"{path} is a training checkpoint (step {state.get('step', '?')}) without the model config (written "
                f"before training stored it there): evaluate or deploy {path.parent / 'model.pt'}, which training "
                "writes at its end, or resume training from this file with --resume")
        what = "a bare state dict" if state and all(isinstance(v, Tensor) for v in state.values()) else \
            f"a dict with keys {sorted(map(str, state))[:8]}"
        raise CheckpointError(f"{path} is not a sparsecomp model checkpoint: it holds {what}, not "
                              "{'model': state dict, 'model_config': dict} as training writes (model.pt, last.pt)")
    if not isinstance(state["model_config"], dict):
        raise CheckpointError(f"{path}: 'model_config' is a {type(state['model_config']).__name__}, not a dict")
    try:
        return from_dict(ModelConfig, state["model_config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: its model config is not valid here: {exc}") from exc


def checkpoint_cameras(checkpoint: str | Path) -> list[str]:
    """The camera names, in model order, of the rig the checkpoint's model was built for."""
    return checkpoint_model_config(checkpoint).load_rig().camera_names


def save_model_checkpoint(path: str | Path, model: nn.Module, cfg: ModelConfig, **extra) -> Path:
    """Write ``{"model": state dict, "model_config": plain dict, **extra}`` atomically (a
    half-written file is never left under ``path``); loadable with ``weights_only=True``."""
    return write_checkpoint(path, {"model": model.state_dict(), "model_config": to_dict(cfg), **extra})


def write_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    """Write a checkpoint dict (tensors and plain containers) atomically: to a temporary
    file beside ``path``, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)
    return path


def load_detector(checkpoint: str | Path, device: torch.device | str = "cpu", *,
                  expected_cameras: Sequence[str] | None = None) -> tuple[SparseCompDetector, ModelConfig]:
    """A detector in eval mode and its config from a checkpoint written by training
    (``{"model", "model_config"}``: a model file or a ``last.pt`` that stores its config),
    read safely (``weights_only=True``).

    ``expected_cameras``: the camera names, in order, that the caller will feed; if the
    checkpoint's rig differs (names or order) a ValueError names the file and both lists.
    Errors: FileNotFoundError (no such file), CheckpointError (a ValueError: unreadable,
    corrupt, not a sparsecomp checkpoint, a training checkpoint without the model config,
    weights that do not fit the config)."""
    path = Path(checkpoint)
    state = read_checkpoint(path)
    cfg = checkpoint_model_config(path, state)
    try:
        rig = cfg.load_rig()
    except (ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: the rig {cfg.rig!r} of its model config cannot be loaded: {exc}") from exc
    if expected_cameras is not None and list(expected_cameras) != rig.camera_names:
        raise ValueError(f"{path} was trained for the cameras {rig.camera_names} (rig {rig.name!r}), "
                         f"but the expected cameras are {list(expected_cameras)}")
    if not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path} has no 'model' state dict")
    model = build_detector(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit its model config {cfg.name!r}: {exc}") from exc
    return model.to(device).eval(), cfg
