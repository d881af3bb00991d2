"""Runs in the nuscenes-devkit environment (.venv-devkit). Reads {"dataroot", "version"} as
JSON from stdin and prints, per sample, what the devkit itself makes of the data set:

- "lidar": the LIDAR_TOP ego pose [4, 4];
- "boxes": every annotation as the devkit gives it in the ego frame at the LiDAR time
  (``get_box``, moved by the inverse ego pose): annotation and instance token, centre,
  size (w, l, h), yaw (``quaternion_yaw``) and ``box_velocity`` rotated into that frame
  (null where the devkit's velocity is NaN);
- "cameras": per channel the camera's own ego pose [4, 4], its calibration (cam2ego
  [4, 4], intrinsic [3, 3] in the OpenCV pixel convention, image size), cam2ego at the
  LiDAR time by the devkit's chain, ego(t_lidar)^-1 ego(t_cam) cam2ego (pyquaternion), and
  every box of ``get_sample_data`` (boxes in the camera frame at the camera's ego pose):
  annotation token, corner depths [8] and ``view_points`` pixels [8, 2] (Box.corners order).
"""
import json
import math
import sys

import numpy as np
from nuscenes import NuScenes
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.geometry_utils import BoxVisibility, transform_matrix, view_points
from pyquaternion import Quaternion


def finite_or_none(values):
    return [None if math.isnan(v) else float(v) for v in values]


request = json.load(sys.stdin)
nusc = NuScenes(request["version"], request["dataroot"], verbose=False)
samples = {}
for sample in nusc.sample:
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lidar_pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    lidar_ego2global = transform_matrix(lidar_pose["translation"], Quaternion(lidar_pose["rotation"]))
    boxes = []
    for token in sample["anns"]:
        box = nusc.get_box(token)
        box.translate(-np.array(lidar_pose["translation"]))
        box.rotate(Quaternion(lidar_pose["rotation"]).inverse)
        velocity = Quaternion(lidar_pose["rotation"]).inverse.rotate(nusc.box_velocity(token))
        boxes.append({"token": token, "instance_token": nusc.get("sample_annotation", token)["instance_token"],
                      "center": box.center.tolist(), "wlh": box.wlh.tolist(), "yaw": quaternion_yaw(box.orientation),
                      "velocity": finite_or_none(velocity)})
    cameras = {}
    for channel, token in sample["data"].items():
        record = nusc.get("sample_data", token)
        if record["sensor_modality"] != "camera":
            continue
        pose = nusc.get("ego_pose", record["ego_pose_token"])
        calib = nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
        ego2global = transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
        cam2ego = transform_matrix(calib["translation"], Quaternion(calib["rotation"]))
        _, camera_boxes, intrinsic = nusc.get_sample_data(token, box_vis_level=BoxVisibility.NONE)
        projected = []
        for box in camera_boxes:
            corners = box.corners()
            projected.append({"token": box.token, "depth": corners[2].tolist(),
                              "pixels": view_points(corners, intrinsic, normalize=True)[:2].T.tolist()})
        cameras[channel] = {"timestamp": record["timestamp"], "ego2global": ego2global.tolist(),
                            "cam2ego": cam2ego.tolist(), "intrinsic": np.asarray(intrinsic).tolist(),
                            "size": [record["height"], record["width"]],
                            "cam2ego_at_lidar": (np.linalg.inv(lidar_ego2global) @ ego2global @ cam2ego).tolist(),
                            "boxes": projected}
    samples[sample["token"]] = {"timestamp": sample["timestamp"], "lidar": lidar_ego2global.tolist(),
                                "boxes": boxes, "cameras": cameras}
print(json.dumps({"samples": samples}))
