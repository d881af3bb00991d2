"""Our loader against nuscenes-devkit on a generated set whose cameras fire off the LiDAR time.

Generates a small nuScenes-rig set with the nuScenes camera timing (``--camera-time-offsets-ms
sweep``: 1-43 ms before the LiDAR) and a moving ego, reads it with our loader
(``SequenceDataset``) and with the devkit (test/helpers/devkit_sample_data.py in .venv-devkit),
and reports:

- the largest loader - devkit difference per field: LiDAR ego pose, each camera's own ego pose,
  cam2ego at the LiDAR time (translation, rotation), intrinsics; boxes in the ego frame
  (centre, size, yaw), velocities (where both are known; and whether both call the same
  ones unknown);
- the pixel error of projected box corners against the devkit's projection (``get_sample_data``:
  boxes at the camera's own ego pose), with our per-camera ego pose and with every camera placed
  at the LiDAR's ego pose (the loader before), median and p95, at the set's image size and
  scaled to 1600 x 900 (same field of view: errors scale with the focal length, 1600 / W).
  Corners of boxes entirely at least 1 m in front of the camera with a corner inside the image.

    python bench/loader_vs_devkit.py [--scenes 2 --frames 10 --image-size 128 256 --seed 7]

Writes bench/results/loader_vs_devkit-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from sparsecomp_core.data.dataset import SequenceDataset  # noqa: E402
from sparsecomp_core.data.synthetic.generate import camera_time_offsets_us, generate  # noqa: E402
from sparsecomp_core.models.head.boxes import STATIC_CLASSES  # noqa: E402
from sparsecomp_core.rig import load_rig  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEVKIT_PYTHON = REPO / ".venv-devkit" / "bin" / "python"
NUSCENES_WIDTH = 1600
VERSION = "v1.0-camera-timing"


def box_corners(box: np.ndarray) -> np.ndarray:
    """Corners [8, 3] of a box [x, y, z, l, w, h, yaw, ...] in nuscenes-devkit's Box.corners order."""
    length, width, height, yaw = box[3], box[4], box[5], box[6]
    local = np.stack([length / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1]),
                      width / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1]),
                      height / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])], 1)
    rotation = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    return local @ rotation.T + box[:3]


def project(corners_ego: np.ndarray, cam2ego: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """OpenCV-convention pixels [8, 2] (the devkit's) from our calibration (pixel i centred at i + 0.5)."""
    camera = (corners_ego - cam2ego[:3, 3]) @ cam2ego[:3, :3]
    pixels = camera @ intrinsics.T
    return pixels[:, :2] / pixels[:, 2:3] - 0.5


def devkit_reading(root: Path) -> dict:
    subprocess.run(["bash", str(REPO / "scripts" / "setup_devkit_env.sh")], check=True, capture_output=True)
    done = subprocess.run([str(DEVKIT_PYTHON), str(REPO / "test" / "helpers" / "devkit_sample_data.py")],
                          input=json.dumps({"dataroot": str(root), "version": VERSION}), capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout)["samples"]


def percentiles(errors: list[float], scale: float) -> dict:
    values = np.asarray(errors) * scale
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)), "max": float(values.max())}


def compare(root: Path, devkit: dict, image_size: tuple[int, int]) -> dict:
    dataset = SequenceDataset(str(root), VERSION, load_rig("nuscenes6"), image_size)
    layout = dataset.layout
    height, width = image_size
    worst = dict.fromkeys(("lidar_ego_pose", "camera_ego_pose", "cam2ego_translation_m", "cam2ego_rotation",
                           "intrinsics_px", "box_centre_m", "box_size_m", "box_yaw_rad", "velocity_m_s"), 0.0)
    counts = {"samples": 0, "boxes": 0, "velocities_compared": 0, "unknown_velocity_both": 0,
              "unknown_velocity_disagreements": 0, "static_unknown_set_to_zero": 0, "corners": 0}
    per_camera_pose, lidar_pose, speeds = [], [], []
    for scene in range(len(dataset.scenes)):
        previous = None
        for index, token in enumerate(dataset.scenes[scene][1]):
            frame, reference = dataset.load(scene, index), devkit[token]
            counts["samples"] += 1
            if previous is not None:
                speeds.append(float(np.linalg.norm(frame.ego2global[:2, 3] - previous.ego2global[:2, 3]))
                              / ((frame.timestamp_us - previous.timestamp_us) / 1e6))
            previous = frame
            worst["lidar_ego_pose"] = max(worst["lidar_ego_pose"],
                                          float(np.abs(frame.ego2global.numpy() - np.array(reference["lidar"])).max()))
            boxes = frame.targets["boxes"].numpy().astype(np.float64)
            labels = frame.targets["labels"].numpy()
            ours = {t: (b, int(l)) for t, b, l in zip(frame.targets["instance_tokens"], boxes, labels)}
            for theirs in reference["boxes"]:
                box, label = ours[theirs["instance_token"]]
                counts["boxes"] += 1
                worst["box_centre_m"] = max(worst["box_centre_m"], float(np.abs(box[:3] - theirs["center"]).max()))
                w, l, h = theirs["wlh"]
                worst["box_size_m"] = max(worst["box_size_m"], float(np.abs(box[3:6] - [l, w, h]).max()))
                worst["box_yaw_rad"] = max(worst["box_yaw_rad"], abs(math.remainder(box[6] - theirs["yaw"], 2 * math.pi)))
                known = None not in theirs["velocity"]
                if label in STATIC_CLASSES:          # ours: 0 by definition
                    counts["static_unknown_set_to_zero"] += not known
                elif known and np.isfinite(box[7:10]).all():
                    counts["velocities_compared"] += 1
                    worst["velocity_m_s"] = max(worst["velocity_m_s"],
                                                float(np.abs(box[7:10] - theirs["velocity"]).max()))
                elif not known and np.isnan(box[7:10]).all():
                    counts["unknown_velocity_both"] += 1
                else:
                    counts["unknown_velocity_disagreements"] += 1
            data = layout.sample_data_by_sample[token]
            for cam, name in enumerate(dataset.rig.camera_names):
                camera = reference["cameras"][name]
                cam2ego, intrinsics = frame.cam2ego[cam].double().numpy(), frame.intrinsics[cam].double().numpy()
                expected = np.array(camera["cam2ego_at_lidar"])
                worst["cam2ego_translation_m"] = max(worst["cam2ego_translation_m"],
                                                     float(np.abs(cam2ego[:3, 3] - expected[:3, 3]).max()))
                worst["cam2ego_rotation"] = max(worst["cam2ego_rotation"],
                                                float(np.abs(cam2ego[:3, :3] - expected[:3, :3]).max()))
                opencv = intrinsics.copy()
                opencv[:2, 2] -= 0.5
                worst["intrinsics_px"] = max(worst["intrinsics_px"], float(np.abs(opencv - camera["intrinsic"]).max()))
                worst["camera_ego_pose"] = max(worst["camera_ego_pose"], float(np.abs(
                    layout.ego2global(data[name]) - np.array(camera["ego2global"])).max()))
                at_lidar_pose, _ = layout.sensor2ego(data[name])
                for projected in camera["boxes"]:
                    pixels = np.array(projected["pixels"])
                    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < width) & (pixels[:, 1] >= 0) & (pixels[:, 1] < height)
                    if min(projected["depth"]) < 1.0 or not inside.any():
                        continue
                    box, _ = ours[layout.tables["sample_annotation"][projected["token"]]["instance_token"]]
                    corners = box_corners(box)
                    per_camera_pose += np.linalg.norm(project(corners, cam2ego, intrinsics) - pixels, axis=1).tolist()
                    lidar_pose += np.linalg.norm(project(corners, at_lidar_pose, intrinsics) - pixels, axis=1).tolist()
    counts["corners"] = len(per_camera_pose)
    scale = NUSCENES_WIDTH / width
    return {"max_difference": worst, "counts": counts,
            "ego_speed_m_s": {"mean": float(np.mean(speeds)), "max": float(np.max(speeds))},
            "corner_pixel_error": {
                f"per_camera_ego_pose_{height}x{width}": percentiles(per_camera_pose, 1.0),
                f"lidar_ego_pose_{height}x{width}": percentiles(lidar_pose, 1.0),
                "per_camera_ego_pose_1600x900": percentiles(per_camera_pose, scale),
                "lidar_ego_pose_1600x900": percentiles(lidar_pose, scale)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--image-size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    parser.add_argument("--name", default="loader_vs_devkit")
    args = parser.parse_args()
    image_size = tuple(args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        generate(root, VERSION, "nuscenes6", scenes=args.scenes, frames=args.frames, seed=args.seed,
                 image_size=image_size, lidar_beams=16, lidar_azimuths=256, progress=False,
                 camera_time_offsets_ms="sweep")
        result = compare(root, devkit_reading(root), image_size)
    rig = load_rig("nuscenes6")
    result["camera_offsets_ms"] = {name: offset / 1000 for name, offset in
                                   zip(rig.camera_names, camera_time_offsets_us(rig, "sweep"))}
    result["data"] = {"rig": "nuscenes6", "scenes": args.scenes, "frames": args.frames, "seed": args.seed,
                      "image_size": list(image_size)}
    path = write_result(args.name, result)
    print(json.dumps({k: result[k] for k in ("max_difference", "counts", "corner_pixel_error")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
