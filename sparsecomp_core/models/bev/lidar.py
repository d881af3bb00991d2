"""LiDAR branch: dynamic pillars -> pillar feature net -> scatter -> BEV backbone."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .grid import BEVGrid


@dataclass
class LidarConfig:
    enable: bool = True
    pillar_channels: int = 64
    backbone_channels: int = 128
    z_range: tuple[float, float] = (-3.0, 5.0)     # points outside are dropped
    max_intensity: float = 255.0                   # intensity is divided by this
    # Sweeps merged per frame (data.sweeps.merge_sweeps). 1: the current sweep,
    # points (x, y, z, intensity). > 1: the loader / node merge that many and
    # every point carries its time lag dt_s as a 5th channel, which the pillar
    # features take in (a network trained with 1 has no input for it).
    sweeps: int = 1
    # True: a sample without a single usable point (no LiDAR this frame) gets a
    # learned "absent" BEV vector instead of the backbone's output of an empty
    # map, which depends on the batch norm's statistics (docs/model.md, "Sensor
    # dropout").
    absent_embedding: bool = False

    def __post_init__(self) -> None:
        if self.sweeps < 1:
            raise ValueError(f"sweeps must be >= 1, got {self.sweeps}")


class PillarFeatureNet(nn.Module):
    """Per point: (x, y, z, intensity, offsets from the pillar's centre and mean,
    and with ``time_channel`` the point's time lag dt_s) -> linear -> norm ->
    ReLU, max-pooled per pillar (dynamic pillars: no cap on points per pillar,
    no Python loop over points).

    forward(points [N, 4] or with time_channel [N, 5], pillar index [N] (flat,
    batch-offset), num_pillars) -> pillar features [num_pillars, C] (zeros for
    empty pillars).
    """

    def __init__(self, grid: BEVGrid, out_channels: int, max_intensity: float = 255.0, time_channel: bool = False):
        super().__init__()
        self.grid, self.max_intensity, self.time_channel = grid, max_intensity, time_channel
        self.linear = nn.Linear(10 if time_channel else 9, out_channels, bias=False)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, points: Tensor, pillar: Tensor, num_pillars: int) -> Tensor:
        channels = self.linear.out_features
        count = torch.zeros(num_pillars, device=points.device).index_add_(0, pillar, torch.ones_like(pillar, dtype=torch.float32))
        mean = torch.zeros(num_pillars, 3, device=points.device).index_add_(0, pillar, points[:, :3])
        mean = mean / count.clamp(min=1)[:, None]
        cell_in_map = pillar % (self.grid.height * self.grid.width)
        centre_x = self.grid.x_min + ((cell_in_map % self.grid.width).float() + 0.5) * self.grid.cell
        centre_y = self.grid.y_min + ((cell_in_map // self.grid.width).float() + 0.5) * self.grid.cell
        decorated = torch.cat([points[:, :3], points[:, 3:4] / self.max_intensity, points[:, :3] - mean[pillar],
                               (points[:, 0] - centre_x)[:, None], (points[:, 1] - centre_y)[:, None],
                               points[:, 4:5] if self.time_channel else points[:, :0]], dim=1)
        per_point = torch.relu(self.norm(self.linear(decorated)))
        pooled = torch.zeros(num_pillars, channels, device=points.device, dtype=per_point.dtype)
        return pooled.scatter_reduce(0, pillar[:, None].expand(-1, channels), per_point, reduce="amax",
                                     include_self=True)


class BEVBackbone(nn.Module):
    """SECOND-style: [B, C_in, H, W] -> [B, C_out, H, W] (two stages, the
    second at half resolution, upsampled and concatenated)."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
        self.stage1 = block(in_channels, channels, 1)
        self.stage2 = block(channels, channels * 2, 2)
        self.up = nn.Sequential(nn.ConvTranspose2d(channels * 2, channels, 2, 2, bias=False), nn.BatchNorm2d(channels),
                                nn.ReLU(inplace=True))
        self.output = nn.Sequential(nn.Conv2d(channels * 2, out_channels, 3, 1, 1, bias=False),
                                    nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        first = self.stage1(x)
        second = self.up(self.stage2(first))[..., :first.shape[-2], :first.shape[-1]]
        return self.output(torch.cat([first, second], dim=1))


class LidarBranch(nn.Module):
    """forward(points: list of B clouds [N_i, >=4] (x, y, z, intensity, ego frame))
    -> BEV [B, C_out, H, W]. Non-finite points and points outside the grid are
    dropped; an empty cloud gives an all-zero pillar map (with
    ``absent_embedding``, a learned BEV vector instead: ``mark_absent``).

    With ``time_channel`` (model config ``lidar.sweeps > 1``) a cloud is
    [N_i, 5]: merged sweeps with the time lag dt_s (``data.sweeps.merge_sweeps``);
    a 4-column cloud is taken as one current sweep (dt_s = 0). Without it only
    the first 4 columns are read (today's input)."""

    def __init__(self, grid: BEVGrid, out_channels: int, pillar_channels: int = 64, backbone_channels: int = 128,
                 z_range: tuple[float, float] = (-3.0, 5.0), max_intensity: float = 255.0, time_channel: bool = False,
                 absent_embedding: bool = False):
        super().__init__()
        self.grid, self.z_range = grid, z_range
        self.point_channels = 5 if time_channel else 4
        self.vfe = PillarFeatureNet(grid, pillar_channels, max_intensity, time_channel)
        self.bev_backbone = BEVBackbone(pillar_channels, backbone_channels, out_channels)
        self.absent = nn.Parameter(torch.zeros(1, out_channels, 1, 1)) if absent_embedding else None

    def mark_absent(self, bev: Tensor, present: Tensor) -> Tensor:
        """bev [B, C, H, W], present [B] bool (the sample kept at least one point) -> bev with
        the learned absent vector for samples without points (unchanged without absent_embedding)."""
        if self.absent is None:
            return bev
        return torch.where(present.to(bev.device)[:, None, None, None], bev, self.absent.to(bev.dtype))

    def forward(self, points: list[Tensor]) -> Tensor:
        cells = self.grid.height * self.grid.width
        batch = len(points)
        kept, pillars = [], []
        for b, cloud in enumerate(points):
            cloud = cloud[:, :self.point_channels].float()
            if cloud.shape[1] < self.point_channels:        # a single sweep without its time column
                cloud = torch.cat([cloud, cloud.new_zeros(len(cloud), self.point_channels - cloud.shape[1])], 1)
            index, inside = self.grid.cell_index(cloud)
            keep = inside & torch.isfinite(cloud).all(dim=1) & (cloud[:, 2] >= self.z_range[0]) & (cloud[:, 2] < self.z_range[1])
            kept.append(cloud[keep])
            pillars.append(index[keep] + b * cells)
        present = torch.tensor([len(cloud) > 0 for cloud in kept], dtype=torch.bool)
        device = self.vfe.linear.weight.device
        all_points = torch.cat(kept).to(device) if kept else torch.zeros(0, self.point_channels, device=device)
        pillar_index = torch.cat(pillars).to(device) if pillars else torch.zeros(0, dtype=torch.long, device=device)
        pillar_features = self.vfe(all_points, pillar_index, batch * cells)             # middle encoder: scatter
        bev = pillar_features.reshape(batch, self.grid.height, self.grid.width, -1).permute(0, 3, 1, 2)
        return self.mark_absent(self.bev_backbone(bev.contiguous()), present)


class ConvFuser(nn.Module):
    """Camera BEV (+ LiDAR BEV) -> fused BEV [B, C, H, W]: concat, conv, BN, ReLU."""

    def __init__(self, in_channels: list[int], out_channels: int):
        super().__init__()
        self.fuse = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, maps: list[Tensor]) -> Tensor:
        return self.fuse(torch.cat(maps, dim=1))
