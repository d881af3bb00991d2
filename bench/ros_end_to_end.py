"""ROS end to end: last input message of a frame published -> its object array received.

Replays a held-out generated sequence (the demo's scene, converted to a
rosbag2) into the perception node running as its own process (shipped
model by default), with the Fast DDS large-data profile and sim time. The
replayer and the receiving node share this process, so both times come from
one monotonic clock. A frame's inputs are the LiDAR cloud and every message
(images, camera infos, tf) stamped within the node's sync slop of it.
Also collects the node's own timing topic (decode/sync/health, model,
publish) for a breakdown.

    python bench/ros_end_to_end.py [--frames 60] [--rate 0.5] [--checkpoint models/tiny_default.pt] [--device cpu]
                                   [--busy-loops 2] [--name ros_end_to_end_busy]

--busy-loops N runs N busy-loop processes during the replay (a vehicle
computer that is running other work). No fault is injected, so every camera
the node masks is masked falsely; frames are either answered or counted by
the node as skipped (model busy).

--rate is the replay speed: on 2 CPU cores the tiny model needs ~100 ms per
frame, so real time (1.0 = 10 Hz) would measure queueing, not latency.
Writes bench/results/ros_end_to_end-<cpu|gpu>.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
SLOP_US = 60_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--checkpoint", default=str(REPO / "models" / "tiny_default.pt"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--out", default="outputs/bench_e2e")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--busy-loops", type=int, default=0, help="busy-loop processes loading the CPU meanwhile")
    parser.add_argument("--name", default="ros_end_to_end", help="result name (bench/results/<name>-<cpu|gpu>.json)")
    args = parser.parse_args()

    import rclpy
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.node import Node
    from sparsecomp.msg import DynamicObjectArray

    from common import write_result
    from sparsecomp_core.data.synthetic.generate import generate
    from sparsecomp_core.rig import load_rig
    from sparsecomp_ros.bag_convert import convert
    from sparsecomp_ros.conversions import stamp_to_us
    from sparsecomp.msg import CameraHealth

    from sparsecomp_ros.demo import NODE, busy_loops, node_command, stop_process, wait_for_node
    from sparsecomp_ros.fastdds import large_message_environment
    from sparsecomp_ros.replay import BagReplayer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, bag = out / "data", out / f"bag_seed{args.seed}_{args.frames}"
    if not (data / "v1.0-e2e" / "sample.json").exists():
        generate(data, "v1.0-e2e", "default7", seed=args.seed, scenes=1, frames=args.frames, image_size=(128, 256),
                 lidar_beams=32, lidar_azimuths=512, progress=False)
    if not bag.exists():
        convert(data, "v1.0-e2e", 0, bag)

    env = large_message_environment()
    env.update(ROS_DOMAIN_ID=str(100 + os.getpid() % 50), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(out / "ros_log"), PYTHONUNBUFFERED="1")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR",
                                           "FASTDDS_DEFAULT_PROFILES_FILE")})
    context = rclpy.Context()
    rclpy.init(context=context)
    arrivals: dict[int, float] = {}
    node_timing: dict[str, list[float]] = defaultdict(list)
    published: list[tuple[str, int, float]] = []
    masked: dict[str, int] = defaultdict(int)                # camera -> frames masked (no fault injected: false)
    health_frames = [0]
    skipped = [0]

    class Receiver(Node):
        def __init__(self):
            super().__init__("sparsecomp_bench_receiver", context=context)
            self.create_subscription(DynamicObjectArray, f"/{NODE}/output/objects", self.on_objects, 50)
            self.create_subscription(DiagnosticStatus, f"/{NODE}/output/timing", self.on_timing, 50)
            self.create_subscription(CameraHealth, f"/{NODE}/output/camera_health", self.on_health, 50)

        def on_health(self, msg):
            health_frames[0] += 1
            for camera in msg.cameras:
                masked[camera.name] += int(camera.failed)

        def on_objects(self, msg):
            arrivals.setdefault(stamp_to_us(msg.header.stamp), time.monotonic())

        def on_timing(self, msg):
            for value in msg.values:
                if value.key == "skipped: model busy":
                    skipped[0] = max(skipped[0], int(value.value))
                else:
                    node_timing[value.key].append(float(value.value))

    receiver = Receiver()
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(receiver)
    cameras = load_rig("default7").camera_names
    command = node_command(args.checkpoint, cameras) + ["-p", f"model.device:={args.device}",
                                                        "-p", f"model.precision:={args.precision}"]
    log = open(out / "node.log", "w")
    node = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    spinning = threading.Event()
    try:
        wait_for_node(receiver, executor, node)
        spinning.set()
        spinner = threading.Thread(target=lambda: [executor.spin_once(timeout_sec=0.05) for _ in iter(spinning.is_set, False)],
                                   daemon=True)
        spinner.start()
        replayer = BagReplayer(bag, rate=args.rate, context=context,
                               on_published=lambda topic, stamp_ns, t: published.append((topic, stamp_ns // 1000, t)))
        with busy_loops(args.busy_loops):
            replayer.play(start_delay_s=2.0)
            clouds = [stamp for topic, stamp, _ in published if topic == "/sensing/lidar/points"]
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and len(arrivals) + skipped[0] < len(clouds):
                time.sleep(0.1)
        spinning.clear()
        spinner.join(timeout=5)
    finally:
        stop_process(node)
        log.close()

    last_input: dict[int, float] = {}
    for cloud in clouds:
        times = [t for topic, stamp, t in published
                 if abs(stamp - cloud) <= SLOP_US and topic not in ("/clock", "/ground_truth/objects")]
        last_input[cloud] = max(times)
    latencies = [(arrivals[c] - last_input[c]) * 1e3 for c in clouds if c in arrivals]
    if not latencies:
        raise SystemExit(f"no object arrays received; see {out / 'node.log'}")
    summary = {"frames_replayed": len(clouds), "object_arrays_received": len(latencies),
               "frames_skipped_model_busy": skipped[0], "busy_loop_processes": args.busy_loops,
               "camera_health_messages": health_frames[0],
               "cameras_falsely_masked_frames": {k: v for k, v in masked.items() if v},
               "latency_ms": {"p50": float(np.percentile(latencies, 50)), "p99": float(np.percentile(latencies, 99)),
                              "mean": float(np.mean(latencies)), "max": float(np.max(latencies))},
               "node_timing_ms_p50": {k: float(np.percentile(v, 50)) for k, v in node_timing.items()},
               "node_timing_ms_p99": {k: float(np.percentile(v, 99)) for k, v in node_timing.items()}}
    import torch
    device = "cuda" if args.device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    path = write_result(args.name, {
        "setup": f"held-out generated scene (seed {args.seed}, {args.frames} frames, 7 x 128 x 256 images, 32-beam "
                 f"LiDAR) replayed at {args.rate}x into the perception node ({Path(args.checkpoint).name}, "
                 f"{args.device}, {args.precision}), {args.busy_loops} busy-loop processes meanwhile; latency = "
                 "object array received - last input message of its frame published; no fault injected", "device": device, "summary": summary})
    lat = summary["latency_ms"]
    print(f"frames {len(clouds)}, object arrays {len(latencies)}, skipped (model busy) {skipped[0]}, cameras falsely "
          f"masked {summary['cameras_falsely_masked_frames'] or 'none'}; end to end p50 {lat['p50']:.1f} ms, "
          f"p99 {lat['p99']:.1f} ms; node p50 {summary['node_timing_ms_p50']}")
    print(f"wrote {path}")
    receiver.destroy_node()
    replayer.destroy_node()
    rclpy.shutdown(context=context)


if __name__ == "__main__":
    main()
