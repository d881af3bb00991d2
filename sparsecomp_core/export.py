"""Export one frame of the detector to ONNX, with the temporal state as explicit
inputs and outputs, check it against the eager model with onnxruntime, and
(where ``tensorrt`` and a CUDA GPU are present) build a TensorRT engine, check
and time it.

    python -m sparsecomp_core.export --checkpoint models/tiny_default.pt --out DIR \\
        [--image-size H W] [--batch 1] [--lidar-bucket N] [--check-frames 8]

writes DIR/sparsecomp.onnx and DIR/sparsecomp.json (the sidecar: inputs and
outputs with shapes and dtypes, the state buffers, the bucket, the camera names,
the model config, the tolerance and the measured differences), which
``sparsecomp_core.deploy.onnx_runner`` reads. Exported with torch's dynamo
exporter (``torch.onnx.export(dynamo=True)``); see docs/deployment.md for what
stays outside the graph and why.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from .config import to_dict
from .deploy.check_sequence import check_sequence
from .deploy.fixed_detector import fixed_shapes
from .deploy.onnx_graph import DESCRIPTIONS, GraphAdapter, GraphSignature, float_images
from .deploy.onnx_runner import SIDECAR, OnnxRunner
from .deploy.runner import DEFAULT_LIDAR_BUCKET, FixedShapeRunner
from .deploy.tolerance import OUTPUTS, TOLERANCE, largest_differences, within_tolerance
from .models.detector import SparseCompDetector, load_detector
from .models.model_config import ModelConfig

log = logging.getLogger("sparsecomp.export")

GRAPH = "sparsecomp.onnx"
OPSET = 20                  # GridSample on 4-D input, ScatterElements with max reduction


def export_graph(model: SparseCompDetector, cfg: ModelConfig, out: Path, image_size: tuple[int, int],
                 batch: int, lidar_bucket: int) -> dict:
    """Write the ONNX graph of one frame and return the sidecar (without the checks)."""
    rig = cfg.load_rig()
    runner = FixedShapeRunner(model, cfg, lidar_bucket)
    first = check_sequence(rig, 1, image_size, batch)[0]
    state = runner.encoder.started(None, runner.layout(first), "cpu")
    frame = runner.encoder.frame(first, state)
    frame["images"] = float_images(frame["images"])
    shapes = fixed_shapes(model, batch, rig.num_cameras, image_size, lidar_bucket)
    signature = GraphSignature.of(shapes, model.head.num_queries)
    adapter = GraphAdapter(runner.graph, signature).eval()
    started = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(adapter, signature.example_inputs(frame, state.buffers), str(out / GRAPH),
                          input_names=signature.input_names, output_names=signature.output_names,
                          opset_version=OPSET, dynamo=True, external_data=False, verbose=False)
    log.info("exported %s in %.0f s", out / GRAPH, time.perf_counter() - started)

    def describe(items):
        return [{"name": name, "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
                 "description": DESCRIPTIONS.get(name.removeprefix("new_"), "temporal state buffer "
                                                 "(sparsecomp_core/deploy/static_state.py)")}
                for name, shape, dtype in items]
    layout = shapes.layout
    return {
        "format": 1, "graph": GRAPH, "opset": OPSET, "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "batch": batch, "image_size": list(image_size), "cameras": rig.camera_names, "lidar_bucket": lidar_bucket,
        "inputs": describe(signature.inputs), "outputs": describe(signature.outputs), "state": signature.state,
        "state_layout": {name: getattr(layout, name) for name in layout.__dataclass_fields__},
        "outside_the_graph": [
            "padding each LiDAR cloud into the bucket (points past it are dropped)",
            "comparing sequence ids (input sequence_changed)",
            "key_cameras from the calibration (camera neighbourhoods)",
            "importance_<level> maps from the planned ego path (zeros without one)",
            "object ids: Hungarian association of confident outputs with past_centres / past_usable, "
            "the kept queries' ids (kept_index) and the id counter",
            "post-processing: score threshold, top-N, optional circle NMS"],
        "model_config": to_dict(cfg)}


def check_against_eager(model: SparseCompDetector, directory: Path, frames: int) -> dict:
    """Step the ONNX graph and the eager model over the check sequence (state fed back on
    both); the largest differences of every query's outputs and whether detections agree."""
    runner = OnnxRunner(directory)
    sidecar = runner.sidecar
    worst = {name: 0.0 for name in TOLERANCE}       # largest |ONNX - eager| (deploy/tolerance.py)
    same_detections = True
    eager_state, onnx_state, eager_tracks, eager_held = model.initial_state(), None, (), ()
    for inputs in check_sequence(runner.cfg.load_rig(), frames, tuple(sidecar["image_size"]), sidecar["batch"]):
        with torch.no_grad():
            eager = model(inputs, eager_state)
        eager_state = eager["state"]
        outputs, started = runner.step(inputs, onnx_state)
        detections, onnx_state = runner.encoder.finish(outputs, started, inputs, runner.state_names,
                                                       runner.postprocess_cfg)
        frame = largest_differences(outputs, {name: eager[name][-1] for name in OUTPUTS})
        worst = {name: max(worst[name], frame[name]) for name in worst}
        eager_detections, eager_tracks, eager_held = model.detections(eager, inputs, eager_tracks,
                                                                         runner.postprocess_cfg, eager_held)
        for e, o in zip(eager_detections, detections):
            same_detections &= torch.equal(e["ids"], o["ids"]) and torch.equal(e["labels"], o["labels"])
    return {"frames": frames, "max_abs_difference": worst, "same_detections_and_ids": bool(same_detections),
            "within_tolerance": within_tolerance(worst)}


def tensorrt_check(directory: Path, frames: int) -> dict | None:
    """Where ``tensorrt`` is importable and CUDA is available: build an engine from the
    graph, step it over the check sequence against onnxruntime (largest differences)
    and time it (median ms per frame). None otherwise. Unmeasured so far (no GPU where
    this was written): TensorRT has no float64, so the pose inputs may need a float32
    graph; the parser's error says so if it refuses them."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((directory / GRAPH).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        return {"built": False, "errors": errors}
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 4 << 30)
    config.clear_flag(trt.BuilderFlag.TF32)          # fp32 parity with onnxruntime, as the CUDA tests run TF32 off
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        return {"built": False, "errors": ["build_serialized_network returned None (see the TensorRT log)"]}
    (directory / "sparsecomp.engine").write_bytes(bytes(serialized))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    reference = OnnxRunner(directory)
    sidecar = reference.sidecar
    dtypes = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "bool": torch.bool}
    outputs = {item["name"]: torch.empty(item["shape"], dtype=dtypes[item["dtype"]], device="cuda")
               for item in sidecar["outputs"]}
    worst, times, onnx_state, state = {name: 0.0 for name in TOLERANCE}, [], None, None
    stream = torch.cuda.current_stream()
    for inputs in check_sequence(reference.cfg.load_rig(), frames, tuple(sidecar["image_size"]), sidecar["batch"]):
        expected, onnx_started = reference.step(inputs, onnx_state)
        _, onnx_state = reference.encoder.finish(expected, onnx_started, inputs, reference.state_names,
                                                 reference.postprocess_cfg)
        state = reference.encoder.started(state, reference.layout, "cpu")
        frame = reference.encoder.frame(inputs, state)
        frame["images"] = float_images(frame["images"])
        feeds = {name: value.cuda().contiguous() for name, value in {**frame, **state.buffers}.items()
                 if name in reference.input_names}
        for name, tensor in {**feeds, **outputs}.items():
            context.set_tensor_address(name, tensor.data_ptr())
        torch.cuda.synchronize()
        started = time.perf_counter()
        context.execute_async_v3(stream.cuda_stream)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1e3)
        result = {name.removeprefix("new_"): value.cpu() for name, value in outputs.items()}
        frame_worst = largest_differences(result, expected)
        worst = {name: max(worst[name], frame_worst[name]) for name in worst}
        _, state = reference.encoder.finish(result, state, inputs, reference.state_names, reference.postprocess_cfg)
    return {"built": True, "engine": "sparsecomp.engine", "frames": frames, "max_abs_difference_vs_onnxruntime": worst,
            "median_ms_per_frame": sorted(times)[len(times) // 2], "device": torch.cuda.get_device_name()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model file (weights + model config)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"),
                        help="model input size (multiples of 64); default: the model config's")
    parser.add_argument("--batch", type=int, default=1, help="streams per call (the node runs 1)")
    parser.add_argument("--lidar-bucket", type=int, default=DEFAULT_LIDAR_BUCKET, help="points per cloud in the graph")
    parser.add_argument("--check-frames", type=int, default=8, help="frames of the parity check (0: none)")
    parser.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT engine even where it is available")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model, cfg = load_detector(args.checkpoint)
    rig = cfg.load_rig()
    image_size = tuple(args.image_size) if args.image_size else (rig.image_height, rig.image_width)
    if any(size <= 0 or size % 64 for size in image_size):
        parser.error(f"--image-size must be positive multiples of 64, got {image_size}")
    args.out.mkdir(parents=True, exist_ok=True)
    sidecar = export_graph(model, cfg, args.out, image_size, args.batch, args.lidar_bucket)
    sidecar["checkpoint"] = Path(args.checkpoint).name
    sidecar["tolerance"] = {"max_abs": TOLERANCE, "why": "float32 kernels differ between PyTorch and onnxruntime "
                            "(and the fixed-shape path batches completion differently); yaw (atan2) and velocity "
                            "from history (displacement / dt) amplify it; sparsecomp_core/deploy/tolerance.py"}
    (args.out / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    if args.check_frames > 0:
        sidecar["check"] = check_against_eager(model, args.out, args.check_frames)
        log.info("onnxruntime vs eager over %d frames: %s", args.check_frames, sidecar["check"])
    if not args.no_tensorrt:
        sidecar["tensorrt"] = tensorrt_check(args.out, max(args.check_frames, 1))
    (args.out / SIDECAR).write_text(json.dumps(sidecar, indent=1))
    return sidecar


if __name__ == "__main__":
    main()
