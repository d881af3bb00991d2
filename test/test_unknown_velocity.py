"""An annotation whose velocity cannot be estimated (no previous or next annotation, as
nuscenes-devkit rules) reaches the training targets and the evaluation as NaN (unknown),
never as 0 m/s. (The loss and AVE skipping it: test_velocity_loss_unknown.py.)"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsecomp_core.data.dataset import SequenceDataset, collate
from sparsecomp_core.data.nuscenes_layout import NuScenesLayout
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.evaluation.evaluate import main as evaluate_main
from sparsecomp_core.rig import load_rig

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from eval_fixtures import micro_checkpoint  # noqa: E402

VERSION = "v1.0-unknown-velocity"
SMALL = dict(scenes=1, frames=3, image_size=(64, 128), lidar_beams=16, lidar_azimuths=256, progress=False)


def cut_from_neighbours(root: Path, category: str) -> tuple[str, str]:
    """Unlink the middle-frame annotation of one object of ``category`` from its previous and
    next annotations (as an object annotated in a single sample). Returns (sample, instance)."""
    path = root / VERSION / "sample_annotation.json"
    rows = json.loads(path.read_text())
    by_token = {row["token"]: row for row in rows}
    instances = {row["token"]: row for row in json.loads((root / VERSION / "instance.json").read_text())}
    categories = {row["token"]: row["name"] for row in json.loads((root / VERSION / "category.json").read_text())}
    chosen = next(row for row in rows if row["prev"] and row["next"]
                  and categories[instances[row["instance_token"]]["category_token"]] == category)
    by_token[chosen["prev"]]["next"] = by_token[chosen["next"]]["prev"] = ""
    chosen["prev"] = chosen["next"] = ""
    path.write_text(json.dumps(rows))
    return chosen["sample_token"], chosen["instance_token"]


@pytest.fixture(scope="module")
def cut(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("unknown_velocity")
    generate(root, VERSION, "default7", seed=7, **SMALL)
    sample, car = cut_from_neighbours(root, "vehicle.car")
    _, barrier = cut_from_neighbours(root, "movable_object.barrier")
    return {"root": root, "sample": sample, "car": car, "barrier": barrier}


def test_unknown_velocity_reaches_the_targets_as_nan(cut):
    dataset = SequenceDataset(str(cut["root"]), VERSION, load_rig("default7"), (64, 128))
    index = dataset.scenes[0][1].index(cut["sample"])
    _, targets = collate([dataset.load(0, index)], (64, 128), with_teacher=True)
    boxes, tokens = targets[0]["boxes"].numpy(), targets[0]["instance_tokens"]
    car = tokens.index(cut["car"])
    assert np.isnan(boxes[car, 7:10]).all() and np.isfinite(boxes[car, :7]).all()
    others = [i for i, t in enumerate(tokens) if t != cut["car"]]
    assert np.isfinite(boxes[others]).all()                                 # only the unknown one is NaN
    assert any(np.hypot(*boxes[i, 7:9]) > 1.0 for i in others)              # known velocities are kept
    if cut["barrier"] in tokens:
        assert (boxes[tokens.index(cut["barrier"]), 7:10] == 0).all()       # static classes: 0 by definition
    layout = NuScenesLayout(cut["root"], VERSION)
    assert np.isnan(layout.annotation_velocity(next(a for a in layout.annotations_by_sample[cut["sample"]]
                                                    if a["instance_token"] == cut["car"]))).all()


def test_evaluation_runs_on_unknown_velocities(cut, tmp_path):
    checkpoint = micro_checkpoint(tmp_path / "micro.pt", seed=1)
    common = ["--checkpoint", str(checkpoint), "--data-root", str(cut["root"]), "--version", VERSION,
              "--device", "cpu"]
    ours = evaluate_main(common)
    nuscenes = evaluate_main([*common, "--protocol", "nuscenes"])
    assert ours["frames"] == SMALL["frames"] and nuscenes["samples"] == SMALL["frames"]
    for report in (ours, nuscenes):
        assert math.isfinite(report["NDS"]) and all(math.isfinite(report[m]) for m in ("mAP", "mATE", "mAVE"))
