"""`python -m mal profile NAME`: switch params.yaml to a profile (profiles/NAME.yaml holds overrides).

A profile is a partial params file; its mappings are merged recursively over params.yaml (lists and
scalars replace). Comments in params.yaml are kept (ruamel round-trip), so `git diff params.yaml` and
`dvc params diff` show exactly what the profile changes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML


def merge(base: Any, override: Any) -> Any:
    """Recursively merge mapping ``override`` into mapping ``base`` in place; return ``base``."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def apply_profile(profile: str | Path, params_path: str | Path = "params.yaml") -> None:
    """Merge the profile file (a path, or a name under profiles/) over ``params_path``, in place."""
    profile_path = Path(profile)
    if not profile_path.suffix:
        profile_path = Path("profiles") / f"{profile}.yaml"
    if not profile_path.is_file():
        names = sorted(p.stem for p in Path("profiles").glob("*.yaml"))
        raise FileNotFoundError(f"{profile_path}: profile not found (available: {', '.join(names) or 'none'})")
    override = yaml.safe_load(profile_path.read_text()) or {}
    if not isinstance(override, dict):
        raise ValueError(f"{profile_path}: a profile must be a mapping of params to override")
    rt = YAML()  # round-trip: keeps comments and key order
    rt.width = 4096
    params_path = Path(params_path)
    params = rt.load(params_path.read_text())
    merge(params, override)
    tmp = params_path.with_name(f".{params_path.name}.tmp")
    with tmp.open("w") as f:
        rt.dump(params, f)
    tmp.replace(params_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mal profile", description=__doc__)
    parser.add_argument("profile", help="profile name (profiles/NAME.yaml) or path to an overrides file")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    apply_profile(args.profile, args.params)
    print(f"{args.params}: applied profile {args.profile}")
    return 0
