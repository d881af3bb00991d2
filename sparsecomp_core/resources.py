"""Where the package's data files are: configs, shipped models, message definitions.

The same files live in two layouts:

- a source tree (a clone, or ``pip install -e .``): ``<repo>/config``,
  ``<repo>/models``, ``<repo>/msg``, beside ``sparsecomp_core/``;
- a ROS 2 install (``colcon build``): ``<prefix>/share/sparsecomp/config`` etc.,
  while the Python packages are in ``<prefix>/lib/pythonX.Y/site-packages``.

``share_path("config", "rigs", "default7.yaml")`` looks, in this order, in

1. the source tree this module belongs to (recognised by its ``package.xml``),
2. ``$SPARSECOMP_SHARE`` (a folder laid out like the share folder),
3. ``ament_index_python``'s share folder of package ``sparsecomp`` (imported
   lazily and optional: it is pure Python and comes with every ROS 2 install;
   sparsecomp_core itself imports no ROS),
4. ``<prefix>/share/sparsecomp`` for the install prefix this module sits in
   (works without the ament index, e.g. an install that was not sourced),

and returns the first that exists. If none does, FileNotFoundError names
every place it looked.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE = "sparsecomp"
SHARE_ENV = "SPARSECOMP_SHARE"

_HERE = Path(__file__).resolve().parent


def source_root() -> Path | None:
    """The repository root when this module runs from a source tree, else None."""
    root = _HERE.parent
    return root if (root / "package.xml").is_file() and (root / "sparsecomp_core").is_dir() else None


def _ament_share() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # no ament_index_python, or sparsecomp not in AMENT_PREFIX_PATH
        return None


def _prefix_share() -> Path | None:
    # <prefix>/lib/pythonX.Y/site-packages/sparsecomp_core/resources.py
    parents = _HERE.parents
    if len(parents) >= 4 and parents[1].name.startswith("python") and parents[2].name in ("lib", "lib64"):
        return parents[3] / "share" / PACKAGE
    return None


def share_roots() -> list[tuple[str, Path | None]]:
    """(where, folder) in lookup order; folder None when that place does not apply."""
    env = os.environ.get(SHARE_ENV)
    return [("source tree", source_root()),
            (f"${SHARE_ENV}", Path(env) if env else None),
            (f"ament index share of package {PACKAGE!r}", _ament_share()),
            ("install prefix", _prefix_share())]


def share_path(*parts: str | os.PathLike) -> Path:
    """The file or folder ``parts`` (relative, e.g. ``"config", "perception.yaml"``)
    from the first place that has it (module docstring); FileNotFoundError if none."""
    relative = Path(*parts)
    tried = []
    for where, root in share_roots():
        if root is None:
            tried.append(f"{where}: not available")
            continue
        candidate = root / relative
        if candidate.exists():
            return candidate
        tried.append(f"{where}: {candidate}")
    raise FileNotFoundError(f"sparsecomp file {relative} not found; looked in\n  " + "\n  ".join(tried))


def config_path(*parts: str | os.PathLike) -> Path:
    """``share_path("config", *parts)``."""
    return share_path("config", *parts)


def named_config(kind: str, name_or_path: str | os.PathLike) -> Path:
    """``config/<kind>/<name>.yaml`` for a bare name (no suffix), else the path as given."""
    path = Path(name_or_path)
    return config_path(kind, f"{name_or_path}.yaml") if not path.suffix else path
