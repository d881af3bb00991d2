"""What each inference optimisation buys, measured A/B in one process at the
full config's sizes (batch 1, 7 cameras at 512 x 960).

- batched cameras: the backbone (ResNet34 + FPN) over all 7 images at once
  vs a Python loop over the cameras;
- channels-last: backbone and BEV neck with weights and inputs in
  channels-last vs contiguous (NCHW) memory;
- fused attention: ``scaled_dot_product_attention`` vs the explicit
  softmax(QK^T)V that materialises the weights, at the head's cross-attention
  (384 queries x 14336 BEV tokens) and level 3's (one failed camera's 7680
  stride-8 positions x 6 cameras x 8 x 15 keys) sizes.

Settings alternate within each repeat; medians and the time ratio
(optimised / baseline) are reported. bf16 autocast and skipping the cascade
when no camera has failed are measured on the whole model by
bench/model_inference.py.

    python bench/optimizations.py [--repeats 5]

Writes bench/results/optimizations-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sparsecomp_core.models.model_config import load_model_config  # noqa: E402
from sparsecomp_core.models.backbone import build_backbone  # noqa: E402
from sparsecomp_core.models.blocks import KeyMaskedAttention  # noqa: E402
from sparsecomp_core.models.head.neck import ConvResBlockNeck  # noqa: E402


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1e3


def compare(name: str, baseline, optimised, repeats: int, device: str, note: str) -> dict:
    baseline(), optimised()                       # warm-up (allocator, oneDNN/cuDNN kernel choice)
    times = {"baseline": [], "optimised": []}
    for _ in range(repeats):
        times["baseline"].append(timed(baseline, device))
        times["optimised"].append(timed(optimised, device))
    base, opt = statistics.median(times["baseline"]), statistics.median(times["optimised"])
    row = {"change": name, "what": note, "baseline_ms": base, "optimised_ms": opt, "time_ratio": opt / base,
           "repeats": repeats}
    print(json.dumps(row), flush=True)
    return row


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device, repeats = args.device, args.repeats
    torch.manual_seed(0)
    cfg = load_model_config("full")
    rig = cfg.load_rig()
    rows = []

    backbone = build_backbone(cfg.backbone).to(device).eval()
    images = torch.randn(1, rig.num_cameras, 3, rig.image_height, rig.image_width, device=device)
    rows.append(compare("batched cameras", lambda: [backbone(images[:, v:v + 1]) for v in range(rig.num_cameras)],
                        lambda: backbone(images), repeats, device,
                        "ResNet34+FPN: a loop over 7 cameras vs one batch of 7"))

    backbone_cl = build_backbone(cfg.backbone).to(device).eval()
    backbone_cl.load_state_dict(backbone.state_dict())
    backbone_cl.to(memory_format=torch.channels_last)
    images_cl = images.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, images.shape[:2])
    rows.append(compare("channels-last backbone", lambda: backbone(images), lambda: backbone_cl(images_cl), repeats,
                        device, "ResNet34+FPN over 7 cameras, NCHW vs channels-last"))

    grid_h, grid_w = 112, 128
    neck = ConvResBlockNeck(cfg.bev_channels, cfg.head.neck_channels, cfg.head.neck_blocks).to(device).eval()
    neck_cl = ConvResBlockNeck(cfg.bev_channels, cfg.head.neck_channels, cfg.head.neck_blocks).to(device).eval()
    neck_cl.load_state_dict(neck.state_dict())
    neck_cl.to(memory_format=torch.channels_last)
    bev = torch.randn(1, cfg.bev_channels, grid_h, grid_w, device=device)
    bev_cl = bev.contiguous(memory_format=torch.channels_last)
    rows.append(compare("channels-last neck", lambda: neck(bev), lambda: neck_cl(bev_cl), repeats, device,
                        f"ConvResBlockNeck {cfg.bev_channels}->{cfg.head.neck_channels} on {grid_h}x{grid_w}"))

    channels = cfg.head.embed_dims
    attention = KeyMaskedAttention(channels, cfg.head.num_heads).to(device).eval()
    queries, tokens = torch.randn(1, cfg.head.num_queries, channels, device=device), \
        torch.randn(1, grid_h * grid_w, channels, device=device)
    rows.append(compare("fused attention (head)", lambda: attention(queries, tokens, tokens, None, need_weights=True),
                        lambda: attention(queries, tokens, tokens, None), repeats, device,
                        f"{cfg.head.num_queries} queries x {grid_h * grid_w} BEV tokens, {channels} channels"))

    fpn_channels = cfg.backbone.out_channels
    key_h, key_w = cfg.cascade.planning_guided.key_grid
    level3 = KeyMaskedAttention(fpn_channels, cfg.cascade.planning_guided.num_heads).to(device).eval()
    positions = torch.randn(1, (rig.image_height // 8) * (rig.image_width // 8), fpn_channels, device=device)
    keys = torch.randn(1, (rig.num_cameras - 1) * key_h * key_w, fpn_channels, device=device)
    rows.append(compare("fused attention (level 3)", lambda: level3(positions, keys, keys, None, need_weights=True),
                        lambda: level3(positions, keys, keys, None), repeats, device,
                        f"{positions.shape[1]} positions x {keys.shape[1]} keys, {fpn_channels} channels"))

    path = write_result("optimizations", {"device": device, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
