"""Perception-node overhead without the model, against a bare rclpy receive.

A publisher process sends frames of 7 rgb8 images (default 512 x 960, the full
config's input, so the node does not resize) and a LiDAR cloud (default 120k
points) with the ego pose on /tf, at 10 Hz. The receiver runs in another
process, once per mode:

- ``bare``: an rclpy node subscribed to the same 8 topics with the same QoS,
  whose callbacks only keep the message: what any ROS 2 consumer pays;
- ``node``: the perception node with its model replaced by one that returns
  no objects: decode 7 images + cloud, sync, camera health, tf lookups,
  building and publishing objects, camera health and diagnostics (ingestion
  on the executor thread, the frame on the inference worker: the CPU time
  counts both).

Per frame: the receiving process's CPU time (user + system, all threads,
DDS included) and, for the node, the wall time in its callbacks (p50/p99).
Overhead = node CPU - bare CPU per frame; ratio = node / bare.

    python bench/node_overhead.py [--frames 100] [--image-size 512 960] [--points 120000] [--executor events|single]

Writes bench/results/node_overhead-cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

NODE = "sparsecomp_perception"
WARMUP_FRAMES = 10
RATE_HZ = 10.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def camera_names() -> list[str]:
    from sparsecomp_core.rig import load_rig
    return load_rig("default7").camera_names


# --- publisher -------------------------------------------------------------------------------
def run_publisher(args) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from sparsecomp_ros.conversions import array_to_cloud, rgb_to_image, to_transform, us_to_stamp

    rclpy.init()
    node = rclpy.create_node("sparsecomp_bench_publisher")
    cameras = camera_names()
    image_pubs = {c: node.create_publisher(Image, f"/{NODE}/input/{c.lower()}/image", qos_profile_sensor_data)
                  for c in cameras}
    points_pub = node.create_publisher(PointCloud2, f"/{NODE}/input/points", qos_profile_sensor_data)
    tf_pub = node.create_publisher(TFMessage, "/tf", 10)
    rng = np.random.default_rng(0)
    height, width = args.image_size
    # Two textured images per camera, alternated, so no camera looks frozen.
    images = {c: [rgb_to_image(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), Header(frame_id=c.lower()))
                  for _ in range(2)] for c in cameras}
    clouds = [array_to_cloud(np.concatenate([rng.uniform(-40, 60, (args.points, 3)), rng.uniform(0, 255, (args.points, 1))],
                                            1).astype(np.float32), Header(frame_id="base_link")) for _ in range(2)]
    deadline = time.monotonic() + 60.0
    while points_pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)                                          # let every topic match
    start = time.monotonic()
    for frame in range(args.frames + WARMUP_FRAMES):
        due = start + frame / RATE_HZ
        time.sleep(max(0.0, due - time.monotonic()))
        stamp = us_to_stamp(1_000_000 + frame * 100_000)
        pose = np.eye(4)
        pose[0, 3] = frame * 1.0
        tf_pub.publish(TFMessage(transforms=[to_transform("odom", "base_link", pose, stamp)]))
        for camera in cameras:
            msg = images[camera][frame % 2]
            msg.header.stamp = stamp
            image_pubs[camera].publish(msg)
        cloud = clouds[frame % 2]
        cloud.header.stamp = stamp
        points_pub.publish(cloud)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.shutdown()


# --- receivers -------------------------------------------------------------------------------
class NullDetector:
    """Stands in for the model: no objects, no state; keeps the node's interface."""

    def __init__(self, cfg):
        self.postprocess_cfg = cfg.postprocess

    def initial_state(self):
        return None

    def infer(self, inputs, state):
        import torch
        empty = {"boxes": torch.zeros(0, 10), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
                 "ids": torch.zeros(0, dtype=torch.long), "class_probabilities": torch.zeros(0, 8),
                 "occlusion": torch.zeros(0, dtype=torch.long), "occlusion_probabilities": torch.zeros(0, 4)}
        return [empty], state


class FrameMeter:
    """Counts frames (one per cloud) and the CPU time between the first and the last counted one."""

    def __init__(self, warmup: int):
        self.warmup, self.clouds, self.cpu_start, self.cpu_end, self.counted = warmup, 0, None, None, 0

    def on_cloud(self) -> None:
        self.clouds += 1
        if self.clouds == self.warmup:
            self.cpu_start = cpu_seconds()
        elif self.clouds > self.warmup:
            self.cpu_end, self.counted = cpu_seconds(), self.clouds - self.warmup


def run_receiver(args) -> None:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image, PointCloud2

    rclpy.init()
    meter = FrameMeter(WARMUP_FRAMES)
    callback_ms: list[float] = []
    if args.mode == "bare":
        node = rclpy.create_node(NODE)
        kept = {}
        for camera in camera_names():
            node.create_subscription(Image, f"~/input/{camera.lower()}/image",
                                     lambda msg, c=camera: kept.__setitem__(c, msg), qos_profile_sensor_data)

        def on_points(msg):
            kept["points"] = msg
            meter.on_cloud()
        node.create_subscription(PointCloud2, "~/input/points", on_points, qos_profile_sensor_data)
    else:
        from sparsecomp_core.models.model_config import load_model_config
        from sparsecomp_ros import perception_node

        cfg = load_model_config("full")
        perception_node.load_detector = lambda checkpoint, device, **kwargs: (NullDetector(cfg), cfg)
        frame_started = {"t": None}
        on_image, on_points = perception_node.PerceptionNode.on_image, perception_node.PerceptionNode.on_points

        def timed_image(self, camera, msg):
            started = time.perf_counter()
            on_image(self, camera, msg)
            frame_started["images_ms"] = frame_started.get("images_ms", 0.0) + (time.perf_counter() - started) * 1e3

        def timed_points(self, msg):
            started = time.perf_counter()
            on_points(self, msg)
            callback_ms.append(frame_started.pop("images_ms", 0.0) + (time.perf_counter() - started) * 1e3)
            meter.on_cloud()
        perception_node.PerceptionNode.on_image, perception_node.PerceptionNode.on_points = timed_image, timed_points
        from rclpy.parameter import Parameter
        node = perception_node.PerceptionNode(parameter_overrides=[Parameter("model.device", value="cpu")])
    if args.executor == "events":
        from rclpy.experimental import EventsExecutor
        executor = EventsExecutor()
    else:
        executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.timeout
    last_count, idle_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.1)
        if meter.clouds != last_count:
            last_count, idle_since = meter.clouds, time.monotonic()
        elif meter.clouds > WARMUP_FRAMES and time.monotonic() - idle_since > 3.0:
            break
    result = {"mode": args.mode, "frames_received": meter.clouds, "frames_measured": meter.counted}
    if meter.counted:
        result["cpu_ms_per_frame"] = (meter.cpu_end - meter.cpu_start) / meter.counted * 1e3
    if callback_ms:
        measured = callback_ms[WARMUP_FRAMES:]
        result["callback_ms"] = {"p50": float(np.percentile(measured, 50)), "p99": float(np.percentile(measured, 99)),
                                 "mean": statistics.fmean(measured)}
    if args.mode == "node":
        node.wait_until_idle(30.0)
        result["dropped"] = dict(node.dropped)
        result["frames_out"], result["skipped_model_busy"] = node.frames_out, node.mailbox.skipped
        result["processing"] = node.load.status()
        result["failed_cameras_last_frame"] = [n for n, h in node.health.items() if h.failed]
    print("RESULT " + json.dumps(result), flush=True)
    node.destroy_node()
    rclpy.shutdown()


# --- driver ----------------------------------------------------------------------------------
def measure(mode: str, args, env: dict) -> dict:
    common = ["--frames", str(args.frames), "--image-size", *map(str, args.image_size), "--points", str(args.points)]
    receiver = subprocess.Popen([sys.executable, __file__, "--role", "receiver", "--mode", mode, "--executor",
                                 args.executor, *common], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    publisher = subprocess.Popen([sys.executable, __file__, "--role", "publisher", *common], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    output, _ = receiver.communicate(timeout=args.timeout + 60)
    publisher.wait(timeout=60)
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"receiver ({mode}) gave no result:\n{output[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--image-size", type=int, nargs=2, default=[512, 960])
    parser.add_argument("--points", type=int, default=120_000)
    parser.add_argument("--repeats", type=int, default=2, help="alternating bare/node runs; medians reported")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--role", choices=["driver", "publisher", "receiver"], default="driver")
    parser.add_argument("--mode", choices=["bare", "node"], default="bare")
    parser.add_argument("--executor", choices=["single", "events"], default="events",
                        help="rclpy executor of both receivers: the C++ EventsExecutor (what the node's main() "
                             "uses) or the SingleThreadedExecutor")
    args = parser.parse_args()
    if args.role == "publisher":
        return run_publisher(args)
    if args.role == "receiver":
        return run_receiver(args)

    from common import write_result

    from sparsecomp_ros.fastdds import large_message_environment
    env = large_message_environment()
    env.update(ROS_DOMAIN_ID=str(100 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    runs = {"bare": [], "node": []}
    for _ in range(args.repeats):
        for mode in ("bare", "node"):
            runs[mode].append(measure(mode, args, env))
            print(json.dumps(runs[mode][-1]), flush=True)
    bare = statistics.median(r["cpu_ms_per_frame"] for r in runs["bare"])
    node = statistics.median(r["cpu_ms_per_frame"] for r in runs["node"])
    summary = {"bare_cpu_ms_per_frame": bare, "node_cpu_ms_per_frame": node, "overhead_cpu_ms_per_frame": node - bare,
               "ratio_node_to_bare": node / bare,
               "node_callback_ms_p50": statistics.median(r["callback_ms"]["p50"] for r in runs["node"]),
               "node_callback_ms_p99": statistics.median(r["callback_ms"]["p99"] for r in runs["node"])}
    path = write_result("node_overhead", {
        "setup": f"7 x {args.image_size[0]} x {args.image_size[1]} rgb8 images + {args.points} points at {RATE_HZ:g} Hz, "
                 f"{args.frames} frames after {WARMUP_FRAMES} warm-up, model replaced by one returning no objects; "
                 "publisher and receiver in separate processes, Fast DDS large-data profile",
        "executor": args.executor, "summary": summary, "runs": runs})
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
