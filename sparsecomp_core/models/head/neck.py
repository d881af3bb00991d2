"""ConvResBlockNeck: fused BEV [B, C_in, H, W] -> BEV tokens [B, H*W, C_out]."""
from __future__ import annotations

from torch import Tensor, nn


class ConvResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.body(x))


class ConvResBlockNeck(nn.Module):
    """forward(bev [B, C_in, H, W]) -> dict(bev [B, C_out, H, W], tokens [B, H*W, C_out])."""

    def __init__(self, in_channels: int = 256, out_channels: int = 512, num_blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(ConvResBlock(out_channels) for _ in range(num_blocks)))

    def forward(self, bev: Tensor) -> dict:
        out = self.blocks(self.stem(bev))
        return {"bev": out, "tokens": out.flatten(2).transpose(1, 2)}
