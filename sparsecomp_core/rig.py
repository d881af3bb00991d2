"""Camera rigs: the cameras' names, headings and fields of view, from YAML.

On the vehicle the calibration comes from CameraInfo and tf, in training
from the dataset; a rig file describes the nominal rig (camera order and
names, model-input size) and gives a nominal calibration for synthetic data
and tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import ConfigError, load_config
from .geometry import Calibration, cam2ego_from_heading, pinhole_intrinsics
from .resources import named_config


@dataclass
class CameraSpec:
    name: str
    yaw_deg: float                       # optical-axis heading, CCW from ego +x
    hfov_deg: float                      # horizontal field of view
    pitch_deg: float = 0.0               # positive = looking down
    position: tuple[float, float, float] = (1.5, 0.0, 1.6)  # in the ego frame, m

    def __post_init__(self) -> None:
        if not 1.0 <= self.hfov_deg < 180.0:
            raise ValueError(f"camera {self.name}: hfov_deg must be in [1, 180), got {self.hfov_deg}")


@dataclass
class RigConfig:
    name: str
    image_height: int                    # model input, pixels
    image_width: int
    cameras: list[CameraSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("a rig needs at least one camera")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        if self.image_height <= 0 or self.image_width <= 0:
            raise ValueError("image size must be positive")

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def num_cameras(self) -> int:
        return len(self.cameras)

    def calibration(self, batch_size: int = 1, image_size: tuple[int, int] | None = None) -> Calibration:
        """Nominal calibration [B, V, ...] at ``image_size`` (default: the rig's)."""
        height, width = image_size or (self.image_height, self.image_width)
        intrinsics = torch.stack([pinhole_intrinsics(c.hfov_deg, width, height) for c in self.cameras])
        cam2ego = torch.stack([cam2ego_from_heading(c.yaw_deg, c.pitch_deg, c.position) for c in self.cameras])
        return Calibration(intrinsics.expand(batch_size, -1, -1, -1).clone(),
                           cam2ego.expand(batch_size, -1, -1, -1).clone(), (height, width))


def load_rig(name_or_path: str | Path) -> RigConfig:
    """A rig from ``config/rigs/<name>.yaml`` (source tree or installed share
    folder, ``sparsecomp_core.resources``) or from a YAML path."""
    try:
        path = named_config("rigs", name_or_path)
    except FileNotFoundError as exc:
        raise ConfigError(f"no rig named {name_or_path!r}: {exc}") from exc
    return load_config(RigConfig, path)
