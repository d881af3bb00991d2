"""Split names, one rule for training and evaluation: the official nuScenes splits on the
official versions (vendored from nuscenes-devkit, checked against it), splits.json otherwise."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sparsecomp_core.data.dataset import SequenceDataset
from sparsecomp_core.data.nuscenes_layout import NuScenesLayout
from sparsecomp_core.data.nuscenes_splits import OFFICIAL_SPLITS
from sparsecomp_core.data.splits import select_scenes, split_scene_names
from sparsecomp_core.data.synthetic.generate import generate
from sparsecomp_core.evaluation import nuscenes_protocol
from sparsecomp_core.evaluation.evaluate import main as evaluate_main
from sparsecomp_core.rig import load_rig

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
sys.path.insert(0, str(Path(__file__).parent))
from eval_fixtures import micro_checkpoint  # noqa: E402
from test_metrics_devkit import devkit_python  # noqa: E402,F401  (fixture)
from test_nuscenes_protocol import assert_equal_to_devkit  # noqa: E402

MINI = "v1.0-mini"
# Generated scenes renamed as three of nuScenes mini's: mini_val is the first two.
MINI_NAMES = ["scene-0103", "scene-0916", "scene-0061"]
SMALL = dict(frames=2, image_size=(64, 128), lidar_beams=16, lidar_azimuths=256, progress=False)


def fake_mini(root: Path) -> Path:
    """A generated nuScenes-rig set in a folder named v1.0-mini whose scenes carry nuScenes mini
    scene names, without splits.json (real nuScenes has none)."""
    generate(root, MINI, "nuscenes6", seed=11, scenes=len(MINI_NAMES), **SMALL)
    path = root / MINI / "scene.json"
    scenes = json.loads(path.read_text())
    for scene, name in zip(scenes, MINI_NAMES):
        scene["name"] = name
    path.write_text(json.dumps(scenes))
    (root / MINI / "splits.json").unlink()
    return root


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    return fake_mini(tmp_path_factory.mktemp("mini"))


def test_vendored_splits_are_the_devkits(devkit_python):
    done = subprocess.run([str(devkit_python), "-c", "import json; from nuscenes.utils.splits import "
                           "create_splits_scenes; print(json.dumps(create_splits_scenes()))"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert OFFICIAL_SPLITS == json.loads(done.stdout)


def test_official_split_names_on_an_official_version(mini):
    assert split_scene_names(mini, MINI, "mini_val") == ["scene-0103", "scene-0916"]
    assert len(split_scene_names(mini, "v1.0-trainval", "val")) == 150        # no data needed for the names
    rig = load_rig("nuscenes6")
    assert [n for n, _ in SequenceDataset(str(mini), MINI, rig, (64, 128), split="mini_val").scenes] == \
        ["scene-0103", "scene-0916"]
    assert [n for n, _ in SequenceDataset(str(mini), MINI, rig, (64, 128), split="mini_train").scenes] == ["scene-0061"]
    assert len(SequenceDataset(str(mini), MINI, rig, (64, 128)).scenes) == 3
    with pytest.raises(ValueError, match="'val' is not a split of v1.0-mini"):
        split_scene_names(mini, MINI, "val")
    with pytest.raises(FileNotFoundError, match="nuScenes splits of v1.0-mini are"):
        split_scene_names(mini, MINI, "my_scenes")
    with pytest.raises(ValueError, match="none of the 150 scenes of split 'test'"):
        select_scenes(MINI_NAMES, mini, "v1.0-test", "test")


def test_custom_splits_elsewhere(tmp_path):
    generate(tmp_path, "v1.0-custom", "default7", seed=11, scenes=2, **{**SMALL, "frames": 1})
    names = split_scene_names(tmp_path, "v1.0-custom", "all")
    assert len(names) == 2 and names == [s for s, _ in SequenceDataset(str(tmp_path), "v1.0-custom",
                                                                      load_rig("default7"), (64, 128)).scenes]
    splits = {"all": names, "first": names[:1], "val": names[1:]}
    (tmp_path / "v1.0-custom" / "splits.json").write_text(json.dumps(splits))
    dataset = SequenceDataset(str(tmp_path), "v1.0-custom", load_rig("default7"), (64, 128), split="val")
    assert [n for n, _ in dataset.scenes] == names[1:]            # a custom 'val', not nuScenes' 150 scenes
    with pytest.raises(ValueError, match="split 'mini_val' is not in"):
        split_scene_names(tmp_path, "v1.0-custom", "mini_val")


def test_evaluation_split_is_the_devkits_eval_set(devkit_python, mini, tmp_path):
    """--split mini_val selects what nuscenes-devkit's eval_set 'mini_val' selects (the devkit
    insists that a submission holds exactly the split's samples), for a model run and for a
    submission file, with the devkit's DetectionEval figures."""
    checkpoint = micro_checkpoint(tmp_path / "micro.pt", seed=1, rig="nuscenes6")
    common = ["--data-root", str(mini), "--version", MINI, "--split", "mini_val"]
    run = evaluate_main(["--checkpoint", str(checkpoint), "--device", "cpu", "--protocol", "nuscenes",
                         "--results-out", str(tmp_path / "submission.json"), *common])
    assert run["samples"] == 2 * SMALL["frames"]
    content = json.loads((tmp_path / "submission.json").read_text())
    layout = NuScenesLayout(mini, MINI)
    assert set(content["results"]) == set(nuscenes_protocol.split_samples(layout, ["scene-0103", "scene-0916"]))
    from_file = evaluate_main(["--results", str(tmp_path / "submission.json"), *common])
    assert from_file["samples"] == 2 * SMALL["frames"] and from_file["NDS"] == pytest.approx(run["NDS"], abs=1e-12)
    request = {"dataroot": str(mini), "version": MINI, "eval_set": "mini_val", "output_dir": str(tmp_path / "dk"),
               "submissions": [str(tmp_path / "submission.json")]}
    done = subprocess.run([str(devkit_python), str(Path(__file__).parent / "helpers" / "devkit_eval.py")],
                          input=json.dumps(request), capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    devkit = json.loads(done.stdout.strip().splitlines()[-1])["metrics"][0]
    assert_equal_to_devkit(from_file, devkit)
    assert_equal_to_devkit(run, devkit)
