"""Image backbone: ResNet (18/34/50) + FPN with 4 levels at strides 8/16/32/64.

Module names follow torchvision's ResNet, so ImageNet weights saved from
torchvision load with ``load_pretrained`` from a local file (no download).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STRIDES = (8, 16, 32, 64)


@dataclass
class BackboneConfig:
    depth: Literal[18, 34, 50] = 34
    base_width: int = 64            # channels of the stem; 64 = standard ResNet
    out_channels: int = 256         # FPN channels
    pretrained: str | None = None   # local state_dict file (torchvision ResNet names)
    use_amp: bool = True            # mixed precision on CUDA
    amp_dtype: Literal["float16", "bfloat16"] = "bfloat16"
    channels_last: bool = False     # ResNet + FPN in NHWC memory (their outputs stay NCHW): docs/performance.md

    def __post_init__(self) -> None:
        if self.base_width < 8 or self.out_channels < 8:
            raise ValueError("base_width and out_channels must be >= 8")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)), inplace=True)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                         nn.BatchNorm2d(out_channels))


_LAYOUTS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """ResNet trunk. forward: [N, 3, H, W] -> [C3, C4, C5] at strides 8, 16, 32."""

    def __init__(self, depth: int = 34, base_width: int = 64):
        super().__init__()
        block, counts = _LAYOUTS[depth]
        self.conv1 = nn.Conv2d(3, base_width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels, layers = base_width, []
        for index, count in enumerate(counts):
            width = base_width * 2 ** index
            blocks = []
            for block_index in range(count):
                stride = 2 if index > 0 and block_index == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = [base_width * 2 ** i * block.expansion for i in (1, 2, 3)]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


class FPN(nn.Module):
    """Feature pyramid: [C3, C4, C5] -> [P3, P4, P5, P6], ``out_channels`` each,
    strides 8/16/32/64 (P6 by a stride-2 conv on P5)."""

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, 1, 1) for _ in in_channels)
        self.extra = nn.Conv2d(out_channels, out_channels, 3, 2, 1)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral, features)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:],
                                                              mode="nearest")
        outputs = [conv(x) for conv, x in zip(self.output, laterals)]
        return outputs + [self.extra(outputs[-1])]


class ImageBackbone(nn.Module):
    """ResNet + FPN over all cameras at once.

    forward: images [B, V, 3, H, W] -> list of 4 feature maps [B, V, C, H/s, W/s],
    s = 8, 16, 32, 64, always float32 and contiguous (mixed precision inside on
    CUDA; channels_last: NHWC memory inside, which only the convolutions see).
    """
    strides = STRIDES

    def __init__(self, depth: int = 34, base_width: int = 64, out_channels: int = 256,
                 use_amp: bool = True, amp_dtype: torch.dtype = torch.bfloat16, channels_last: bool = False):
        super().__init__()
        self.resnet = ResNet(depth, base_width)
        self.fpn = FPN(self.resnet.out_channels, out_channels)
        self.out_channels = out_channels
        self.use_amp, self.amp_dtype = use_amp, amp_dtype
        self.channels_last = channels_last
        if channels_last:                   # weights stay NHWC through .to(device) and load_state_dict
            self.to(memory_format=torch.channels_last)

    def forward(self, images: Tensor) -> list[Tensor]:
        batch, cameras = images.shape[:2]
        flat = images.flatten(0, 1)
        if self.channels_last:
            flat = flat.contiguous(memory_format=torch.channels_last)
        amp = self.use_amp and flat.is_cuda
        with torch.autocast(device_type=flat.device.type, dtype=self.amp_dtype, enabled=amp):
            levels = self.fpn(self.resnet(flat))
        return [level.float().contiguous().unflatten(0, (batch, cameras)) for level in levels]

    def load_pretrained(self, path: str) -> None:
        """Load ResNet weights from a local file (a torchvision-style state_dict);
        classifier keys are ignored, any other mismatch raises."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = self.resnet.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            raise ValueError(f"{path}: not a matching ResNet state_dict: {exc}") from exc
        if missing or unexpected:
            raise ValueError(f"{path}: not a matching ResNet state_dict "
                             f"(missing {missing[:5]}..., unexpected {unexpected[:5]}...)")


def build_backbone(cfg: BackboneConfig) -> ImageBackbone:
    backbone = ImageBackbone(cfg.depth, cfg.base_width, cfg.out_channels, cfg.use_amp,
                             getattr(torch, cfg.amp_dtype), cfg.channels_last)
    if cfg.pretrained:
        backbone.load_pretrained(cfg.pretrained)
    return backbone
