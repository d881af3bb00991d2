"""Typed YAML configuration: defaults, strict validation, shipped configs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from sparsecomp_core.config import ConfigError, from_dict, load_config
from sparsecomp_core.models.model_config import ModelConfig, load_model_config
from sparsecomp_core.rig import load_rig


@dataclass
class Inner:
    mode: Literal["a", "b"] = "a"
    size: tuple[int, int] = (1, 2)


@dataclass
class Outer:
    name: str
    rate: float = 1.0
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_defaults_fill_and_ints_become_floats():
    cfg = from_dict(Outer, {"name": "x", "rate": 3, "inner": {"size": [4, 5]}})
    assert cfg == Outer("x", 3.0, Inner("a", (4, 5)))
    assert isinstance(cfg.rate, float)


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "rtae": 1.0}, "unknown key(s) ['rtae']"),
    ({"name": "x", "inner": {"mode": "c"}}, "inner.mode: 'c' is not one of ['a', 'b']"),
    ({"name": "x", "inner": {"size": [1]}}, "inner.size: expected 2 items"),
    ({"name": "x", "rate": "fast"}, "rate: expected a number"),
    ({"name": "x", "rate": True}, "rate: expected a number"),
    ({"rate": 1.0}, "missing required key(s) ['name']"),
    ({"name": "x", "path": 3}, "path: 3 matches none"),
])
def test_bad_configs_raise_with_the_key_path(data, message):
    with pytest.raises(ConfigError) as error:
        from_dict(Outer, data)
    assert message in str(error.value)


def test_post_init_checks_become_config_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nimage_height: 100\nimage_width: 128\n")
    with pytest.raises(ConfigError, match="multiples of 64"):
        load_config(ModelConfig, path)


def test_shipped_model_configs_load():
    full = load_model_config("full")
    rig = full.load_rig()
    assert (rig.num_cameras, rig.image_height, rig.image_width) == (7, 512, 960)
    assert (full.backbone.depth, full.backbone.out_channels) == (34, 256)
    assert full.cascade.temporal.depth_hypotheses == (10.0, 30.0)
    tiny = load_model_config("tiny")
    assert tiny.load_rig().num_cameras == 7 and tiny.backbone.depth == 18
    assert load_rig("nuscenes6").camera_names[0] == "CAM_FRONT"


def test_a_config_derives_from_its_base_and_overrides_only_what_it_names(tmp_path):
    (tmp_path / "parent.yaml").write_text("name: parent\nbev_channels: 32\nhead: {num_queries: 64, topk_query: 32}\n")
    (tmp_path / "child.yaml").write_text("base: parent\nname: child\nhead: {topk_query: 24}\n")
    child = load_config(ModelConfig, tmp_path / "child.yaml")
    assert (child.name, child.bev_channels) == ("child", 32)
    assert (child.head.num_queries, child.head.topk_query) == (64, 24)         # merged, not replaced
    camera = load_model_config("tiny_camera")
    tiny = load_model_config("tiny")
    assert not camera.lidar.enable and camera.view_transform.use_completed_cameras
    assert camera.backbone == tiny.backbone and camera.head == tiny.head


def test_a_base_chain_that_loops_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a\nname: b\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(ModelConfig, tmp_path / "a.yaml")
