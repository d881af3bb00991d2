"""Cameras that fire off the LiDAR time, as in nuScenes: the generator records (and renders)
each camera at its own time with its own ego pose, and the loader places each camera through
its own ego pose, so boxes project where nuscenes-devkit projects them."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.data.nuscenes_layout import LIDAR_CHANNEL, NuScenesLayout
from sparsecomp_core.data.synthetic.generate import camera_time_offsets_us, generate, scene_world
from sparsecomp_core.rig import load_rig

sys.path.insert(0, str(Path(__file__).parent))
from test_metrics_devkit import devkit_python  # noqa: E402,F401  (fixture)

VERSION = "v1.0-timing"
SEED = 7                  # scene 0 of seed 7: the ego drives at ~8 m/s and turns in its first frames
IMAGE_SIZE = (64, 128)
SMALL = dict(scenes=1, frames=4, image_size=IMAGE_SIZE, lidar_beams=16, lidar_azimuths=256, progress=False)


@pytest.fixture(scope="module")
def timed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("camera_timing")
    generate(root, VERSION, "nuscenes6", seed=SEED, camera_time_offsets_ms="sweep", **SMALL)
    return root


def box_corners(box: np.ndarray) -> np.ndarray:
    """Corners [8, 3] of a box [x, y, z, l, w, h, yaw, ...], in nuscenes-devkit's Box.corners order."""
    length, width, height, yaw = box[3], box[4], box[5], box[6]
    local = np.stack([length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1]),
                      width / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1]),
                      height / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])], 1)
    rotation = np.array([[np.cos(yaw), -np.sin(yaw), 0.0], [np.sin(yaw), np.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    return local @ rotation.T + box[:3]


def project(corners_ego: np.ndarray, cam2ego: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Pixels [8, 2] in the OpenCV convention (the devkit's) of ego-frame corners, from our
    calibration (intrinsics in our convention: pixel i centred at i + 0.5)."""
    camera = (corners_ego - cam2ego[:3, 3]) @ cam2ego[:3, :3]
    pixels = camera @ intrinsics.T
    return pixels[:, :2] / pixels[:, 2:3] - 0.5


def test_sweep_offsets_are_nuscenes_firing_order():
    offsets = dict(zip(load_rig("nuscenes6").camera_names, camera_time_offsets_us(load_rig("nuscenes6"), "sweep")))
    order = sorted(offsets, key=offsets.get)
    assert order == ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT"]
    assert -45_000 < offsets["CAM_FRONT_LEFT"] < -40_000 and -2_000 < offsets["CAM_BACK_LEFT"] < 0
    assert camera_time_offsets_us(load_rig("default7"), None) == [0] * 7
    assert camera_time_offsets_us(load_rig("nuscenes6"), [1, 2, 3, 4, 5.5, -6]) == [1000, 2000, 3000, 4000, 5500, -6000]
    with pytest.raises(ValueError, match="one value"):
        camera_time_offsets_us(load_rig("nuscenes6"), [1, 2])


def test_each_camera_has_its_own_timestamp_and_ego_pose(timed):
    layout = NuScenesLayout(timed, VERSION)
    rig = load_rig("nuscenes6")
    offsets = dict(zip(rig.camera_names, camera_time_offsets_us(rig, "sweep")))
    world = scene_world(SEED, 0, SMALL["frames"])
    samples = layout.scene_samples(layout.scenes()[0])
    start = layout.tables["sample"][samples[0]]["timestamp"]
    displacement = []
    for token in samples:
        sample_time = layout.tables["sample"][token]["timestamp"]
        data = layout.sample_data_by_sample[token]
        lidar_pose = layout.ego2global(data[LIDAR_CHANNEL])
        assert data[LIDAR_CHANNEL]["timestamp"] == sample_time
        for name, offset in offsets.items():
            record = data[name]
            assert record["timestamp"] == sample_time + offset
            assert layout.tables["ego_pose"][record["ego_pose_token"]]["timestamp"] == record["timestamp"]
            pose = layout.ego2global(record)
            np.testing.assert_allclose(pose, world.ego2global((record["timestamp"] - start) / 1e6), atol=1e-9)
            displacement.append(np.linalg.norm(pose[:3, 3] - lidar_pose[:3, 3]))
    assert len(layout.tables["ego_pose"]) == SMALL["frames"] * (1 + rig.num_cameras)
    assert max(displacement) > 0.25                # the ego moved between camera and LiDAR time
    log = next(iter(json.loads((timed / VERSION / "log.json").read_text())))
    assert log["date_captured"] == datetime.fromtimestamp(start / 1e6, tz=timezone.utc).strftime("%Y-%m-%d")


def test_by_default_every_camera_shares_the_lidar_time_and_pose(tmp_path):
    generate(tmp_path, VERSION, "nuscenes6", seed=SEED, **{**SMALL, "frames": 2})
    layout = NuScenesLayout(tmp_path, VERSION)
    for data in layout.sample_data_by_sample.values():
        lidar = data[LIDAR_CHANNEL]
        assert all(r["ego_pose_token"] == lidar["ego_pose_token"] and r["timestamp"] == lidar["timestamp"]
                   for r in data.values())
    assert len(layout.tables["ego_pose"]) == 2


def test_loader_places_each_camera_through_its_own_ego_pose(timed):
    dataset = SequenceDataset(str(timed), VERSION, load_rig("nuscenes6"), IMAGE_SIZE)
    layout = dataset.layout
    frame = dataset.load(0, 2)
    data = layout.sample_data_by_sample[dataset.scenes[0][1][2]]
    lidar_pose = layout.ego2global(data[LIDAR_CHANNEL])
    for cam, name in enumerate(dataset.rig.camera_names):
        sensor2ego, _ = layout.sensor2ego(data[name])
        expected = np.linalg.inv(lidar_pose) @ layout.ego2global(data[name]) @ sensor2ego
        torch.testing.assert_close(frame.cam2ego[cam], torch.from_numpy(expected).float(), atol=1e-5, rtol=0)
    front_left = dataset.rig.camera_names.index("CAM_FRONT_LEFT")
    moved = np.linalg.norm(frame.cam2ego[front_left, :3, 3].numpy() - layout.sensor2ego(data["CAM_FRONT_LEFT"])[0][:3, 3])
    assert moved > 0.2                             # 43 ms at ~8 m/s


def test_projected_boxes_land_where_the_devkit_projects_them(devkit_python, timed):
    """nuscenes-devkit's get_sample_data gives each camera's boxes at that camera's ego pose; the
    loader's boxes (ego frame at the LiDAR time) projected with the loader's calibration land on the
    same pixels. Placing the cameras with the LiDAR's ego pose instead is off by pixels."""
    done = subprocess.run([str(devkit_python), str(Path(__file__).parent / "helpers" / "devkit_sample_data.py")],
                          input=json.dumps({"dataroot": str(timed), "version": VERSION}), capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    devkit = json.loads(done.stdout)["samples"]
    dataset = SequenceDataset(str(timed), VERSION, load_rig("nuscenes6"), IMAGE_SIZE)
    layout = dataset.layout
    per_camera_errors, lidar_pose_errors = [], []
    for index, token in enumerate(dataset.scenes[0][1]):
        frame = dataset.load(0, index)
        boxes = dict(zip(frame.targets["instance_tokens"], frame.targets["boxes"].numpy().astype(np.float64)))
        for cam, name in enumerate(dataset.rig.camera_names):
            record = layout.sample_data_by_sample[token][name]
            lidar_placed, _ = layout.sensor2ego(record)                 # the camera at the LiDAR's ego pose
            intrinsics = frame.intrinsics[cam].double().numpy()
            for reference in devkit[token]["cameras"][name]["boxes"]:
                if min(reference["depth"]) < 1.0:                        # behind or at the camera: no pixels
                    continue
                box = boxes[layout.tables["sample_annotation"][reference["token"]]["instance_token"]]
                corners = box_corners(box)
                expected = np.array(reference["pixels"])
                per_camera_errors += np.linalg.norm(
                    project(corners, frame.cam2ego[cam].double().numpy(), intrinsics) - expected, axis=1).tolist()
                lidar_pose_errors += np.linalg.norm(project(corners, lidar_placed, intrinsics) - expected, axis=1).tolist()
    assert len(per_camera_errors) > 100
    assert max(per_camera_errors) < 0.01                                 # pixels, at 64 x 128
    assert np.median(lidar_pose_errors) > 0.2 and np.percentile(lidar_pose_errors, 90) > 2.0
