"""Synthetic generator and the nuScenes layout, both directions."""
from __future__ import annotations

import filecmp
import json
import math

import numpy as np
import pytest
import torch

from sparsecomp_core.data.dataset import SequenceDataset, StreamSampler, collate
from sparsecomp_core.data.nuscenes_layout import NuScenesLayout, category_to_label, visibility_token
from sparsecomp_core.data.synthetic.generate import generate, scene_world
from sparsecomp_core.data.synthetic.sensors import GroundTexture, render_camera
from sparsecomp_core.data.synthetic.world import World
from sparsecomp_core.geometry import project_points, transform_boxes, transform_points
from sparsecomp_core.rig import load_rig

SMALL = dict(scenes=1, frames=6, image_size=(64, 128), lidar_beams=16, lidar_azimuths=256, progress=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    generate(root, "v1.0-test", "default7", seed=5, **SMALL)
    return root


def test_generation_is_deterministic(generated, tmp_path):
    generate(tmp_path, "v1.0-test", "default7", seed=5, **SMALL)
    for table in ("sample", "sample_annotation", "ego_pose", "calibrated_sensor", "instance"):
        assert json.loads((generated / "v1.0-test" / f"{table}.json").read_text()) == \
            json.loads((tmp_path / "v1.0-test" / f"{table}.json").read_text()), table
    files = sorted(p.relative_to(generated) for p in (generated / "samples").rglob("*") if p.is_file())
    assert len(files) == 6 * 8
    assert all(filecmp.cmp(generated / f, tmp_path / f, shallow=False) for f in files)


def test_loader_returns_the_worlds_boxes_in_the_ego_frame(generated):
    rig = load_rig("default7")
    dataset = SequenceDataset(str(generated), "v1.0-test", rig, (64, 128))
    world = scene_world(5, 0, SMALL["frames"])
    frame = dataset.load(0, 3)
    truth = transform_boxes(world.actor_boxes(0.3), np.linalg.inv(world.ego2global(0.3)))
    labels = world.labels()
    assert len(frame.targets["boxes"]) > 3
    for box, label in zip(frame.targets["boxes"].numpy(), frame.targets["labels"].numpy()):
        distance = np.linalg.norm(truth[:, :3] - box[:3], axis=1)
        match = int(distance.argmin())
        assert distance[match] < 1e-3 and labels[match] == label
        np.testing.assert_allclose(box[3:6], truth[match, 3:6], atol=1e-4)
        assert abs(math.remainder(box[6] - truth[match, 6], 2 * math.pi)) < 1e-4
        if label not in (6, 7):   # velocity from neighbouring annotations, as the devkit does
            np.testing.assert_allclose(box[7:9], truth[match, 7:9], atol=0.15)
    torch.testing.assert_close(frame.ego2global, torch.from_numpy(world.ego2global(0.3)))
    nominal = rig.calibration(1, (64, 128))
    torch.testing.assert_close(frame.intrinsics, nominal.intrinsics[0], atol=1e-4, rtol=0)   # +0.5 px convention
    torch.testing.assert_close(frame.cam2ego, nominal.cam2ego[0], atol=1e-5, rtol=0)


def test_lidar_points_lie_on_annotated_objects(generated):
    dataset = SequenceDataset(str(generated), "v1.0-test", load_rig("default7"), (64, 128))
    frame = dataset.load(0, 2)
    points = frame.lidar[:, :3].numpy()
    for box, count in zip(frame.targets["boxes"].numpy(),
                          dataset.layout.boxes(dataset.scenes[0][1][2], frame.ego2global.numpy())["num_lidar_pts"]):
        if count == 0:
            continue
        local = points - box[:3]
        cos, sin = math.cos(-box[6]), math.sin(-box[6])
        local = np.stack([local[:, 0] * cos - local[:, 1] * sin, local[:, 0] * sin + local[:, 1] * cos, local[:, 2]], 1)
        inside = (np.abs(local) <= box[3:6] / 2 + 0.1).all(axis=1).sum()
        assert inside >= 0.8 * count


def test_rendering_agrees_with_the_written_calibration(generated):
    """The pixel where a visible object's centre projects shows that object's class colour family."""
    dataset = SequenceDataset(str(generated), "v1.0-test", load_rig("default7"), (64, 128))
    frame = dataset.load(0, 0)
    checked = 0
    for box, occlusion in zip(frame.targets["boxes"], frame.targets["occlusion"]):
        if occlusion != 0:
            continue
        for cam in range(7):
            point = transform_points(torch.linalg.inv(frame.cam2ego[cam]), box[None, :3])
            pixel, in_front = project_points(frame.intrinsics[cam], point)
            u, v = pixel[0].long().tolist()
            if in_front[0] and 2 <= u < 126 and 2 <= v < 62 and float(point[0, 2]) < 25:
                rgb = frame.images[cam, :, v, u].float()
                sky_or_road = (rgb.max() - rgb.min()) < 20 and rgb.mean() < 200
                checked += 1
                assert not sky_or_road, (cam, u, v, rgb)
    assert checked >= 1


def test_visibility_falls_when_an_object_is_behind_another():
    world = World(0)
    ground = GroundTexture(world.road)
    rig = load_rig("default7")
    calibration = rig.calibration(1, (64, 128))
    boxes = np.array([[10.0, 0.0, 0.8, 4.5, 1.9, 1.6, 0.0, 0, 0, 0], [18.0, 0.3, 0.8, 4.5, 1.9, 1.6, 0.0, 0, 0, 0]])
    _, visible, reachable = render_camera(boxes, np.array([0, 0]), np.ones(2), calibration.intrinsics[0, 0].double().numpy(),
                                          calibration.cam2ego[0, 0].double().numpy(), (64, 128), world.ego2global(0.0),
                                          ground, np.random.default_rng(0))
    front, back = visible / reachable
    assert front == 1.0 and back < 0.4 and visibility_token(back) == "1"


def test_nuscenes_categories_and_visibility_map_to_our_classes():
    assert category_to_label("vehicle.car", []) == 0
    assert category_to_label("vehicle.construction", []) == 1
    assert category_to_label("vehicle.bus.bendy", []) == 2
    assert category_to_label("human.pedestrian.child", []) == 3
    assert category_to_label("vehicle.motorcycle", ["cycle.with_rider"]) == 4
    assert category_to_label("vehicle.bicycle", ["cycle.without_rider"]) == 5
    assert category_to_label("movable_object.barrier", []) == 6
    assert category_to_label("movable_object.trafficcone", []) == 7
    assert category_to_label("animal", []) == -1 and category_to_label("movable_object.debris", []) == -1
    assert [visibility_token(f) for f in (0.1, 0.5, 0.7, 0.95)] == ["1", "2", "3", "4"]


def test_nuscenes_rig_round_trip_and_streaming_batches(tmp_path):
    generate(tmp_path, "v1.0-nus", "nuscenes6", seed=3, **{**SMALL, "frames": 4})
    layout = NuScenesLayout(tmp_path, "v1.0-nus")
    channels = set(layout.sample_data_by_sample[layout.scene_samples(layout.scenes()[0])[0]])
    assert channels == {"CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK_RIGHT",
                        "CAM_BACK", "LIDAR_TOP"}
    rig = load_rig("nuscenes6")
    dataset = SequenceDataset(str(tmp_path), "v1.0-nus", rig, (64, 128))
    sampler = StreamSampler([dataset.scene_length(0)], batch_size=2, streaming=True, seed=0)
    picks = [sampler.next() for _ in range(3)]
    assert [p[0][1] for p in picks] == [picks[0][0][1] + i for i in range(3)]     # a slot plays its scene in order
    inputs, targets = collate([dataset.load(*pick) for pick in picks[0]], (64, 128), with_teacher=True)
    assert inputs.images.shape == (2, 6, 3, 64, 128) and not inputs.cam_mask.any()
    assert inputs.ego_trajectory.shape == (2, 6, 2) and len(targets) == 2
