"""`python -m mal profile NAME`: switch params.yaml to a profile (profiles/NAME.yaml holds overrides).

A profile is a partial params file; its mappings are merged recursively over params.yaml (lists and
scalars replace). Comments in params.yaml are kept (ruamel round-trip), so `git diff params.yaml` and
`dvc params diff` show exactly what the profile changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from mal.common.files import atomic_path
from mal.config.load import ParamsError, merge, read_mapping, validate


def profile_path(profile: str | Path, root: str | Path | None = None) -> Path:
    """A profile name (``paper`` -> ``profiles/paper.yaml``) or a path; relative ones are under ``root``
    (default: the working directory)."""
    path = Path(profile)
    if not path.suffix:
        path = Path("profiles") / f"{profile}.yaml"
    return path if root is None or path.is_absolute() else Path(root) / path


def apply_profile(
    profile: str | Path, params_path: str | Path = "params.yaml", root: str | Path | None = None
) -> None:
    """Merge the profile file (see :func:`profile_path`) over ``params_path``, in place."""
    path = profile_path(profile, root)
    if not path.is_file():
        names = sorted(p.stem for p in (Path(root or ".") / "profiles").glob("*.yaml"))
        raise FileNotFoundError(f"{path}: profile not found (available: {', '.join(names) or 'none'})")
    override = read_mapping(path)
    rt = YAML()  # round-trip: keeps comments and key order
    rt.width = 4096
    params_path = Path(params_path)
    params = rt.load(params_path.read_text())
    merge(params, override)
    from mal.config.params import Params

    validate(Params, read_mapping_of(params), f"{params_path} + {path}")  # a bad profile key: nothing written
    with atomic_path(params_path) as tmp, tmp.open("w") as f:
        rt.dump(params, f)


def read_mapping_of(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists (what validation reads)."""
    if isinstance(node, dict):
        return {str(k): read_mapping_of(v) for k, v in node.items()}
    if isinstance(node, list):
        return [read_mapping_of(v) for v in node]
    for plain in (bool, int, float, str):  # ruamel's ScalarFloat, ScalarInt, ... -> the builtin type
        if isinstance(node, plain):
            return plain(node)
    return node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mal profile", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("profile", help="profile name (profiles/NAME.yaml) or path to an overrides file")
    parser.add_argument("--params", default="params.yaml", help="params file the profile is merged into")
    args = parser.parse_args(argv)
    try:
        apply_profile(args.profile, args.params)
    except ParamsError as e:
        print(f"error: {e}")
        return 2
    print(f"{args.params}: applied profile {args.profile}")
    return 0
