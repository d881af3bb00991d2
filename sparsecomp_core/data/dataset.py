"""Model frames from a nuScenes-layout data set, and streaming batches.

A scene is a stream: its frames in time order share a sequence id, so the
model's temporal state carries across them and resets between scenes.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..camera_dropout import RandCamMask
from ..geometry import Calibration
from ..models.inputs import FrameInputs
from ..rig import RigConfig
from .nuscenes_layout import LIDAR_CHANNEL, NuScenesLayout
from .splits import select_scenes
from .sweeps import merge_sweeps, previous_sweeps


@dataclass
class Frame:
    """One sample, model-ready. images [V, 3, H, W] uint8; camera_present [V]
    bool (False: no image in the data, a dead camera); intrinsics [V, 3, 3] at
    model resolution; cam2ego [V, 4, 4] camera -> ego at the LiDAR time (a
    camera that fired at another time is placed through its own ego pose);
    lidar [N, 4] (x, y, z, intensity), or [N, 5] with dt_s when several
    sweeps are merged (data.sweeps); ego2global [4, 4]
    float64; trajectory [T, 2] future ego path in this ego frame; targets:
    boxes [M, 10] (x, y, z, l, w, h, yaw, vx, vy, vz; ego frame at the LiDAR
    time), labels [M], occlusion [M], instance tokens.

    Velocity contract: boxes[:, 7:10] is NaN where the velocity is unknown (as
    nuscenes-devkit: an annotation without a previous or next one, or with them
    too far apart in time), never a made-up 0 m/s; losses and metrics skip
    NaN velocities. Barriers and pillars always have velocity 0."""
    images: torch.Tensor
    camera_present: torch.Tensor
    intrinsics: torch.Tensor
    cam2ego: torch.Tensor
    lidar: torch.Tensor
    ego2global: torch.Tensor
    timestamp_us: int
    sequence_id: str
    trajectory: torch.Tensor
    targets: dict


class SequenceDataset:
    """Scenes of a nuScenes-layout data set, read with the rig's camera names
    and resized to the model input size. ``lidar_sweeps``: 1 gives the key
    frame's sweep [N, 4]; N > 1 merges it with the N - 1 sweeps before it
    into [M, 5] (``merge_sweeps``: current ego frame, time lag in seconds).
    ``split``: only the scenes of this split (``data.splits``: an official nuScenes
    split of an official version, else a custom split of ``splits.json``); None:
    every scene."""

    def __init__(self, root: str, version: str, rig: RigConfig, image_size: tuple[int, int] | None = None,
                 trajectory_horizon_s: float = 3.0, trajectory_step_s: float = 0.5, lidar_sweeps: int = 1,
                 split: str | None = None):
        if lidar_sweeps < 1:
            raise ValueError(f"lidar_sweeps must be >= 1, got {lidar_sweeps}")
        self.lidar_sweeps = lidar_sweeps
        self.layout = NuScenesLayout(root, version)
        self.rig = rig
        self.image_size = image_size or (rig.image_height, rig.image_width)
        self.scenes = [(scene["name"], self.layout.scene_samples(scene)) for scene in self.layout.scenes()]
        if not self.scenes:
            raise ValueError(f"no scenes in {root}/{version}")
        kept = set(select_scenes([name for name, _ in self.scenes], root, version, split))
        self.scenes = [scene for scene in self.scenes if scene[0] in kept]
        self.trajectory_horizon_s, self.trajectory_step_s = trajectory_horizon_s, trajectory_step_s

    def __len__(self) -> int:
        return sum(len(samples) for _, samples in self.scenes)

    def scene_length(self, scene: int) -> int:
        return len(self.scenes[scene][1])

    def load(self, scene: int, index: int) -> Frame:
        name, samples = self.scenes[scene]
        token = samples[index]
        data = self.layout.sample_data_by_sample[token]
        if LIDAR_CHANNEL not in data:
            raise ValueError(f"sample {token} has no {LIDAR_CHANNEL}")
        reference = data[LIDAR_CHANNEL]
        ego2global = self.layout.ego2global(reference)
        height, width = self.image_size
        images = torch.zeros(self.rig.num_cameras, 3, height, width, dtype=torch.uint8)
        present = torch.zeros(self.rig.num_cameras, dtype=torch.bool)
        nominal = self.rig.calibration(1, self.image_size)
        intrinsics, cam2ego = nominal.intrinsics[0].clone(), nominal.cam2ego[0].clone()
        for cam, channel in enumerate(self.rig.camera_names):
            record = data.get(channel)
            if record is None:
                continue
            sensor2ego, camera_intrinsics = self.layout.sensor2ego(record)
            with Image.open(self.layout.root / record["filename"]) as image:
                scale_x, scale_y = width / image.width, height / image.height
                if image.size != (width, height):
                    image = image.resize((width, height), Image.BILINEAR)
                images[cam] = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
            camera_intrinsics = camera_intrinsics.copy()
            camera_intrinsics[0] *= scale_x
            camera_intrinsics[1] *= scale_y
            intrinsics[cam] = torch.from_numpy(camera_intrinsics).float()
            if record["ego_pose_token"] != reference["ego_pose_token"]:
                # fired off the LiDAR time (nuScenes: 1-45 ms): camera -> ego(t_cam) -> global -> ego(t_lidar)
                sensor2ego = np.linalg.inv(ego2global) @ self.layout.ego2global(record) @ sensor2ego
            cam2ego[cam] = torch.from_numpy(sensor2ego).float()
            present[cam] = True
        targets = self.layout.boxes(token, ego2global)
        return Frame(images, present, intrinsics, cam2ego, torch.from_numpy(self.lidar(reference, ego2global)),
                     torch.from_numpy(ego2global), int(self.layout.tables["sample"][token]["timestamp"]), name,
                     self.future_path(samples, index, ego2global),
                     {"boxes": torch.from_numpy(targets["boxes"]), "labels": torch.from_numpy(targets["labels"]),
                      "occlusion": torch.from_numpy(targets["occlusion"]), "instance_tokens": list(targets["instance_tokens"])})

    def lidar(self, reference: dict, ego2global: np.ndarray) -> np.ndarray:
        """The reference sweep [N, 4], or with lidar_sweeps > 1 the merged sweeps [M, 5]."""
        if self.lidar_sweeps == 1:
            return self.layout.lidar_points(reference)
        return merge_sweeps(previous_sweeps(self.layout, reference, self.lidar_sweeps), ego2global,
                            int(reference["timestamp"]))

    def future_path(self, samples: list[str], index: int, ego2global: np.ndarray) -> torch.Tensor:
        """[T, 2] future ego positions every trajectory_step_s up to the horizon, in this ego frame
        (the last known position is repeated past the end of the scene)."""
        sample_table = self.layout.tables["sample"]
        start = sample_table[samples[index]]["timestamp"]
        times, positions = [], []
        for token in samples[index:]:
            times.append((sample_table[token]["timestamp"] - start) / 1e6)
            pose = self.layout.ego2global(self.layout.sample_data_by_sample[token][LIDAR_CHANNEL])
            positions.append(pose[:2, 3])
            if times[-1] >= self.trajectory_horizon_s:
                break
        positions = np.array(positions)
        queries = np.arange(1, int(round(self.trajectory_horizon_s / self.trajectory_step_s)) + 1) * self.trajectory_step_s
        xy = np.stack([np.interp(queries, times, positions[:, 0]), np.interp(queries, times, positions[:, 1])], 1)
        local = (xy - ego2global[:2, 3]) @ ego2global[:2, :2]
        return torch.from_numpy(local).float()


class ConcatSequenceDataset:
    """Several data sets' scenes as one (e.g. a first training set and a larger
    one generated later), with SequenceDataset's ``scenes``, ``scene_length``
    and ``load``. A scene's name is its stream id (temporal state, sensor
    dropout): names must differ across the data sets, else two scenes would
    run as one stream."""

    def __init__(self, datasets: list[SequenceDataset]):
        if not datasets:
            raise ValueError("ConcatSequenceDataset needs at least one data set")
        self.datasets = datasets
        self.scenes = [scene for dataset in datasets for scene in dataset.scenes]
        self._index = [(which, scene) for which, dataset in enumerate(datasets) for scene in range(len(dataset.scenes))]
        repeated = sorted(name for name, count in Counter(name for name, _ in self.scenes).items() if count > 1)
        if repeated:
            raise ValueError(f"scene names repeat across the data versions ({repeated[:5]}): a scene name is a "
                             "stream id, so each version must have its own scenes")

    def __len__(self) -> int:
        return sum(len(dataset) for dataset in self.datasets)

    def scene_length(self, scene: int) -> int:
        return len(self.scenes[scene][1])

    def load(self, scene: int, index: int) -> Frame:
        which, local = self._index[scene]
        return self.datasets[which].load(local, index)


def collate(frames: list[Frame], image_size: tuple[int, int], dropout: RandCamMask | None = None,
            with_teacher: bool = False, with_trajectory: bool = True) -> tuple[FrameInputs, list[dict]]:
    """Stack frames into FrameInputs (+ targets). With ``dropout``, simulated
    faults zero more cameras (the full images become the teacher's input);
    cameras absent from the data are always failed."""
    images = torch.stack([f.images for f in frames])
    cam_mask = ~torch.stack([f.camera_present for f in frames])
    teacher = images if with_teacher else None
    if dropout is not None:
        simulated = dropout.sample_mask(images.shape[0], images.shape[1])
        cam_mask = cam_mask | simulated
        images = images * (~simulated)[..., None, None, None].to(images.dtype)
    calibration = Calibration(torch.stack([f.intrinsics for f in frames]), torch.stack([f.cam2ego for f in frames]),
                              image_size)
    inputs = FrameInputs(images, cam_mask, calibration, torch.stack([f.ego2global for f in frames]),
                         torch.tensor([f.timestamp_us for f in frames], dtype=torch.int64), [f.lidar for f in frames],
                         [f.sequence_id for f in frames],
                         torch.stack([f.trajectory for f in frames]) if with_trajectory else None, teacher)
    return inputs, [f.targets for f in frames]


class StreamSampler:
    """Which (scene, frame) each of B batch slots reads at each step.

    ``streaming``: each slot plays a scene from a random start to its end,
    then a new random scene (temporal training). Otherwise every step draws
    random frames and each gets a unique sequence id, so no temporal state
    carries over (stage 1).
    """

    def __init__(self, scene_lengths: list[int], batch_size: int, streaming: bool, seed: int = 0):
        self.lengths, self.batch_size, self.streaming = scene_lengths, batch_size, streaming
        self.rng = np.random.default_rng(seed)
        self.slots = [self._new_stream() for _ in range(batch_size)]

    def _new_stream(self) -> list[int]:
        scene = int(self.rng.integers(len(self.lengths)))
        start = int(self.rng.integers(max(self.lengths[scene] // 2, 1)))
        return [scene, start]

    def next(self) -> list[tuple[int, int]]:
        if not self.streaming:
            picks = []
            for _ in range(self.batch_size):
                scene = int(self.rng.integers(len(self.lengths)))
                picks.append((scene, int(self.rng.integers(self.lengths[scene]))))
            return picks
        picks = []
        for slot in self.slots:
            if slot[1] >= self.lengths[slot[0]]:
                slot[:] = self._new_stream()
            picks.append((slot[0], slot[1]))
            slot[1] += 1
        return picks

    def state_dict(self) -> dict:
        return {"slots": [list(s) for s in self.slots], "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.slots = [list(s) for s in state["slots"]]
        self.rng.bit_generator.state = state["rng"]
