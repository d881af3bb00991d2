"""Training CLI: stage 1 (single frames, no temporal state) and stage 2
(streaming sequences, temporal on, freeze schedules), AMP on CUDA, camera
dropout, checkpoints with resume, a JSON-lines log of every loss, and
multi-GPU / multi-node with torchrun (DistributedDataParallel).

    python -m sparsecomp_core.training.train --config config/train/tiny_stage1.yaml [--out DIR]
        [--steps N] [--data-root DIR] [--resume] [--device cpu|cuda]
    torchrun --nproc_per_node 8 -m sparsecomp_core.training.train --config ...
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .. import jsonio
from ..camera_dropout import RandCamMask
from ..config import load_config, to_dict
from ..data.dataset import ConcatSequenceDataset, SequenceDataset, StreamSampler, collate
from ..sensor_dropout import CameraCrash, SensorDropout, drop_cameras, drop_lidar
from ..models.head.losses import DynamicLossConfig
from ..models.model_config import CameraDropoutConfig, ModelConfig, load_model_config
from ..models.detector import build_detector, read_checkpoint, save_model_checkpoint
from .freeze import apply_freeze_schedule, keep_norms_in_eval, parameter_groups


@dataclass
class TrainConfig:
    model: str = "tiny"                       # config/models/<name>.yaml or a path
    data_root: str = "data/synthetic"
    # One version, or several trained on as one set (their scenes must have distinct names).
    data_version: str | list[str] = "v1.0-synthetic-train"
    # Scenes to train on (data.splits): a nuScenes split of an official version (v1.0-trainval:
    # train; v1.0-mini: mini_train), else a custom split of <version>/splits.json; None: all.
    # With several versions the split applies to each of them.
    data_split: str | None = None
    stage: Literal["stage1", "stage2"] = "stage1"
    steps: int = 1000
    batch_size: int = 2                       # per process
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 35.0
    lr_scales: dict[str, float] = field(default_factory=dict)
    freeze_module_schedules: dict[str, int] = field(default_factory=dict)
    camera_dropout: bool = True
    # This stage's camera faults instead of the model config's (SPEC 2: p 0.6, 1-2 cameras),
    # e.g. {p_missing: 0.7, n_min: 1, n_max: 4}: Frame Lost loses 3 or more of 7 cameras in
    # a third of its frames (config/train/tiny_stage6.yaml). None: the model's.
    camera_dropout_faults: CameraDropoutConfig | None = None
    # This stage's loss weights instead of the model config's ``loss`` section (replaced whole:
    # fields not given take their defaults), e.g. {code_weights: [...]} to weigh velocity more
    # (config/train/tiny_stage7.yaml). Saved with the weights. None: the model's.
    loss: DynamicLossConfig | None = None
    # Probability that a stream's whole LiDAR input is removed (sensor_dropout.py;
    # decided per stream, so per frame in stage 1). 0: never.
    lidar_dropout: float = 0.0
    # Probability that a stream runs with every camera failed (sensor_dropout.py), so the
    # LiDAR path detects on its own too; models with a LiDAR only. A stream loses at most
    # one modality: lidar_dropout + camera_stream_dropout <= 1. 0: never.
    camera_stream_dropout: float = 0.0
    # Probability that a stream runs with 1-2 cameras (the camera dropout's n_min..n_max)
    # failed from its first frame to its last (sensor_dropout.CameraCrash), on top of the
    # per-frame camera dropout: a dead camera's own history is never there, so temporal
    # completion must learn to use its neighbours' (docs/completion.md). 0: never.
    camera_crash: float = 0.0
    # True: every batch norm normalises with its running statistics (from the stage it
    # starts from) instead of the batch's, while its affine parameters train (mmdetection's
    # norm_eval). With 2 samples a batch, one stream without cameras or LiDAR next to a full
    # one shifts the batch statistics of both away from what inference uses (docs/model.md,
    # "Sensor dropout"); in eval mode a step computes what inference computes.
    norm_eval: bool = False
    amp: bool = True                          # CUDA only
    init_from: str | None = None              # weights to start from (e.g. the stage-1 result)
    # Modules (name prefixes) that keep their fresh initialisation instead of init_from's weights,
    # e.g. head.velocity_fusion, which stage 1 never trains (it has no history) and whose shape
    # follows head.queue_length: a stage-1 result of another queue length can then start stage 2.
    init_skip_modules: list[str] = field(default_factory=list)
    # Modules (name prefix -> checkpoint) whose weights come from another model after init_from,
    # e.g. {camera_branch: <camera-only model>}: a fused model's camera path that starts as
    # good as the camera-only model's (docs/data_training_evaluation.md, "Stage 4").
    init_modules_from: dict[str, str] = field(default_factory=dict)
    checkpoint_every: int = 250
    log_every: int = 10
    seed: int = 0
    out_dir: str = "outputs/train"

    @property
    def data_versions(self) -> list[str]:
        """``data_version`` as a list (one entry for a single version)."""
        return [self.data_version] if isinstance(self.data_version, str) else list(self.data_version)

    def __post_init__(self) -> None:
        if not self.data_versions:
            raise ValueError("data_version: an empty list names no data to train on")
        for name in ("lidar_dropout", "camera_stream_dropout", "camera_crash"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.lidar_dropout + self.camera_stream_dropout > 1.0:
            raise ValueError(f"lidar_dropout + camera_stream_dropout must be <= 1 (a stream loses at most one "
                             f"modality), got {self.lidar_dropout} + {self.camera_stream_dropout}")


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base LR: linear warm-up, then cosine to 1 %."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def load_initial_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], skip_modules: list[str]) -> None:
    """Loads ``weights`` strictly, except parameters under ``skip_modules``, which keep their
    fresh initialisation whatever the checkpoint holds for them (shape included)."""
    def skipped(name: str) -> bool:
        return any(name == prefix or name.startswith(prefix + ".") for prefix in skip_modules)
    own = model.state_dict()
    unknown = [prefix for prefix in skip_modules if not any(skipped(name) for name in own)]
    if unknown:
        raise ValueError(f"init_skip_modules names no module of this model: {unknown}")
    kept = {name: value for name, value in weights.items() if not skipped(name)}
    kept.update({name: value for name, value in own.items() if skipped(name)})
    model.load_state_dict(kept)


def checkpoint_weights(path: str) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint file (a training checkpoint or a bare state dict)."""
    state = read_checkpoint(path)
    return state["model"] if "model" in state else state


def load_module_weights(model: torch.nn.Module, prefix: str, weights: dict[str, torch.Tensor]) -> int:
    """Copies every parameter and buffer under the module ``prefix`` from ``weights`` (another
    model's state dict) into ``model``; returns how many tensors were copied. The module must
    exist in both with the same tensor names and shapes."""
    def under(name: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")
    own = {name: value for name, value in model.state_dict().items() if under(name)}
    theirs = {name: value for name, value in weights.items() if under(name)}
    if not own:
        raise ValueError(f"init_modules_from: {prefix!r} names no module of this model")
    if set(own) != set(theirs):
        missing, extra = sorted(set(own) - set(theirs)), sorted(set(theirs) - set(own))
        raise ValueError(f"init_modules_from: {prefix!r} differs between the models: missing {missing[:3]}, "
                         f"unexpected {extra[:3]}")
    wrong = [name for name in own if own[name].shape != theirs[name].shape]
    if wrong:
        raise ValueError(f"init_modules_from: {prefix!r} has other shapes in the source: "
                         f"{[(n, tuple(own[n].shape), tuple(theirs[n].shape)) for n in wrong[:3]]}")
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(theirs[name])
    return len(own)


def distributed(device: str | None = None) -> tuple[int, int, torch.device]:
    """(rank, world size, device); initialises the process group under torchrun.
    ``device``: "cpu" or "cuda"; None: CUDA when available."""
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but this torch sees no CUDA device")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer, sampler: StreamSampler, step: int,
                    cfg: TrainConfig, model_cfg: ModelConfig, sensor_dropout: SensorDropout | None = None,
                    camera_crash: CameraCrash | None = None) -> None:
    """``last.pt``: everything --resume needs, plus the model config, so the file also loads
    for evaluation (``load_detector``). Plain containers and tensors only (weights_only=True)."""
    extra = {} if sensor_dropout is None else {"sensor_dropout": sensor_dropout.state_dict()}
    if camera_crash is not None:
        extra["camera_crash"] = camera_crash.state_dict()
    save_model_checkpoint(path, model, model_cfg, optimizer=optimizer.state_dict(), sampler=sampler.state_dict(),
                          step=step, train_config=to_dict(cfg), torch_rng=torch.get_rng_state(), **extra)


def train(cfg: TrainConfig, resume: bool = False, device: str | None = None) -> Path:
    rank, world, device = distributed(device)
    torch.manual_seed(cfg.seed + rank)
    out = Path(cfg.out_dir)
    model_cfg = load_model_config(cfg.model)
    if cfg.camera_dropout_faults is not None:   # saved with the weights: what this training drew
        model_cfg = replace(model_cfg, camera_dropout=cfg.camera_dropout_faults)
    if cfg.loss is not None:
        model_cfg = replace(model_cfg, loss=cfg.loss)
    rig = model_cfg.load_rig()
    if cfg.camera_dropout and model_cfg.camera_dropout.n_max > len(rig.camera_names):
        raise ValueError(f"camera dropout fails up to n_max={model_cfg.camera_dropout.n_max} cameras, but the rig "
                         f"{rig.name!r} has {len(rig.camera_names)}")
    image_size = (rig.image_height, rig.image_width)
    model = build_detector(model_cfg).to(device)
    if cfg.camera_stream_dropout > 0 and model.lidar is None:
        raise ValueError(f"camera_stream_dropout={cfg.camera_stream_dropout}, but the model {cfg.model!r} has no "
                         "LiDAR: a stream without its cameras would have no input at all")
    if cfg.init_from:
        load_initial_weights(model, checkpoint_weights(cfg.init_from), cfg.init_skip_modules)
    for prefix, path in cfg.init_modules_from.items():
        load_module_weights(model, prefix, checkpoint_weights(path))
    datasets = [SequenceDataset(cfg.data_root, version, rig, image_size, lidar_sweeps=model_cfg.lidar.sweeps,
                                split=cfg.data_split) for version in cfg.data_versions]
    dataset = datasets[0] if len(datasets) == 1 else ConcatSequenceDataset(datasets)
    sampler = StreamSampler([dataset.scene_length(i) for i in range(len(dataset.scenes))], cfg.batch_size,
                            streaming=cfg.stage == "stage2", seed=cfg.seed + 1000 * rank)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg.lr, cfg.lr_scales, cfg.weight_decay))
    lidar_p = cfg.lidar_dropout if model.lidar is not None else 0.0
    sensor_dropout = SensorDropout(lidar_p, cfg.camera_stream_dropout) if lidar_p + cfg.camera_stream_dropout > 0 \
        else None
    camera_crash = CameraCrash(cfg.camera_crash, len(rig.camera_names), model_cfg.camera_dropout.n_min,
                               model_cfg.camera_dropout.n_max) if cfg.camera_crash > 0 else None
    start_step = 0
    last = out / "last.pt"
    if resume and last.exists():
        checkpoint = read_checkpoint(last)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        sampler.load_state_dict(checkpoint["sampler"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if sensor_dropout is not None and "sensor_dropout" in checkpoint:
            sensor_dropout.load_state_dict(checkpoint["sensor_dropout"])
        if camera_crash is not None and "camera_crash" in checkpoint:
            camera_crash.load_state_dict(checkpoint["camera_crash"])
        start_step = checkpoint["step"]
    wrapped = DistributedDataParallel(model, find_unused_parameters=True) if world > 1 else model
    dropout = RandCamMask(model_cfg.camera_dropout.p_missing, model_cfg.camera_dropout.n_min,
                          model_cfg.camera_dropout.n_max) if cfg.camera_dropout else None
    use_amp = cfg.amp and device.type == "cuda"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(jsonio.dumps(to_dict(cfg), indent=2))
        (out / "model_config.json").write_text(jsonio.dumps(to_dict(model_cfg), indent=2))
    log_path = out / "train_log.jsonl"
    if rank == 0 and start_step and log_path.exists():  # forget what was logged after the checkpoint
        kept = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] < start_step]
        log_path.write_text("".join(line + "\n" for line in kept))
    log = log_path.open("a") if rank == 0 else None
    state = model.initial_state()
    progress = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, disable=rank != 0,
                    desc=f"{cfg.stage} {cfg.model}", dynamic_ncols=True)
    started = time.time()
    for step in progress:
        wrapped.train()
        if cfg.norm_eval:
            keep_norms_in_eval(model)
        frozen = apply_freeze_schedule(model, cfg.freeze_module_schedules, step)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * group["lr_scale"] * cosine_lr(step, cfg)
        frames = [dataset.load(scene, index) for scene, index in sampler.next()]
        if cfg.stage == "stage1":          # no temporal state across steps
            for slot, frame in enumerate(frames):
                frame.sequence_id = f"{frame.sequence_id}/step{step}/slot{slot}"
            state = model.initial_state()
        inputs, targets = collate(frames, image_size, dropout, with_teacher=True)
        lidar_dropped = cameras_dropped = 0
        if sensor_dropout is not None:
            no_lidar, no_cameras = sensor_dropout(inputs.sequence_ids, inputs.timestamp_us)
            if inputs.lidar_points is not None:
                inputs.lidar_points = drop_lidar(inputs.lidar_points, no_lidar)
            inputs.images, inputs.cam_mask = drop_cameras(inputs.images, inputs.cam_mask, no_cameras)
            lidar_dropped, cameras_dropped = int(no_lidar.sum()), int(no_cameras.sum())
        if camera_crash is not None:
            inputs.images, inputs.cam_mask = drop_cameras(inputs.images, inputs.cam_mask,
                                                          camera_crash(inputs.sequence_ids, inputs.timestamp_us))
        inputs = inputs.to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = wrapped(inputs, state, targets)
        losses = outputs["losses"]
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        state = outputs["state"]
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            record = {"step": step, "loss": total.item(), **{k: v.item() for k, v in losses.items()},
                      "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"], "frozen": frozen,
                      "failed_cameras": int(inputs.cam_mask.sum()), "lidar_dropped": lidar_dropped,
                      "cameras_dropped": cameras_dropped,
                      "elapsed_s": time.time() - started}
            log.write(jsonio.dumps(record) + "\n")      # a diverged loss is logged as null
            log.flush()
            progress.set_postfix(loss=f"{total.item():.3f}", cls=f"{losses['loss_cls'].item():.3f}",
                                 box=f"{losses['loss_box'].item():.3f}")
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(last, model, optimizer, sampler, step + 1, cfg, model_cfg, sensor_dropout, camera_crash)
    if rank == 0:
        save_model_checkpoint(out / "model.pt", model, model_cfg)
        log.close()
    if world > 1:
        dist.barrier()          # rank 0 hosts the store: nobody leaves while another still talks to it
        dist.destroy_process_group()
    return out / "model.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description="Train sparsecomp (stage 1 or 2).")
    parser.add_argument("--config", required=True, help="training YAML (config/train/*.yaml)")
    parser.add_argument("--out", help="output folder (overrides out_dir)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--data-root")
    parser.add_argument("--init-from")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/last.pt if present")
    parser.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available")
    args = parser.parse_args()
    cfg = load_config(TrainConfig, args.config)
    for key, value in (("out_dir", args.out), ("steps", args.steps), ("data_root", args.data_root),
                       ("init_from", args.init_from)):
        if value is not None:
            setattr(cfg, key, value)
    path = train(cfg, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
