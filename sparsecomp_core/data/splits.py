"""Split names -> scene names: the one rule training and evaluation share.

- An official nuScenes version knows the devkit's predefined splits (``nuscenes_splits``,
  vendored from nuscenes-devkit): ``v1.0-trainval``: train, val, train_detect, train_track;
  ``v1.0-test``: test; ``v1.0-mini``: mini_train, mini_val. A predefined name that belongs
  to another version is an error, as in the devkit (``create_splits_logs``).
- Any other name, and every name of any other version (generated sets, your own data), is a
  custom split of ``<root>/<version>/splits.json`` (the devkit's mechanism; generated sets
  have ``all``). So ``val`` on a generated set is looked up there, not taken from nuScenes.
- No split: every scene of the version.
"""
from __future__ import annotations

from pathlib import Path

from .. import jsonio
from .nuscenes_splits import OFFICIAL_SPLITS

OFFICIAL_VERSION_SPLITS = {"v1.0-trainval": ("train", "val", "train_detect", "train_track"),
                           "v1.0-test": ("test",), "v1.0-mini": ("mini_train", "mini_val")}


def split_scene_names(root: str | Path, version: str, split: str) -> list[str]:
    """Scene names of ``split`` for the data set ``<root>/<version>`` (see the module's rule).
    Raises ValueError for a predefined split of another official version or a name that
    splits.json lacks, FileNotFoundError when a custom split is asked for without splits.json."""
    official = OFFICIAL_VERSION_SPLITS.get(version)
    if official is not None and split in OFFICIAL_SPLITS:
        if split not in official:
            raise ValueError(f"split {split!r} is not a split of {version} (its nuScenes splits: {list(official)})")
        return list(OFFICIAL_SPLITS[split])
    path = Path(root) / version / "splits.json"
    hint = f"; the nuScenes splits of {version} are {list(official)}" if official else ""
    if not path.is_file():
        raise FileNotFoundError(f"split {split!r} requested, but {path} does not exist{hint}")
    splits = jsonio.loads_strict(path.read_text())
    if split not in splits:
        raise ValueError(f"split {split!r} is not in {path} (it has {sorted(splits)}){hint}")
    return list(splits[split])


def select_scenes(scene_names: list[str], root: str | Path, version: str, split: str | None) -> list[str]:
    """The names in ``scene_names`` (a data set's scenes) that belong to ``split``, in their
    order (all of them for None). A split none of whose scenes the data set has is an error
    (wrong version or data root); a split only partly present keeps what is there, as the
    devkit's evaluation does."""
    if split is None:
        return list(scene_names)
    wanted = set(split_scene_names(root, version, split))
    kept = [name for name in scene_names if name in wanted]
    if not kept:
        raise ValueError(f"none of the {len(wanted)} scenes of split {split!r} is in {Path(root) / version} "
                         f"(it has {len(scene_names)} scenes, e.g. {sorted(scene_names)[:3]})")
    return kept
