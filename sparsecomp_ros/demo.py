"""The main job: replay a bundled sequence through the perception node with
camera faults injected partway, and show what happened.

    python -m sparsecomp_ros.demo [--out outputs/demo] [--frames 60] [--rate 0.25]

1. Generates a held-out synthetic scene (fixed seed, never trained on) and
   converts it to a rosbag2 (MCAP); both are cached under --out.
2. Starts the perception node (default model: models/tiny_default.pt) and the
   bag replayer as separate processes on a private DDS domain, with the
   shipped Fast DDS large-message profile and use_sim_time.
3. One third into the sequence a camera topic dies; two thirds in, another
   camera goes black. The node must flag both and keep publishing.
4. Records the node's objects and camera health, and writes a picture per
   frame (camera thumbnails in the rig's layout, failed ones marked with the
   reason; a BEV with LiDAR, ground-truth outlines, detections, velocities,
   ids and the failed cameras' fields of view), an animated GIF and
   summary.json, and prints frames in/out, latency, which cameras were
   masked when, and detections against ground truth.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rclpy
from PIL import Image as PILImage
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image, PointCloud2
from sparsecomp.msg import CameraHealth, DynamicObjectArray

from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.evaluation.detection_metrics import Detection
from sparsecomp_core.evaluation.metrics import frame_matches

from .bag_convert import camera_topic, convert
from .camera_health import FAULT_NAMES
from .conversions import BadMessage, cloud_to_array, image_to_rgb, stamp_to_us
from .fastdds import large_message_environment
from .resources import default_checkpoint
from .visualization import debug_picture

NODE = "sparsecomp_perception"
DEAD_CAMERA, BLACK_CAMERA = "CAM_FRONT_LEFT", "CAM_REAR"


def boxes_of(msg: DynamicObjectArray) -> dict:
    rows = [[o.pose.position.x, o.pose.position.y, o.pose.position.z, o.size.x, o.size.y, o.size.z,
             2 * np.arctan2(o.pose.orientation.z, o.pose.orientation.w), o.velocity.x, o.velocity.y, o.velocity.z]
            for o in msg.objects]
    return {"boxes": np.array(rows, dtype=np.float64).reshape(-1, 10), "labels": np.array([o.label for o in msg.objects]),
            "ids": np.array([o.id for o in msg.objects]), "scores": np.array([o.score for o in msg.objects])}


class Recorder(Node):
    """Collects the node's outputs, the ground truth and the clouds (for pictures and latency),
    and with a ``rig`` the cameras' images (small copies, for the pictures' thumbnails)."""

    def __init__(self, context, rig=None):
        super().__init__("sparsecomp_demo_recorder", context=context)
        self.rig = rig
        self.images: dict[str, list[tuple[int, np.ndarray]]] = {}
        for camera in rig.camera_names if rig is not None else ():
            self.images[camera] = []
            self.create_subscription(Image, camera_topic(camera, "image_raw"),
                                     lambda msg, camera=camera: self.on_image(camera, msg), qos_profile_sensor_data)
        self.objects, self.health, self.truth, self.clouds, self.cloud_arrival = {}, {}, {}, {}, {}
        self.objects_arrival = {}
        self.skipped_model_busy = 0                 # the node's running totals, from its timing topic
        self.references_received = 0
        self.timing_heard = 0                       # timing messages: the node sends one after each answer
        self.dropped: dict[str, int] = {}           # the node's "dropped: <reason>" totals, from /diagnostics
        self.load_statuses: list[DiagnosticStatus] = []
        self.create_subscription(DynamicObjectArray, f"/{NODE}/output/objects", self.on_objects, 50)
        self.create_subscription(DiagnosticStatus, f"/{NODE}/output/timing", self.on_timing, 50)
        self.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 50)
        self.create_subscription(CameraHealth, f"/{NODE}/output/camera_health", self.on_health, 50)
        self.create_subscription(DynamicObjectArray, "/ground_truth/objects", self.on_truth, 50)
        self.create_subscription(PointCloud2, "/sensing/lidar/points", self.on_cloud, qos_profile_sensor_data)

    def on_objects(self, msg):
        stamp = stamp_to_us(msg.header.stamp)
        self.objects[stamp], self.objects_arrival[stamp] = msg, time.monotonic()

    def on_timing(self, msg):
        self.timing_heard += 1
        for value in msg.values:
            if value.key == "skipped: model busy":
                self.skipped_model_busy = max(self.skipped_model_busy, int(value.value))
            elif value.key == "references received":
                self.references_received = max(self.references_received, int(value.value))

    def on_diagnostics(self, msg):
        self.load_statuses += [s for s in msg.status if s.name.endswith("processing load")]
        for status in msg.status:
            for value in status.values:
                if value.key.startswith("dropped: "):
                    reason = value.key.removeprefix("dropped: ")
                    self.dropped[reason] = max(self.dropped.get(reason, 0), int(value.value))

    def frames_accounted(self) -> int:
        """Frames the node answered or said it skipped (model busy)."""
        return len(self.objects) + self.skipped_model_busy

    def all_accounted(self) -> bool:
        """Every reference the node received (by its own count) answered or skipped, as far as
        this recorder has heard. Best-effort sensor messages lost on the way (DDS under load)
        never reach the node: those it cannot count. The totals count only once the timing
        message sent after the last answer is heard too: the answer and its timing travel on two
        topics, and totals read before the last timing lag one reference behind."""
        return (self.references_received > 0 and self.timing_heard >= len(self.objects)
                and self.frames_accounted() >= self.references_received)

    def on_health(self, msg):
        self.health[stamp_to_us(msg.header.stamp)] = msg

    def on_truth(self, msg):
        self.truth[stamp_to_us(msg.header.stamp)] = msg

    def on_image(self, camera: str, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except BadMessage:
            return
        step = max(1, rgb.shape[1] // 320)             # a thumbnail needs no more
        self.images[camera].append((stamp_to_us(msg.header.stamp), rgb[::step, ::step].copy()))

    def on_cloud(self, msg):
        stamp = stamp_to_us(msg.header.stamp)
        self.cloud_arrival[stamp] = time.monotonic()
        self.clouds[stamp] = cloud_to_array(msg)


def wait_for_node(recorder: Recorder, executor, node: subprocess.Popen, timeout_s: float = 120.0) -> None:
    """Spin until the perception node's object publisher is discovered."""
    deadline = time.monotonic() + timeout_s
    while recorder.count_publishers(f"/{NODE}/output/objects") == 0:
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the perception node did not start")
        executor.spin_once(timeout_sec=0.2)


def replay_and_record(recorder: Recorder, executor, bag: Path, env: dict, rate: float,
                      faults: list[str] = (), answer_wait_s: float = 120.0, quiet_s: float = 30.0) -> int:
    """Play ``bag`` with the replayer process (``faults``: extra replay arguments,
    e.g. --dead/--black), then spin the recorder until the node has answered or skipped
    every sweep it was sent (at most ``answer_wait_s``: on a loaded machine the last frames
    can take seconds each), or, when it has answered all it received, until it has been
    quiet for ``quiet_s`` (best-effort sweeps lost on the way never come); the replayer's
    exit code."""
    replay = subprocess.Popen([sys.executable, "-m", "sparsecomp_ros.replay", "--bag", str(bag), "--rate", str(rate),
                               "--start-delay", "2.0", *faults], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        while replay.poll() is None:
            executor.spin_once(timeout_sec=0.05)
        settle = time.monotonic() + answer_wait_s
        heard, quiet_since = None, time.monotonic()
        while time.monotonic() < settle:
            if recorder.all_accounted() and (recorder.references_received >= len(recorder.clouds)
                                             or time.monotonic() - quiet_since > quiet_s):
                break       # all answered; sweeps the node never got (lost on the way) are not waited for
            executor.spin_once(timeout_sec=0.05)
            progress = (recorder.references_received, recorder.frames_accounted(), recorder.timing_heard)
            if progress != heard:
                heard, quiet_since = progress, time.monotonic()
    finally:
        stop_process(replay)
    return replay.returncode


@contextlib.contextmanager
def busy_loops(count: int, limit_s: float = 1800.0):
    """``count`` processes that each keep a core busy (a vehicle computer running other work);
    they end with the block, and by themselves after ``limit_s`` whatever happens."""
    loop = f"import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end:\n    pass\n"
    # -S: no site-packages (no ROS start-up hook), just an interpreter spinning.
    processes = [subprocess.Popen([sys.executable, "-S", "-c", loop]) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()


def stop_process(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGINT (a ROS node shuts down cleanly on it), then kill if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def node_command(checkpoint: str, cameras: list[str], score_threshold: float = 0.3) -> list[str]:
    remaps = [f"/{NODE}/input/points:=/sensing/lidar/points"]
    for camera in cameras:
        remaps += [f"/{NODE}/input/{camera.lower()}/image:={camera_topic(camera, 'image_raw')}",
                   f"/{NODE}/input/{camera.lower()}/camera_info:={camera_topic(camera, 'camera_info')}"]
    args = [sys.executable, "-m", "sparsecomp_ros.perception_node", "--ros-args", "-p", f"model.checkpoint:={checkpoint}",
            "-p", "use_sim_time:=true", "-p", f"output.score_threshold:={score_threshold}"]
    for remap in remaps:
        args += ["-r", remap]
    return args


def masked_intervals(health: dict[int, CameraHealth], start_us: int) -> dict[str, list[dict]]:
    """camera -> [{from_s, to_s, reasons}] while it was masked (failed), times from the bag start."""
    intervals: dict[str, list[dict]] = {}
    for stamp in sorted(health):
        t = round((stamp - start_us) / 1e6, 2)
        for camera in health[stamp].cameras:
            spans = intervals.setdefault(camera.name, [])
            open_span = spans[-1] if spans and spans[-1]["to_s"] is None else None
            if camera.failed:
                if open_span is None:
                    open_span = {"from_s": t, "to_s": None, "reasons": []}
                    spans.append(open_span)
                reason = FAULT_NAMES[camera.reason] if camera.reason else None
                if reason and reason not in open_span["reasons"]:
                    open_span["reasons"].append(reason)
            elif open_span is not None:
                open_span["to_s"] = t
    end = round((max(health) - start_us) / 1e6, 2) if health else 0.0
    for spans in intervals.values():
        for span in spans:
            span["to_s"] = end if span["to_s"] is None else span["to_s"]
    return {name: spans for name, spans in intervals.items() if spans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/demo")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rate", type=float, default=0.25, help="replay speed (the tiny model on 2 CPU cores keeps up at 0.25)")
    parser.add_argument("--checkpoint", default=str(default_checkpoint()))
    parser.add_argument("--seed", type=int, default=7, help="scene seed (training and validation use 1 and 2)")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="the node's output.score_threshold")
    parser.add_argument("--busy-loops", type=int, default=0,
                        help="also keep this many cores busy with other processes (a loaded vehicle computer)")
    args = parser.parse_args()
    out = Path(args.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    data, bag = out / "data", out / f"bag_seed{args.seed}_{args.frames}"
    if not (data / "v1.0-demo" / "sample.json").exists():
        print(f"[demo] generating a held-out scene ({args.frames} frames, seed {args.seed}) ...", flush=True)
        generate(data, "v1.0-demo", "default7", seed=args.seed, scenes=1, frames=args.frames, image_size=(128, 256),
                 lidar_beams=32, lidar_azimuths=512, progress=False)
    if not bag.exists():
        print("[demo] converting it to a rosbag2 (MCAP) ...", flush=True)
        convert(data, "v1.0-demo", 0, bag)
    from sparsecomp_core.rig import load_rig
    rig = load_rig("default7")
    cameras = rig.camera_names
    duration = args.frames / 10.0

    env = large_message_environment()
    env.update(ROS_DOMAIN_ID=str(150 + os.getpid() % 60), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_LOG_DIR=str(out / "ros_log"), PYTHONUNBUFFERED="1")
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOG_DIR",
                                           "FASTDDS_DEFAULT_PROFILES_FILE")})
    context = rclpy.Context()
    rclpy.init(context=context)
    recorder = Recorder(context, rig)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(recorder)
    node_log = open(out / "node.log", "w")
    node = subprocess.Popen(node_command(args.checkpoint, cameras, args.score_threshold), env=env, stdout=node_log,
                            stderr=subprocess.STDOUT)
    dead_at, black_at = duration / 3, 2 * duration / 3
    try:
        print("[demo] waiting for the perception node ...", flush=True)
        try:
            wait_for_node(recorder, executor, node)
        except RuntimeError as exc:
            raise SystemExit(f"{exc}; see {out / 'node.log'}") from exc
        print(f"[demo] replaying {args.frames} frames at {args.rate}x; {DEAD_CAMERA} dies at {dead_at:.1f} s, "
              f"{BLACK_CAMERA} goes black at {black_at:.1f} s"
              + (f"; {args.busy_loops} busy-loop processes load the CPU" if args.busy_loops else ""), flush=True)
        with busy_loops(args.busy_loops):
            replay_and_record(recorder, executor, bag, env, args.rate,
                              ["--dead", f"{camera_topic(DEAD_CAMERA, 'image_raw')}@{dead_at}",
                               "--black", f"{camera_topic(BLACK_CAMERA, 'image_raw')}@{black_at}"])
    finally:
        stop_process(node)
        node_log.close()
    from sparsecomp_core.data.nuscenes_layout import NuScenesLayout
    layout = NuScenesLayout(data, "v1.0-demo")
    bag_start_us = int(layout.tables["sample"][layout.scenes()[0]["first_sample_token"]]["timestamp"])
    report(recorder, out, bag_start_us, dead_at, black_at, args.frames, args.busy_loops)
    recorder.destroy_node()
    rclpy.shutdown(context=context)


def latest_image(images: list[tuple[int, np.ndarray]], stamp: int, max_age_us: int = 250_000) -> np.ndarray | None:
    """The camera's newest image stamped at most 50 ms after ``stamp`` and at most ``max_age_us`` before it."""
    best = None
    for image_stamp, image in images:
        if stamp - max_age_us <= image_stamp <= stamp + 50_000 and (best is None or image_stamp > best[0]):
            best = (image_stamp, image)
    return None if best is None else best[1]


def falsely_masked(health: dict[int, CameraHealth], start_us: int, dead_at: float, black_at: float) -> dict[str, int]:
    """camera -> frames it was masked without a fault injected into it (before its fault, or never faulted)."""
    injected = {DEAD_CAMERA: dead_at, BLACK_CAMERA: black_at}
    false: dict[str, int] = {}
    for stamp, msg in health.items():
        t = (stamp - start_us) / 1e6
        for camera in msg.cameras:
            if camera.failed and t < injected.get(camera.name, math.inf):
                false[camera.name] = false.get(camera.name, 0) + 1
    return false


def report(recorder: Recorder, out: Path, start: int, dead_at: float, black_at: float, frames_sent: int,
           busy: int = 0) -> None:
    stamps = sorted(recorder.clouds)
    if not stamps:
        raise SystemExit("no LiDAR frames were received: the replay did not reach the recorder")
    latencies = sorted((recorder.objects_arrival[s] - recorder.cloud_arrival[s]) * 1e3
                       for s in stamps if s in recorder.objects_arrival)
    phases = {"before faults": (0, dead_at), f"{DEAD_CAMERA} dead": (dead_at, black_at),
              f"+ {BLACK_CAMERA} black": (black_at, 1e9)}
    counts = {name: {"gt": 0, "det": 0, "hit": 0} for name in phases}
    pictures = []
    for index, stamp in enumerate(stamps):
        t = (stamp - start) / 1e6
        phase = next(name for name, (a, b) in phases.items() if a <= t < b)
        det = boxes_of(recorder.objects[stamp]) if stamp in recorder.objects else None
        truth = boxes_of(recorder.truth[stamp]) if stamp in recorder.truth else None
        if det is not None and truth is not None:
            sample = str(stamp)
            gts = [Detection(sample, b, int(label)) for b, label in zip(truth["boxes"], truth["labels"])]
            preds = [Detection(sample, b, int(label), float(s)) for b, label, s in
                     zip(det["boxes"], det["labels"], det["scores"])]
            in_range = [g for g in gts if np.hypot(*g.box[:2]) < 40]
            counts[phase]["gt"] += len(in_range)
            counts[phase]["det"] += len(preds)
            counts[phase]["hit"] += len(frame_matches(in_range, preds))
        statuses = [{"name": c.name, "failed": c.failed, "reason": c.reason, "message": c.message}
                    for c in recorder.health[stamp].cameras] if stamp in recorder.health else []
        images = {camera: latest_image(seen, stamp) for camera, seen in recorder.images.items()}
        picture = debug_picture(det or {"boxes": np.zeros((0, 10)), "labels": np.zeros(0)}, recorder.clouds[stamp],
                                recorder.rig, images, statuses, truth, frame_index=index, time_s=t)
        canvas = PILImage.fromarray(picture)
        canvas.save(out / "frames" / f"frame_{index:04d}.png")
        pictures.append(canvas.quantize(colors=255, method=PILImage.Quantize.FASTOCTREE))   # 10x faster GIF
    pictures[0].save(out / "summary.gif", save_all=True, append_images=pictures[1:], duration=100, loop=0)
    summary = {
        "frames_replayed": frames_sent, "frames_in": len(stamps),
        "frames_out": sum(1 for s in stamps if s in recorder.objects),
        "frames_skipped_model_busy": recorder.skipped_model_busy,
        "references_the_node_received": recorder.references_received,   # fewer than frames_in: lost on the way
        "node_dropped": dict(recorder.dropped),
        "busy_loop_processes": busy,
        "falsely_masked_camera_frames": falsely_masked(recorder.health, start, dead_at, black_at),
        "processing_load": sorted({s.message for s in recorder.load_statuses}),
        "latency_ms": {"p50": float(np.percentile(latencies, 50)) if latencies else None,
                       "p99": float(np.percentile(latencies, 99)) if latencies else None,
                       "note": "LiDAR message received -> objects received, on this machine's CPU"},
        "masked_cameras_s": masked_intervals(recorder.health, start),
        "injected": {DEAD_CAMERA: f"topic dead from {dead_at:.1f} s", BLACK_CAMERA: f"black from {black_at:.1f} s"},
        "detections_vs_ground_truth_within_40m": {
            name: {**c, "recall": c["hit"] / c["gt"] if c["gt"] else None,
                   "precision": c["hit"] / c["det"] if c["det"] else None} for name, c in counts.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n=== sparsecomp demo ===")
    print(f"frames replayed {frames_sent}, LiDAR frames seen {summary['frames_in']}, "
          f"object arrays out {summary['frames_out']}, skipped (model busy) {summary['frames_skipped_model_busy']}"
          + (f"; {busy} busy-loop processes" if busy else ""))
    print(f"LiDAR frames the node received {summary['references_the_node_received']}, dropped by the node: "
          + (", ".join(f"{k} {v}" for k, v in summary["node_dropped"].items()) or "none"))
    false = summary["falsely_masked_camera_frames"]
    print("cameras masked without a fault: " + (", ".join(f"{k} {v} frames" for k, v in false.items()) or "none"))
    if recorder.load_statuses:
        print(f"node load: {recorder.load_statuses[-1].message}")
    if latencies:
        print(f"latency LiDAR in -> objects out: p50 {summary['latency_ms']['p50']:.0f} ms, "
              f"p99 {summary['latency_ms']['p99']:.0f} ms (CPU)")
    print("injected: " + "; ".join(f"{k} {v}" for k, v in summary["injected"].items()))
    for camera, spans in summary["masked_cameras_s"].items():
        print(f"masked {camera}: " + ", ".join(f"{s['from_s']:.1f}-{s['to_s']:.1f} s ({', '.join(s['reasons'])})"
                                               for s in spans))
    for name, c in summary["detections_vs_ground_truth_within_40m"].items():
        recall = "-" if c["recall"] is None else f"{c['recall']:.2f}"
        precision = "-" if c["precision"] is None else f"{c['precision']:.2f}"
        print(f"{name:22s} ground truth {c['gt']:4d}  detections {c['det']:4d}  matched (2 m, class) {c['hit']:4d}  "
              f"recall {recall}  precision {precision}")
    print(f"pictures: {out / 'frames'}/, animation: {out / 'summary.gif'}, numbers: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
