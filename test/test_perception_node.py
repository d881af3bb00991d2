"""The perception node's frame logic with real messages, in-process: the test
calls the ingestion callbacks as the executor thread would, the node's own
inference worker runs the model (the multi-process tests drive it through DDS)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import torch
from builtin_interfaces.msg import Time
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, PointCloud2
from std_msgs.msg import Header

from sparsecomp_core.config import to_dict
from sparsecomp_core.models.detector import build_detector
from sparsecomp_ros.camera_health import FAULT_BAD_FORMAT, FAULT_NONE
from sparsecomp_ros.conversions import array_to_cloud, rgb_to_image, to_transform

sys.path.insert(0, str(Path(__file__).parent))
from test_detector import micro_config  # noqa: E402

MS = 1_000_000


def stamp_of(t_ns: int) -> Time:
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    cfg = micro_config()
    path = tmp_path / "micro.pt"
    torch.save({"model": build_detector(cfg).state_dict(), "model_config": to_dict(cfg)}, path)
    return path


@pytest.fixture
def make_node(checkpoint, ros_domain_id):
    """make_node(**parameters) -> a PerceptionNode whose publishers append to node.published."""
    from sparsecomp_ros.perception_node import PerceptionNode
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=ros_domain_id)
    nodes = []

    def make(**parameters):
        values = {"model.checkpoint": str(checkpoint), "model.device": "cpu", "output.score_threshold": 0.0,
                  **parameters}
        node = PerceptionNode(context=context, parameter_overrides=[
            Parameter(name, value=value) for name, value in values.items()])
        nodes.append(node)
        published = {"objects": [], "health": [], "diagnostics": []}
        node.objects_pub.publish = published["objects"].append
        node.health_pub.publish = published["health"].append
        node.diagnostics_pub.publish = published["diagnostics"].append
        node.published = published
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


@pytest.fixture
def node(make_node):
    return make_node()


def feed_frame(node, t_ns: int, skip=(), black=(), points=None, wait=True, image_offsets_ns=None):
    """Images of every camera, then a sweep (random unless ``points``; ``points=False``: none, and
    the LiDAR-fallback camera's image comes last, as the one that builds the frame)."""
    rng = np.random.default_rng(t_ns // MS)
    order = node.cameras if points is not False else sorted(node.cameras, key=lambda n: n == node.lidar_fallback)
    for name in order:
        if name in skip:
            continue
        rgb = np.zeros((64, 128, 3), np.uint8) if name in black else rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
        stamp = t_ns + (image_offsets_ns or {}).get(name, 0)
        node.on_image(name, rgb_to_image(rgb, Header(stamp=stamp_of(stamp), frame_id=name.lower())))
    cloud = rng.normal(0, 15, (2000, 4)).astype(np.float32) if points is None else points
    if points is not False:
        node.on_points(array_to_cloud(cloud, Header(stamp=stamp_of(t_ns), frame_id="base_link")))
    if wait:
        assert node.wait_until_idle(120.0), "the inference worker did not finish the frame"


def add_pose(node, t_ns: int, speed_mps: float = 10.0) -> None:
    pose = np.eye(4)
    pose[0, 3] = speed_mps * t_ns * 1e-9
    node.tf_buffer.set_transform(to_transform("odom", "base_link", pose, stamp_of(t_ns)), "test")


def statuses_named(diagnostics, fragment: str) -> list:
    return [s for msg in diagnostics for s in msg.status if fragment in s.name]


def test_a_dead_camera_is_flagged_and_objects_keep_coming(node):
    dead = node.cameras[2]
    for step in range(8):
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        feed_frame(node, t, skip=(dead,) if step >= 2 else ())
    assert len(node.published["objects"]) == 8
    last = node.published["health"][-1]
    flags = {c.name: c.failed for c in last.cameras}
    assert flags[dead] and sum(flags.values()) == 1
    assert list(node.published["objects"][-1].failed_cameras) == [dead]


def test_bad_messages_are_dropped_counted_by_reason_and_do_not_stop_the_node(node):
    t = 2_000 * MS
    add_pose(node, t)
    bad = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=stamp_of(t)))
    bad.encoding = "32FC1"
    node.on_image(node.cameras[0], bad)
    truncated = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=stamp_of(t)))
    truncated.data = truncated.data[:100]
    node.on_image(node.cameras[1], truncated)
    node.camera_infos[node.cameras[2]] = CameraInfo(height=64, width=128)
    wrong_size = rgb_to_image(np.zeros((32, 128, 3), np.uint8), Header(stamp=stamp_of(t)))
    node.on_image(node.cameras[2], wrong_size)                        # not the size CameraInfo announced
    broken_cloud = PointCloud2(header=Header(stamp=stamp_of(t)), height=1, width=10, point_step=16, data=b"\x00" * 8)
    node.on_points(broken_cloud)                                      # dropped, frame still published
    assert node.wait_until_idle(120.0)
    feed_frame(node, t + 100 * MS, points=np.full((50, 4), np.nan, np.float32))   # all-NaN cloud
    feed_frame(node, t + 200 * MS, points=np.zeros((0, 4), np.float32))           # empty cloud (no tf yet: degrade)
    feed_frame(node, t - 500 * MS)                                                # time goes backwards
    assert len(node.published["objects"]) == 4
    reasons = dict(node.dropped)
    assert reasons["image: unsupported encoding"] == 1 and reasons["image: truncated"] == 1
    assert reasons["image: wrong size"] == 1
    assert reasons["point cloud: missing field"] == 1 and reasons["time went backwards"] == 1
    assert reasons["ego pose missing: temporal state reset"] >= 1
    with node._lock:
        assert node.node_status().level == node.node_status().WARN


def test_a_camera_sending_only_bad_images_is_reported_as_bad_format(node):
    broken = node.cameras[4]
    for step in range(4):
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        bad = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=stamp_of(t)))
        bad.data = bad.data[:100]
        node.on_image(broken, bad)
        feed_frame(node, t, skip=(broken,))
    status = {c.name: c for c in node.published["health"][-1].cameras}[broken]
    assert status.reason == FAULT_BAD_FORMAT and status.failed and "truncated" in status.message
    camera_diagnostics = statuses_named(node.published["diagnostics"], f"camera {broken}")
    assert "truncated" in camera_diagnostics[-1].message


def test_drop_warnings_fade_but_totals_stay(make_node):
    node = make_node(**{"diagnostics.drop_window_s": 0.5})
    bad = rgb_to_image(np.zeros((64, 128, 3), np.uint8), Header(stamp=stamp_of(1_000 * MS)))
    bad.encoding = "32FC1"
    node.on_image(node.cameras[0], bad)
    with node._lock:
        assert node.node_status().level == node.node_status().WARN
    time.sleep(0.6)                                   # longer than the window, however busy the machine
    with node._lock:
        status = node.node_status()
    assert status.level == status.OK
    assert {v.key: v.value for v in status.values}["dropped: image: unsupported encoding"] == "1"


def test_diagnostics_come_once_a_period_and_at_once_when_a_verdict_changes(make_node):
    node = make_node(**{"diagnostics.overload_warn_ratio": 1000.0, "diagnostics.overload_error_ratio": 1000.0})
    dead = node.cameras[1]
    stamps = []
    for step in range(25):                                   # 2.5 s at 10 Hz; the camera dies at 1.2 s
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        feed_frame(node, t, skip=(dead,) if step >= 12 else ())
        if len(node.published["diagnostics"]) > len(stamps):
            stamps.append(t)
    assert len(node.published["health"]) == 25                 # camera health: every frame
    failed_at = next(1_000 * MS + i * 100 * MS for i, h in enumerate(node.published["health"])
                     if any(c.failed for c in h.cameras))
    assert failed_at in stamps                                  # the verdict change is reported at once
    first = node.published["diagnostics"][stamps.index(failed_at)]
    assert any(s.level == s.ERROR and s.hardware_id == dead for s in first.status)
    steady = [b - a for a, b in zip(stamps, stamps[1:]) if a >= failed_at]
    assert steady and all(gap == 1_000 * MS for gap in steady)  # then once a second (of frame time)
    assert 3 <= len(stamps) <= 7                               # not every frame


def test_a_lidar_sending_empty_or_nan_clouds_is_reported_and_objects_keep_coming(node):
    for step in range(6):
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        empty = np.zeros((0, 4), np.float32) if step % 2 else np.full((500, 4), np.nan, np.float32)
        feed_frame(node, t, points=empty)
    assert len(node.published["objects"]) == 6
    lidar = statuses_named(node.published["diagnostics"], "lidar")
    assert lidar[-1].level == lidar[-1].ERROR and "finite points" in lidar[-1].message
    assert not any(c.failed for c in node.published["health"][-1].cameras)


def test_a_silent_lidar_hands_the_frames_to_a_camera_and_takes_them_back(make_node, tmp_path):
    """The LiDAR (the sync reference) stops: once it has been silent longer than
    health.timeout_s (0.5 s), the first camera's images build the frames, camera only (no
    stale sweeps merged), with the LiDAR failed in /diagnostics; when sweeps come back they
    build the frames again."""
    cfg = micro_config(lidar={"enable": True, "sweeps": 3})
    path = tmp_path / "micro_sweeps.pt"
    torch.save({"model": build_detector(cfg).state_dict(), "model_config": to_dict(cfg)}, path)
    node = make_node(**{"model.checkpoint": str(path), "health.timeout_s": 0.45})
    assert node.lidar_fallback == node.cameras[0]
    captured = []
    real_infer = node.model.infer

    def capture(inputs, state):
        captured.append(len(inputs.lidar_points[0]))
        return real_infer(inputs, state)

    node.model.infer = capture
    for step in range(22):
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        feed_frame(node, t, points=False if 5 <= step < 15 else None)
    # Frames: steps 0-4 from the LiDAR (the last sweep at 1.4 s); the camera's previous image is
    # more than 0.45 s newer than that sweep from step 10 on: 10-15 from the camera (at 15 its
    # image comes before the returning sweep, which then builds no second frame at the same
    # stamp); 16-21 from the LiDAR again.
    assert node.fallback_references == 6 and node.references_received == 17
    assert len(node.published["objects"]) == 17 and not any(node.dropped.values())
    assert captured[:5] == [2000, 4000, 6000, 6000, 6000]            # up to 3 sweeps of 2000 points
    assert captured[5:10] == [0] * 5                                  # camera only: stale sweeps left out
    assert captured[10] in (0, 2000)                                  # step 15's sweep, if it came in time
    assert captured[11:] == [4000] + [6000] * 5                       # back; the sweeps of steps 3-4 are stale
    lidar = statuses_named(node.published["diagnostics"], "lidar")
    assert any(s.level == s.ERROR for s in lidar) and lidar[-1].level == lidar[-1].OK      # failed, recovered
    assert not any(c.failed for c in node.published["health"][8].cameras)


def test_a_pause_in_every_stream_is_no_lidar_fault(make_node):
    """A bag paused and resumed (every sensor 3 s later), or stamps that jump back: the sweep
    builds the frame, as before; the camera takes over only when it kept delivering alone."""
    node = make_node()
    for t in (1_000 * MS, 1_100 * MS, 4_100 * MS, 4_200 * MS, 2_000 * MS, 2_100 * MS):
        add_pose(node, t)
        feed_frame(node, t)
    assert node.fallback_references == 0 and node.references_received == 6
    assert len(node.published["objects"]) == 6


def test_tf_a_little_late_is_waited_for_and_missing_tf_resets_the_temporal_state(make_node):
    node = make_node(**{"tf.wait_s": 5.0})
    add_pose(node, 900 * MS)
    feed_frame(node, 900 * MS)
    sequence = node.sequence
    t = 1_000 * MS
    feed_frame(node, t, wait=False)                    # the pose for t comes after the sweep
    time.sleep(0.05)
    add_pose(node, t)
    assert node.wait_until_idle(120.0)
    assert node.sequence == sequence                   # the temporal state was kept
    assert node.tf_outcomes["ego pose: found after waiting (tf late)"] >= 1
    slow = make_node(**{"tf.wait_s": 0.05})
    add_pose(slow, 900 * MS)
    feed_frame(slow, 900 * MS)
    before = slow.sequence
    feed_frame(slow, t)                                # never comes within the wait
    assert slow.sequence == before + 1 and slow.tf_outcomes["ego pose: missing"] == 1


def test_the_first_frame_finds_tf_at_its_exact_nanosecond_stamp(node):
    t = 1_000 * MS + 123_456_789 % MS + 789                 # not a whole microsecond
    add_pose(node, t)                                       # the only pose sample there is
    feed_frame(node, t)
    assert node.tf_outcomes["ego pose: found"] == 1 and "ego pose: missing" not in node.tf_outcomes
    assert "ego pose missing: temporal state reset" not in node.dropped


def test_each_camera_is_placed_where_the_vehicle_was_when_it_fired(node):
    captured = []
    real_infer = node.model.infer

    def capture(inputs, state):
        captured.append(inputs.calibration.cam2ego[0].clone())
        return real_infer(inputs, state)

    node.model.infer = capture
    late = node.cameras[3]
    for step in range(3):
        add_pose(node, 1_000 * MS + step * 50 * MS, speed_mps=10.0)       # 10 m/s along x
    feed_frame(node, 1_000 * MS, image_offsets_ns={late: 30 * MS})
    nominal = node.nominal.cam2ego[0]
    moved = captured[-1][node.cameras.index(late)] - nominal[node.cameras.index(late)]
    assert moved[0, 3].item() == pytest.approx(0.3, abs=1e-4)             # 30 ms at 10 m/s
    others = [i for i, name in enumerate(node.cameras) if name != late]
    assert torch.equal(captured[-1][others], nominal[others])


def test_an_overloaded_node_flags_no_healthy_camera_skips_old_frames_and_says_so(node):
    """A model 3x slower than the sensors: the node keeps ingesting, processes the newest frame
    each time it is free, counts the skipped ones and reports itself overloaded."""
    period_s = 0.1
    real_infer = node.model.infer
    newest_offered = {"ns": None}
    inferences = []

    def slow_infer(inputs, state):
        with node._lock:
            offered = newest_offered["ns"]
            pending = node.mailbox.pending.reference_ns if node.mailbox.pending is not None else None
        inferences.append((int(inputs.timestamp_us[0]) * 1000, offered, pending))
        time.sleep(3 * period_s)
        return real_infer(inputs, state)

    node.model.infer = slow_infer
    start = time.monotonic()
    for step in range(40):                                   # 4 s of 10 Hz sensors
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        feed_frame(node, t, wait=False)
        with node._lock:
            newest_offered["ns"] = t
        time.sleep(max(0.0, start + (step + 1) * period_s - time.monotonic()))
    assert node.wait_until_idle(120.0)
    assert len(inferences) >= 2 and node.mailbox.skipped > 0        # the first frame and the last, at least
    for frame_ns, offered_ns, pending_ns in inferences:
        # built from the newest reference offered before inference began, unless a newer one
        # arrived after the frame was taken (it is then waiting in the mailbox)
        assert frame_ns >= offered_ns or pending_ns == offered_ns, (frame_ns, offered_ns, pending_ns)
    assert not any(c.failed or c.reason != FAULT_NONE for msg in node.published["health"] for c in msg.cameras)
    load = statuses_named(node.published["diagnostics"], "processing load")
    assert load and max(ord(s.level) for s in load) >= 1 and "overloaded" in load[-1].message
    with node._lock:
        values = {v.key: v.value for v in node.node_status().values}
    assert int(values["skipped: model busy"]) == node.mailbox.skipped


@pytest.mark.parametrize("parameter, value, says", [
    ("model.precision", "fp64", "model.precision"),
    ("model.device", "gpu", "model.device"),
    ("sync.reference", "radar", "sync.reference"),
    ("sync.lidar_fallback", "CAM_BACK", "sync.lidar_fallback"),
    ("output.score_threshold", 1.5, "output.score_threshold"),
    ("health.fail_after", 0, "health.fail_after"),
    ("sync.slop_s", 0.0, "sync.slop_s"),
    ("cameras", ["CAM_FRONT", "CAM_BACK"], "cameras"),
    ("model.lidar_bucket", 0, "model.lidar_bucket"),
    ("model.compile", True, "model.compile"),            # without model.fast_path
])
def test_bad_parameters_are_refused_with_the_parameter_named(make_node, parameter, value, says):
    from sparsecomp_ros.perception_node import ParameterError
    with pytest.raises(ParameterError, match=says.replace(".", r"\.")):
        make_node(**{parameter: value})


def test_the_reference_camera_may_be_named_in_any_case(make_node):
    node = make_node(**{"sync.reference": micro_config().load_rig().camera_names[1].lower()})
    assert node.reference == node.cameras[1]
    add_pose(node, 1_000 * MS)
    feed_frame(node, 1_000 * MS)
    assert node.published["objects"]                       # the reference camera's image built a frame


def test_stopping_during_inference_publishes_nothing_more(node):
    entered = threading.Event()
    real_infer = node.model.infer

    def slow_infer(inputs, state):
        entered.set()
        time.sleep(0.3)
        return real_infer(inputs, state)

    node.model.infer = slow_infer
    add_pose(node, 1_000 * MS)
    feed_frame(node, 1_000 * MS, wait=False)
    assert entered.wait(60.0)
    node.stop()
    assert not node.worker.is_alive() and node.published["objects"] == []


def test_the_debug_picture_marks_the_failed_camera_when_someone_watches(node):
    from sparsecomp_ros.visualization import debug_layout
    pictures = []
    node.bev_pub.get_subscription_count = lambda: 1
    node.bev_pub.publish = pictures.append
    dead = node.cameras[2]
    for step in range(4):
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t)
        feed_frame(node, t, skip=(dead,) if step >= 1 else ())
    picture = np.frombuffer(pictures[-1].data, np.uint8).reshape(pictures[-1].height, pictures[-1].width, 3)
    layout = debug_layout(node.rig, (picture.shape[1], picture.shape[0]))

    def frame_colour(name):
        left, top, right, _ = layout.thumbs[name].frame
        return picture[top, (left + right) // 2].astype(int)

    red = frame_colour(dead)
    assert red[0] > 150 and red[1] < 100 and red[2] < 100              # the failed camera's frame is red
    healthy = frame_colour(node.cameras[0])
    assert not (healthy[0] > 150 and healthy[1] < 100)


def test_the_shipped_parameter_file_holds_only_declared_parameters_with_valid_values(make_node):
    import yaml

    from conftest import REPO_ROOT
    values = yaml.safe_load((REPO_ROOT / "config" / "perception.yaml").read_text())
    values = values["sparsecomp_perception"]["ros__parameters"]
    values.pop("model.checkpoint")                           # the fixture's micro model instead
    node = make_node(**{**values, "model.device": "cpu"})
    undeclared = [name for name in values if not node.has_parameter(name)]
    assert not undeclared, undeclared


def test_a_multi_sweep_model_gets_the_last_sweeps_moved_into_the_current_ego_frame(checkpoint, tmp_path, make_node):
    cfg = micro_config(lidar={"enable": True, "sweeps": 3})
    path = tmp_path / "micro_sweeps.pt"
    torch.save({"model": build_detector(cfg).state_dict(), "model_config": to_dict(cfg)}, path)
    node = make_node(**{"model.checkpoint": str(path)})
    captured = []
    real_infer = node.model.infer

    def capture(inputs, state):
        captured.append(inputs.lidar_points[0].clone())
        return real_infer(inputs, state)

    node.model.infer = capture
    world_point = np.array([20.0, 5.0, 1.0])
    for step in range(4):                                  # ego drives at 10 m/s; the point stands still
        t = 1_000 * MS + step * 100 * MS
        add_pose(node, t, speed_mps=10.0)
        ego_x = 10.0 * t * 1e-9
        cloud = np.array([[world_point[0] - ego_x, world_point[1], world_point[2], 50.0]], np.float32)
        feed_frame(node, t, points=cloud)
    merged = captured[-1].numpy()
    assert merged.shape == (3, 5)                          # this sweep and the two before it
    ego_x = 10.0 * (1_000 * MS + 3 * 100 * MS) * 1e-9
    np.testing.assert_allclose(merged[:, :3], np.repeat([[world_point[0] - ego_x, 5.0, 1.0]], 3, 0), atol=1e-4)
    np.testing.assert_allclose(merged[:, 4], [0.0, 0.1, 0.2], atol=1e-6)     # time lag, s
    assert captured[0].shape == (1, 5)                     # the first frame has no earlier sweep


def test_the_fast_path_publishes_the_same_objects_as_the_eager_model(make_node):
    """model.fast_path (fixed shapes, sparsecomp_core/deploy) against the eager model on the
    same frames: a moving ego, a camera dying and another going black, LiDAR clouds of
    changing size (bucket 3000). Tolerances as test_deploy.py's (1e-4)."""
    from sparsecomp_core.deploy.runner import FixedShapeRunner
    eager, fast = make_node(), make_node(**{"model.fast_path": True, "model.lidar_bucket": 3000})
    assert isinstance(fast.inference, FixedShapeRunner) and eager.inference is eager.model
    rng = np.random.default_rng(0)
    for step in range(6):
        t = 1_000 * MS + step * 100 * MS
        cloud = rng.normal(0, 15, (1500 + 200 * step, 4)).astype(np.float32)
        for node in (eager, fast):
            add_pose(node, t)
            feed_frame(node, t, skip=(node.cameras[2],) if step >= 2 else (),
                       black=(node.cameras[4],) if step >= 3 else (), points=cloud)
    assert len(eager.published["objects"]) == len(fast.published["objects"]) == 6
    assert list(fast.published["objects"][-1].failed_cameras) == list(eager.published["objects"][-1].failed_cameras)
    assert len(fast.published["objects"][-1].failed_cameras) == 2
    for eager_msg, fast_msg in zip(eager.published["objects"], fast.published["objects"]):
        assert len(eager_msg.objects) == len(fast_msg.objects) > 0
        for e, f in zip(eager_msg.objects, fast_msg.objects):
            assert (e.id, e.label) == (f.id, f.label)
            assert abs(e.score - f.score) < 1e-4
            for axis in "xyz":
                assert abs(getattr(e.pose.position, axis) - getattr(f.pose.position, axis)) < 1e-4
                assert abs(getattr(e.velocity, axis) - getattr(f.velocity, axis)) < 1e-4


def test_the_blind_zone_hold_is_on_by_default_and_a_parameter_turns_it_off(make_node):
    assert make_node().model.blind_zone_hold_cfg.enabled
    node = make_node(**{"output.blind_zone_hold": False})
    assert not node.model.blind_zone_hold_cfg.enabled
    assert not node.model_config.blind_zone_hold.enabled        # what the fixed-shape runner reads
