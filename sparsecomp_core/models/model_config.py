"""Model configuration (``config/models/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, load_config
from ..resources import named_config
from ..rig import RigConfig, load_rig
from .backbone import BackboneConfig
from .bev.grid import BEVGridConfig
from .bev.lidar import LidarConfig
from .bev.view_transform import ViewTransformConfig
from .completion.cascade import CascadeConfig
from .head.blind_zone_hold import BlindZoneHoldConfig
from .head.dynamic_head import DynamicHeadConfig
from .head.losses import DynamicLossConfig
from .head.postprocess import PostProcessConfig
from .head.track_filter import TrackFilterConfig


@dataclass
class CameraDropoutConfig:
    """RandCamMask in training (SPEC 2)."""
    p_missing: float = 0.6
    n_min: int = 1
    n_max: int = 2


@dataclass
class ModelConfig:
    name: str
    rig: str = "default7"                 # config/rigs/<rig>.yaml, or a path
    image_height: int | None = None       # model input; default: the rig's
    image_width: int | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    camera_dropout: CameraDropoutConfig = field(default_factory=CameraDropoutConfig)
    bev: BEVGridConfig = field(default_factory=BEVGridConfig)
    bev_channels: int = 256
    view_transform: ViewTransformConfig = field(default_factory=ViewTransformConfig)
    lidar: LidarConfig = field(default_factory=LidarConfig)
    head: DynamicHeadConfig = field(default_factory=DynamicHeadConfig)
    loss: DynamicLossConfig = field(default_factory=DynamicLossConfig)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)
    track_filter: TrackFilterConfig = field(default_factory=TrackFilterConfig)
    blind_zone_hold: BlindZoneHoldConfig = field(default_factory=BlindZoneHoldConfig)

    def __post_init__(self) -> None:
        if (self.image_height is None) != (self.image_width is None):
            raise ValueError("give both image_height and image_width, or neither")
        if self.image_height is not None and (self.image_height % 64 or self.image_width % 64):
            raise ValueError("image_height and image_width must be multiples of 64 (the coarsest FPN stride)")

    def load_rig(self) -> RigConfig:
        rig = load_rig(self.rig)
        if self.image_height is not None:
            rig.image_height, rig.image_width = self.image_height, self.image_width
        return rig


def load_model_config(name_or_path: str | Path) -> ModelConfig:
    """``config/models/<name>.yaml`` (source tree or installed share folder,
    ``sparsecomp_core.resources``) or a YAML path."""
    try:
        path = named_config("models", name_or_path)
    except FileNotFoundError as exc:
        raise ConfigError(f"no model config named {name_or_path!r}: {exc}") from exc
    return load_config(ModelConfig, path)
