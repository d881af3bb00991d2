"""The "Train on nuScenes" configs of the README: they load, point at the right version and
split, train the nuScenes rig, and one step of the mini one runs on a fake v1.0-mini."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from sparsecomp_core.config import load_config
from sparsecomp_core.data.splits import split_scene_names
from sparsecomp_core.models.model_config import load_model_config
from sparsecomp_core.models.detector import load_detector
from sparsecomp_core.rig import load_rig
from sparsecomp_core.training.train import TrainConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from test_splits import MINI, fake_mini  # noqa: E402

CONFIGS = {"nuscenes_mini_stage1": ("v1.0-mini", "mini_train", "stage1", "tiny_nuscenes"),
           "nuscenes_mini_stage2": ("v1.0-mini", "mini_train", "stage2", "tiny_nuscenes"),
           "nuscenes_trainval_stage1": ("v1.0-trainval", "train", "stage1", "full_nuscenes"),
           "nuscenes_trainval_stage2": ("v1.0-trainval", "train", "stage2", "full_nuscenes")}
SCENES_IN_SPLIT = {"mini_train": 8, "train": 700}


def config_path(name: str) -> Path:
    return REPO_ROOT / "config" / "train" / f"{name}.yaml"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_nuscenes_training_configs_point_at_nuscenes(name):
    version, split, stage, model = CONFIGS[name]
    cfg = load_config(TrainConfig, config_path(name))
    assert (cfg.data_root, cfg.data_version, cfg.data_split, cfg.stage, cfg.model) == \
        ("data/nuscenes", version, split, stage, model)
    assert len(split_scene_names(cfg.data_root, cfg.data_version, cfg.data_split)) == SCENES_IN_SPLIT[split]
    model_cfg = load_model_config(cfg.model)
    rig = model_cfg.load_rig()
    assert rig.camera_names == load_rig("nuscenes6").camera_names
    assert rig.image_height % 64 == 0 and rig.image_width % 64 == 0
    if stage == "stage2":                      # continues from its own stage 1
        first = load_config(TrainConfig, config_path(name.replace("stage2", "stage1")))
        assert cfg.init_from == f"{first.out_dir}/model.pt" and cfg.out_dir != first.out_dir


def test_one_step_of_the_mini_config_trains_on_a_fake_mini(tmp_path):
    root = fake_mini(tmp_path / "data")
    cfg = load_config(TrainConfig, config_path("nuscenes_mini_stage1"))
    cfg.data_root, cfg.steps, cfg.out_dir, cfg.batch_size = str(root), 1, str(tmp_path / "out"), 1
    model_path = train(cfg)
    model, model_cfg = load_detector(model_path, expected_cameras=load_rig("nuscenes6").camera_names)
    assert model_cfg.name == "tiny_nuscenes"
    record = json.loads((tmp_path / "out" / "train_log.jsonl").read_text().splitlines()[0])
    assert math.isfinite(record["loss"]) and record["loss"] > 0
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["data_version"] == MINI
