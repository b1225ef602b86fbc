"""Reading params.yaml (the single home of every tunable)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

# YAML 1.1 (PyYAML) reads an exponent float without a dot, e.g. 5e-6, as the *string* "5e-6"; a
# stage would then fail far away with a TypeError. Such strings are rejected where the file is read.
_DOTLESS_EXPONENT = re.compile(r"^[+-]?\d+[eE][+-]?\d+$")


def _string_numbers(node: Any, where: str = "") -> list[tuple[str, str]]:
    """``(dotted key, value)`` for every string in ``node`` that YAML 1.1 failed to read as a number."""
    if isinstance(node, dict):
        return [hit for k, v in node.items() for hit in _string_numbers(v, f"{where}.{k}" if where else str(k))]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _string_numbers(v, f"{where}[{i}]")]
    if isinstance(node, str) and _DOTLESS_EXPONENT.match(node.strip()):
        return [(where, node)]
    return []


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """Return params.yaml as a dict (``yaml.safe_load``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the key for a
    non-mapping top level or a number written so that YAML reads it as a string (``5e-6``: write ``5.0e-6``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found (run from the repository root)")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(params).__name__}")
    bad = _string_numbers(params)
    if bad:
        key, value = bad[0]
        fixed = re.sub(r"^([+-]?\d+)([eE])", r"\1.0\2", value.strip())
        raise ValueError(
            f"{path}: {key}: {value!r} is read as a string, not a number (YAML needs a dot in an exponent "
            f"float: write {fixed}); {len(bad)} such value(s) in all: {', '.join(k for k, _ in bad)}"
        )
    if "table" in params:
        check_table_seeds(params["table"], path)
    return params


def check_table_seeds(table: Any, where: str | Path = "params") -> list[int]:
    """``table.seeds``: a non-empty list of distinct integers (one detector per seed and cell); else a
    ``ValueError`` naming the key. Checked when params are read, so every stage (the first to run included)
    stops before any training."""
    seeds = table.get("seeds") if isinstance(table, dict) else None
    key = f"{where}: table.seeds"
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{key}: expected a non-empty list of integers (e.g. [0, 1]), got {seeds!r}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ValueError(f"{key}: every seed must be an integer, got {bad[0]!r} in {seeds!r}")
    if any(s < 0 for s in seeds):
        raise ValueError(f"{key}: seeds must be >= 0, got {seeds!r}")
    dupes = sorted({s for s in seeds if seeds.count(s) > 1})
    if dupes:
        raise ValueError(f"{key}: duplicate seeds {dupes} in {seeds!r} (each seed trains one detector per cell)")
    return seeds


def check_keys(cfg: dict[str, Any] | None, known: Iterable[str], what: str) -> None:
    """A key of ``cfg`` not in ``known`` is an error naming ``what`` (a renamed or misspelt param would
    otherwise be ignored silently, e.g. a profile's key that no longer matches params.yaml)."""
    known = set(known)
    unknown = sorted(set(cfg or {}) - known)
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown} (known: {sorted(known)})")


def with_defaults(cfg: dict[str, Any] | None, defaults: dict[str, Any], what: str) -> dict[str, Any]:
    """``{**defaults, **cfg}``; a key of ``cfg`` that ``defaults`` lacks is an error naming ``what``."""
    check_keys(cfg, defaults, what)
    return {**defaults, **dict(cfg or {})}
