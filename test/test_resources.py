"""Package files (configs, models, msg definitions) are found in the source tree,
else through $SPARSECOMP_SHARE / the ament index / the install prefix."""
from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from sparsecomp_core import resources
from sparsecomp_core.config import ConfigError
from sparsecomp_core.rig import load_rig
from sparsecomp_ros import resources as ros_resources


def test_source_tree_files_come_first():
    assert resources.source_root() == REPO_ROOT
    assert resources.config_path("rigs", "default7.yaml") == REPO_ROOT / "config" / "rigs" / "default7.yaml"
    assert ros_resources.default_checkpoint() == REPO_ROOT / "models" / "tiny_default.pt"
    assert ros_resources.msg_dir() == REPO_ROOT / "msg"
    assert ros_resources.perception_params() == REPO_ROOT / "config" / "perception.yaml"
    assert ros_resources.fastdds_profile() == REPO_ROOT / "config" / "fastdds_large_data.xml"


def test_without_a_source_tree_the_share_folder_is_used(tmp_path, monkeypatch):
    share = tmp_path / "share" / "sparsecomp"
    (share / "config" / "rigs").mkdir(parents=True)
    (share / "config" / "rigs" / "tworig.yaml").write_text(
        "name: tworig\nimage_height: 64\nimage_width: 128\n"
        "cameras:\n  - {name: CAM_A, yaw_deg: 0, hfov_deg: 90}\n  - {name: CAM_B, yaw_deg: 180, hfov_deg: 90}\n")
    monkeypatch.setattr(resources, "source_root", lambda: None)
    monkeypatch.setattr(resources, "_ament_share", lambda: None)
    monkeypatch.setenv(resources.SHARE_ENV, str(share))
    assert load_rig("tworig").camera_names == ["CAM_A", "CAM_B"]
    with pytest.raises(FileNotFoundError) as missing:
        resources.share_path("models", "nothing.pt")
    message = str(missing.value)
    assert "source tree: not available" in message and str(share / "models" / "nothing.pt") in message
    with pytest.raises(ConfigError, match="no rig named 'nosuchrig'"):
        load_rig("nosuchrig")
