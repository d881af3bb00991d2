"""ONNX export (python -m sparsecomp_core.export) and the onnxruntime runner against
the eager model, and the compiled fixed-shape path (slow on a CPU).

Tolerance (docs/deployment.md): every query's boxes and logits within 1e-4 of
the eager model over the sequence with the state fed back through the graph,
the same detections with the same ids. The export itself is most of this
test's time (torch.export of the whole model)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from sparsecomp_core import export
from sparsecomp_core.deploy.check_sequence import check_sequence
from sparsecomp_core.deploy.onnx_runner import OnnxRunner
from sparsecomp_core.deploy.runner import FixedShapeRunner
from sparsecomp_core.models.detector import load_detector

sys.path.insert(0, str(Path(__file__).parent))
from conftest import REPO_ROOT  # noqa: E402
from test_deploy import IMAGE_SIZE, assert_outputs_close, assert_same_detections  # noqa: E402

TINY = REPO_ROOT / "models" / "tiny_default.pt"


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread (see test_deploy.py: two spin against each other on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("onnx")
    torch.set_num_threads(1)
    sidecar = export.main(["--checkpoint", str(TINY), "--out", str(out), "--image-size", *map(str, IMAGE_SIZE),
                           "--lidar-bucket", "4096", "--check-frames", "4", "--no-tensorrt"])
    return out, sidecar


def test_the_export_writes_a_graph_and_a_sidecar_that_describes_it(exported):
    import onnx

    out, sidecar = exported
    graph = onnx.load(str(out / sidecar["graph"])).graph
    declared = [(item["name"], item["shape"]) for item in sidecar["inputs"]]
    actual = [(value.name, [d.dim_value for d in value.type.tensor_type.shape.dim]) for value in graph.input]
    assert actual == declared
    assert [value.name for value in graph.output] == [item["name"] for item in sidecar["outputs"]]
    assert {"history_features", "queue_embeddings", "queue_valid"} <= set(sidecar["state"])
    assert sidecar["lidar_bucket"] == 4096 and len(sidecar["cameras"]) == 7
    assert sidecar["check"]["within_tolerance"] and sidecar["check"]["same_detections_and_ids"]


def test_onnxruntime_steps_the_graph_like_the_eager_model(exported):
    """From the folder alone: 8 frames with failed cameras that change, LiDAR off in one,
    the state fed back as the graph's inputs every frame."""
    out, _ = exported
    model, cfg = load_detector(TINY)
    runner = OnnxRunner(out, intra_op_threads=1)
    eager_state, onnx_state = model.initial_state(), None
    eager_tracks: tuple = ()
    eager_held: tuple = ()
    masks = set()
    for inputs in check_sequence(cfg.load_rig(), 8, IMAGE_SIZE, seed=3):
        with torch.no_grad():
            eager = model(inputs, eager_state)
        eager_state = eager["state"]
        outputs, started = runner.step(inputs, onnx_state)
        detections, onnx_state = runner.encoder.finish(outputs, started, inputs, runner.state_names,
                                                       model.postprocess_cfg)
        assert_outputs_close(outputs, eager)
        eager_detections, eager_tracks, eager_held = model.detections(eager, inputs, eager_tracks, held=eager_held)
        assert_same_detections(eager_detections, detections)
        masks.add(tuple(inputs.cam_mask[0].tolist()))
    assert len(masks) >= 5
    assert onnx_state.next_id == eager_state.queries.next_id


def test_a_frame_of_another_shape_is_refused_with_the_shapes_named(exported):
    out, _ = exported
    model, cfg = load_detector(TINY)
    inputs = check_sequence(cfg.load_rig(), 1, (128, 256))[0]
    with pytest.raises(ValueError, match="exported for images"):
        OnnxRunner(out).infer(inputs)


@pytest.mark.slow
def test_the_compiled_fixed_shape_path_matches_eager():
    """torch.compile(fullgraph=True) of the fixed-shape graph: no graph break, and the
    same outputs as eager over a few frames (slow: inductor compiles C++ on the CPU)."""
    model, cfg = load_detector(TINY)
    runner = FixedShapeRunner(model, cfg, lidar_bucket=4096, compile=True)
    eager_state, state = model.initial_state(), None
    for inputs in check_sequence(cfg.load_rig(), 4, IMAGE_SIZE):
        eager_detections, eager_state = model.infer(inputs, eager_state)
        detections, state = runner.infer(inputs, state)
        assert_same_detections(eager_detections, detections)


@pytest.mark.cuda
def test_tensorrt_engine_matches_onnxruntime(tmp_path):
    """Where tensorrt is importable (GPU machines): the export builds an engine, steps it
    against onnxruntime and times it."""
    pytest.importorskip("tensorrt")
    sidecar = export.main(["--checkpoint", str(TINY), "--out", str(tmp_path), "--image-size", *map(str, IMAGE_SIZE),
                           "--lidar-bucket", "4096", "--check-frames", "4"])
    result = sidecar["tensorrt"]
    assert result is not None and result["built"], result
    assert all(value <= 1e-3 for value in result["max_abs_difference_vs_onnxruntime"].values()), result
