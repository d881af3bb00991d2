"""Step an exported graph (``python -m sparsecomp_core.export``) with onnxruntime.

``OnnxRunner(directory)`` reads the sidecar (``sparsecomp.json``) beside the
graph: input and output names, shapes, the LiDAR bucket, the model config (for
what runs outside the graph: key cameras, importance maps, id association,
post-processing). ``infer(inputs: FrameInputs, state) -> (detections, state)``
has ``model.infer``'s call shape; the state's buffers are fed back as the
graph's state inputs every frame.

    python -m sparsecomp_core.deploy.onnx_runner DIR [--frames 8]

runs the graph over the synthetic check sequence and prints the detections.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import from_dict
from ..models.head.postprocess import PostProcessConfig
from ..models.inputs import FrameInputs
from ..models.model_config import ModelConfig
from .onnx_graph import float_images
from .runner import FrameEncoder, RunnerState
from .static_state import StateLayout

SIDECAR = "sparsecomp.json"


def read_sidecar(directory: str | Path) -> dict:
    path = Path(directory) / SIDECAR
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: export a graph with python -m sparsecomp_core.export")
    return json.loads(path.read_text())


class OnnxRunner:
    """The exported graph behind ``model.infer``'s call shape (see the module docstring).
    ``providers``: onnxruntime execution providers, CPU by default."""

    def __init__(self, directory: str | Path, providers: tuple[str, ...] = ("CPUExecutionProvider",),
                 intra_op_threads: int = 0):
        import onnxruntime as ort

        self.directory = Path(directory)
        self.sidecar = read_sidecar(self.directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        self.session = ort.InferenceSession(str(self.directory / self.sidecar["graph"]), options,
                                            providers=list(providers))
        self.cfg = from_dict(ModelConfig, self.sidecar["model_config"])
        self.encoder = FrameEncoder(self.cfg, self.sidecar["lidar_bucket"])
        self.layout = StateLayout(**self.sidecar["state_layout"])
        self.postprocess_cfg = self.cfg.postprocess
        self.input_names = [item["name"] for item in self.sidecar["inputs"]]
        self.output_names = [item["name"] for item in self.sidecar["outputs"]]
        self.state_names = self.sidecar["state"]

    def initial_state(self) -> RunnerState:
        return RunnerState()

    def check_shapes(self, inputs: FrameInputs) -> None:
        expected = self.sidecar["inputs"][0]["shape"]             # images [B, V, 3, H, W]
        if list(inputs.images.shape) != expected:
            raise ValueError(f"this graph was exported for images {expected} (batch, cameras {self.sidecar['cameras']}, "
                             f"3, height, width), got {list(inputs.images.shape)}: export again for this shape")

    def step(self, inputs: FrameInputs, state: RunnerState | None = None) -> tuple[dict[str, Tensor], RunnerState]:
        """The graph's raw outputs (torch tensors, the new state's under their buffer names)
        and the state they start from."""
        self.check_shapes(inputs)
        inputs = inputs.to("cpu")
        state = self.encoder.started(state, self.layout, "cpu")
        frame = self.encoder.frame(inputs, state)
        frame["images"] = float_images(frame["images"])
        merged = {**frame, **state.buffers}
        feeds = {name: np.ascontiguousarray(merged[name].numpy()) for name in self.input_names}
        values = self.session.run(self.output_names, feeds)
        outputs = {name[len("new_"):] if name.startswith("new_") else name: torch.from_numpy(value)
                   for name, value in zip(self.output_names, values)}
        return outputs, state

    def infer(self, inputs: FrameInputs, state: RunnerState | None = None,
              postprocess_cfg: PostProcessConfig | None = None) -> tuple[list[dict], RunnerState]:
        outputs, state = self.step(inputs, state)
        return self.encoder.finish(outputs, state, inputs.to("cpu"), self.state_names,
                                   postprocess_cfg or self.postprocess_cfg)


def main(argv: list[str] | None = None) -> None:
    from .check_sequence import check_sequence

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", help="the export's output folder (graph + sparsecomp.json)")
    parser.add_argument("--frames", type=int, default=8, help="frames of the synthetic check sequence")
    args = parser.parse_args(argv)
    runner = OnnxRunner(args.directory)
    sidecar = runner.sidecar
    rig = runner.cfg.load_rig()
    state = None
    for index, inputs in enumerate(check_sequence(rig, args.frames, tuple(sidecar["image_size"]), sidecar["batch"])):
        detections, state = runner.infer(inputs, state)
        failed = [rig.camera_names[c] for c in inputs.cam_mask[0].nonzero().flatten().tolist()]
        print(f"frame {index}: failed cameras {failed or 'none'}, "
              f"{len(detections[0]['scores'])} objects, ids {detections[0]['ids'].tolist()}")


if __name__ == "__main__":
    main()
