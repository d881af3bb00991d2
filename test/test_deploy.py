"""The fixed-shape inference path (sparsecomp_core/deploy) against the eager model.

Tolerances (docs/deployment.md): the fixed-shape path runs the same ops, but
failed cameras go through completion in a batch of every camera, absent
history is a masked key instead of a missing one, and matrices are inverted in
closed form; so outputs agree to float rounding, not bit for bit. Over an
8-frame sequence with the state fed back: every query's box position and size
within 1e-4 m; yaw within 1e-3 rad and velocity within 1e-3 m/s on every query
from the operating threshold (atan2 and displacement / dt amplify rounding, and
both end in a discrete choice a near-tie may flip: sparsecomp_core/deploy/tolerance.py), class
/ occlusion logits within 1e-4 (measured on the first shipped model: 2.3e-5 and
5e-6); the same detections with the same ids.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from sparsecomp_core.deploy.affine import affine_inverse, inverse_3x3
from sparsecomp_core.deploy.check_sequence import LIDAR_OFF_FRAME, check_sequence
from sparsecomp_core.deploy.lidar_bucket import PaddedLidarBranch, pad_points
from sparsecomp_core.deploy.runner import FixedShapeRunner
from sparsecomp_core.deploy.tolerance import (OUTPUTS, TOLERANCE, align_queries, assert_boxes_close, largest_differences,
                                              confident_queries)
from sparsecomp_core.geometry import cam2ego_from_heading
from sparsecomp_core.models.detector import load_detector

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO_ROOT  # noqa: E402

TINY = REPO_ROOT / "models" / "tiny_default.pt"
IMAGE_SIZE = (64, 128)       # the shipped tiny model at a quarter of its input size: the same ops, 4x faster
LOGIT_TOLERANCE = TOLERANCE["cls_logits"]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: two OpenMP threads on a loaded 2-core machine spin against
    each other (a tiny frame takes 8 s instead of 0.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return load_detector(TINY)


def assert_same_detections(eager: list[dict], fixed: list[dict]) -> None:
    for e, f in zip(eager, fixed, strict=True):
        assert torch.equal(e["labels"], f["labels"]) and torch.equal(e["ids"], f["ids"])
        assert_boxes_close(f["boxes"], e["boxes"])
        torch.testing.assert_close(f["scores"], e["scores"], atol=LOGIT_TOLERANCE, rtol=0)


def assert_outputs_close(outputs: dict, eager: dict) -> None:
    """Every query's outputs (boxes, class and occlusion logits) against the eager model's last
    decoder layer, queries matched one to one (deploy/tolerance.py: near-ties may swap slots)."""
    expected = {name: eager[name][-1] for name in OUTPUTS}
    aligned = align_queries(outputs, expected)
    assert_boxes_close(aligned["boxes"], expected["boxes"], confident_queries(expected["cls_logits"]))
    for name in ("cls_logits", "occlusion_logits"):
        torch.testing.assert_close(aligned[name], expected[name], atol=TOLERANCE[name], rtol=0)


def test_outputs_are_compared_with_queries_matched_one_to_one():
    """Two queries that swapped slots (a near-tie in the top-k order) compare equal; a query
    that moved does not, and the error names the box columns that differ."""
    generator = torch.Generator().manual_seed(0)
    expected = {"boxes": torch.randn(2, 12, 10, generator=generator) * 20,
                "cls_logits": torch.randn(2, 12, 8, generator=generator),
                "occlusion_logits": torch.randn(2, 12, 4, generator=generator)}
    swapped = {name: value.clone() for name, value in expected.items()}
    for value in swapped.values():
        value[1, [3, 5]] = value[1, [5, 3]]
        value += 1e-6
    with pytest.raises(AssertionError):
        assert_boxes_close(swapped["boxes"], expected["boxes"])
    aligned = align_queries(swapped, expected)
    for name in OUTPUTS:
        torch.testing.assert_close(aligned[name], expected[name], atol=2e-6, rtol=0)
    moved = {name: value.clone() for name, value in expected.items()}
    moved["boxes"][0, 7, 0] += 1.0
    with pytest.raises(AssertionError, match="box_position_size"):
        assert_boxes_close(align_queries(moved, expected)["boxes"], expected["boxes"])
    slower = {name: value.clone() for name, value in expected.items()}
    slower["boxes"][0, 2, 7] += 5e-4                                  # within velocity's 1e-3
    assert_boxes_close(align_queries(slower, expected)["boxes"], expected["boxes"])


def test_yaw_and_velocity_count_only_for_queries_at_the_operating_threshold():
    """A velocity jump (another nearest past detection) or a yaw jump (another angle bin) on a
    query below 0.3 passes; the same jump on a confident query, or a position error on the
    unconfident one, does not."""
    expected = {"boxes": torch.zeros(1, 2, 10), "cls_logits": torch.tensor([[[-1.8] + [-9.0] * 7, [0.0] + [-9.0] * 7]]),
                "occlusion_logits": torch.zeros(1, 2, 4)}                   # scores 0.14 and 0.5
    unconfident_jump = {name: value.clone() for name, value in expected.items()}
    unconfident_jump["boxes"][0, 0, 7] += 0.017
    assert largest_differences(unconfident_jump, expected)["box_velocity"] == 0.0
    assert_boxes_close(unconfident_jump["boxes"], expected["boxes"], confident_queries(expected["cls_logits"]))
    confident_jump = {name: value.clone() for name, value in expected.items()}
    confident_jump["boxes"][0, 1, 7] += 0.017
    assert largest_differences(confident_jump, expected)["box_velocity"] == pytest.approx(0.017)
    with pytest.raises(AssertionError, match="box_velocity"):
        assert_boxes_close(confident_jump["boxes"], expected["boxes"], confident_queries(expected["cls_logits"]))
    unconfident_turned = {name: value.clone() for name, value in expected.items()}
    unconfident_turned["boxes"][0, 0, 6] += math.pi / 4
    assert largest_differences(unconfident_turned, expected)["box_yaw"] == 0.0
    confident_turned = {name: value.clone() for name, value in expected.items()}
    confident_turned["boxes"][0, 1, 6] += math.pi / 4
    with pytest.raises(AssertionError, match="box_yaw"):
        assert_boxes_close(confident_turned["boxes"], expected["boxes"], confident_queries(expected["cls_logits"]))
    unconfident_moved = {name: value.clone() for name, value in expected.items()}
    unconfident_moved["boxes"][0, 0, 0] += 0.01
    assert largest_differences(unconfident_moved, expected)["box_position_size"] == pytest.approx(0.01)


def test_closed_form_inverses_match_linalg_inv():
    generator = torch.Generator().manual_seed(0)
    intrinsics = torch.tensor([[400.0, 0.5, 320.0], [0.0, 410.0, 240.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(inverse_3x3(intrinsics), torch.linalg.inv(intrinsics))
    poses = torch.stack([cam2ego_from_heading(float(yaw), 10.0, (1.0, -2.0, 1.5)) for yaw in range(0, 360, 45)])
    poses = poses.double()
    poses[:, :3, :3] *= 1.0 + torch.rand(8, 1, 1, generator=generator, dtype=torch.float64)   # affine, not only rigid
    torch.testing.assert_close(affine_inverse(poses), torch.linalg.inv(poses), atol=1e-12, rtol=0)


def test_padded_points_change_nothing(tiny):
    """The padded branch on a cloud in a bucket equals the eager branch on the cloud,
    whatever the padding holds, and equals itself with a larger bucket."""
    model, cfg = tiny
    generator = torch.Generator().manual_seed(1)
    clouds = [torch.rand(500, 5, generator=generator) * torch.tensor([100.0, 90.0, 9.0, 255.0, 0.4])
              - torch.tensor([40.0, 45.0, 4.0, 0.0, 0.0]), torch.zeros(0, 5)]
    clouds[0][::50] = float("nan")                                               # dropped alike
    padded = PaddedLidarBranch(model.lidar)
    with torch.no_grad():
        eager = model.lidar(clouds)
        points, valid, cut = pad_points(clouds, 2, 600, 5)
        assert cut == 0 and valid.sum() == 500
        points[~valid] = torch.tensor([1.0, 2.0, 0.5, 100.0, 0.0])               # padding inside the grid
        torch.testing.assert_close(padded(points, valid), eager, atol=1e-5, rtol=0)
        larger, larger_valid, _ = pad_points(clouds, 2, 4000, 5)
        torch.testing.assert_close(padded(larger, larger_valid), padded(points, valid), atol=1e-6, rtol=0)


@pytest.fixture(params=["averaged", "in_gaps", "marked"], ids=["completed_averaged", "completed_in_gaps",
                                                                 "completed_marked"])
def completed_cameras_mode(request, tiny):
    """The shipped model as trained (its learned vector on the cells only completed cameras see
    included), with completed cameras only in the live cameras' gaps, and with a random vector
    in place of the learned one."""
    model, _ = tiny
    saved = model.completed_cameras_in_gaps_only, model.view_transform.completed
    model.completed_cameras_in_gaps_only = request.param == "in_gaps"
    if request.param == "marked":
        generator = torch.Generator().manual_seed(5)
        model.view_transform.completed = torch.nn.Parameter(
            torch.randn(1, model.view_transform.output[0].out_channels, 1, 1, generator=generator))
    yield request.param
    model.completed_cameras_in_gaps_only, model.view_transform.completed = saved


def test_fixed_shape_runner_matches_eager_over_a_sequence(tiny, completed_cameras_mode):
    """Batch of 2 streams, 8 frames, the state fed back on both paths: failed cameras
    change every frame, LiDAR is off in one frame, stream 2 starts a new sequence."""
    model, cfg = tiny
    runner = FixedShapeRunner(model, cfg, lidar_bucket=4096)
    eager_state, fixed_state = model.initial_state(), runner.initial_state()
    eager_tracks: tuple = ()
    eager_held: tuple = ()
    any_failed_and_completed, detected = False, 0
    for index, inputs in enumerate(check_sequence(cfg.load_rig(), 8, IMAGE_SIZE, batch=2)):
        assert (inputs.lidar_points is None) == (index == LIDAR_OFF_FRAME)
        with torch.no_grad():
            eager = model(inputs, eager_state)
        eager_state = eager["state"]
        outputs, started = runner.step(inputs, fixed_state)
        names = [spec.name for spec in runner.layout(inputs).buffers()]
        detections, fixed_state = runner.encoder.finish(outputs, started, inputs, names, model.postprocess_cfg)

        assert_outputs_close(outputs, eager)
        assert torch.equal(outputs["completed_cameras"], eager["completion"]["completed_cameras"])
        any_failed_and_completed |= bool(outputs["completed_cameras"].any())
        eager_detections, eager_tracks, eager_held = model.detections(eager, inputs, eager_tracks, held=eager_held)
        assert_same_detections(eager_detections, detections)
        detected += sum(len(d["scores"]) for d in detections)
        # The newest history slot is this frame as observed, like the eager history's newest frame.
        torch.testing.assert_close(fixed_state.buffers["history_features"][:, 0],
                                   eager_state.cascade.temporal.frames[0].features)
        assert torch.equal(fixed_state.buffers["queue_valid"][:, :len(eager_state.queries)],
                           torch.stack([f.valid for f in eager_state.queries.frames], 1))
    assert any_failed_and_completed and detected > 0
    assert fixed_state.next_id == eager_state.queries.next_id


def test_runner_infer_has_the_models_call_shape(tiny):
    """infer(inputs, state) -> (detections, state) from a None state, as the node calls it."""
    model, cfg = tiny
    runner = FixedShapeRunner(model, cfg, lidar_bucket=4096)
    frames = check_sequence(cfg.load_rig(), 2, IMAGE_SIZE)
    state = None
    eager_state = model.initial_state()
    for inputs in frames:
        detections, state = runner.infer(inputs, state)
        eager_detections, eager_state = model.infer(inputs, eager_state)
        assert_same_detections(eager_detections, detections)
    assert set(detections[0]) == set(eager_detections[0])
