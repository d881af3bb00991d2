"""Camera geometry and calibration-derived camera neighbourhoods."""
from __future__ import annotations

import math

import numpy as np
import torch

from sparsecomp_core.geometry import (cam2ego_from_heading, pinhole_intrinsics, project_points, transform_boxes,
                                      transform_points)
from sparsecomp_core.rig import load_rig


def neighbour_names(rig_name: str) -> dict[str, list[str]]:
    rig = load_rig(rig_name)
    table = rig.calibration(1).neighbours(3)
    names = rig.camera_names
    return {names[i]: [names[j] for j in row[1:]] for i, row in enumerate(table.tolist())}


def test_nuscenes_neighbours_match_the_spec():
    spec = {"CAM_FRONT": {"CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"},
            "CAM_FRONT_LEFT": {"CAM_FRONT", "CAM_BACK_LEFT"},
            "CAM_FRONT_RIGHT": {"CAM_FRONT", "CAM_BACK_RIGHT"},
            "CAM_BACK_LEFT": {"CAM_FRONT_LEFT", "CAM_BACK"},
            "CAM_BACK_RIGHT": {"CAM_FRONT_RIGHT", "CAM_BACK"},
            "CAM_BACK": {"CAM_BACK_LEFT", "CAM_BACK_RIGHT"}}
    assert {k: set(v) for k, v in neighbour_names("nuscenes6").items()} == spec


def test_seven_camera_neighbours_are_the_documented_table():
    # docs/camera_neighbours.md
    assert neighbour_names("default7") == {
        "CAM_FRONT_WIDE": ["CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"],
        "CAM_FRONT_TELE": ["CAM_FRONT_WIDE", "CAM_FRONT_LEFT"],
        "CAM_FRONT_LEFT": ["CAM_FRONT_WIDE", "CAM_REAR_LEFT"],
        "CAM_FRONT_RIGHT": ["CAM_FRONT_WIDE", "CAM_REAR_RIGHT"],
        "CAM_REAR_LEFT": ["CAM_REAR", "CAM_FRONT_LEFT"],
        "CAM_REAR_RIGHT": ["CAM_REAR", "CAM_FRONT_RIGHT"],
        "CAM_REAR": ["CAM_REAR_LEFT", "CAM_REAR_RIGHT"]}


def test_neighbours_follow_the_calibration_not_the_camera_order():
    rig = load_rig("nuscenes6")
    calibration = rig.calibration(1)
    permutation = torch.tensor([5, 3, 0, 4, 1, 2])
    calibration.intrinsics = calibration.intrinsics[:, permutation]
    calibration.cam2ego = calibration.cam2ego[:, permutation]
    table = calibration.neighbours(3)
    names = [rig.camera_names[i] for i in permutation.tolist()]
    front = names.index("CAM_FRONT")
    assert {names[j] for j in table[front, 1:].tolist()} == {"CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"}


def test_projection_of_a_point_on_the_optical_axis_hits_the_principal_point():
    intrinsics = pinhole_intrinsics(90.0, 200, 100)
    cam2ego = cam2ego_from_heading(90.0, 0.0, (1.0, 0.5, 1.5))      # looking left
    point_ego = torch.tensor([[1.0, 10.5, 1.5]])                     # 10 m to the left of the camera
    point_cam = transform_points(torch.linalg.inv(cam2ego), point_ego)
    pixels, in_front = project_points(intrinsics, point_cam)
    assert in_front.item()
    assert torch.allclose(pixels, torch.tensor([[100.0, 50.0]]), atol=1e-4)
    # a point ahead of the car is to the right in a left-looking camera
    ahead = transform_points(torch.linalg.inv(cam2ego), torch.tensor([[3.0, 10.5, 1.5]]))
    assert project_points(intrinsics, ahead)[0][0, 0] > 100.0
    assert math.isclose(float(intrinsics[0, 0]), 100.0, rel_tol=1e-6)


def test_transform_boxes_moves_centres_turns_yaw_and_velocity_and_keeps_unknown_velocity():
    ego2global = np.eye(4)
    ego2global[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]                # ego heading +90 deg
    ego2global[:3, 3] = [100.0, 50.0, 0.5]
    boxes = np.array([[10.0, 2.0, 1.0, 4.0, 2.0, 1.5, 0.3, 5.0, 0.0, 0.0],
                      [-3.0, 0.0, 0.8, 0.7, 0.7, 1.8, -2.0, np.nan, np.nan, np.nan]])
    moved = transform_boxes(boxes, ego2global)
    np.testing.assert_allclose(moved[0], [98.0, 60.0, 1.5, 4.0, 2.0, 1.5, 0.3 + math.pi / 2, 0.0, 5.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(moved[1, :7], [100.0, 47.0, 1.3, 0.7, 0.7, 1.8, -2.0 + math.pi / 2], atol=1e-12)
    assert np.isnan(moved[1, 7:]).all()                           # unknown stays unknown, never 0 m/s
    back = transform_boxes(moved, np.linalg.inv(ego2global))
    np.testing.assert_allclose(back[0], boxes[0], atol=1e-12)
    assert np.isnan(back[1, 7:]).all()
