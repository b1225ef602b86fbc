"""Reading params.yaml (YAML 1.2) into :class:`mal.config.params.Params`, with one-line errors."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML, YAMLError


class ParamsError(ValueError):
    """Bad params: ``<file>: <dotted.key>: expected ..., got <value>`` (one line per problem)."""


def read_yaml(path: str | Path) -> Any:
    """A YAML 1.2 file as plain Python data (ruamel's safe loader, as DVC reads params.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    try:
        return YAML(typ="safe", pure=True).load(path.read_text())
    except YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def _yaml_value(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(io.StringIO(text))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[0, 1]"]`` -> nested ``{"a": {"b": 1}, "c": [0, 1]}``; values are YAML, as ``dvc exp run -S``."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"override {item!r}: expected KEY=VALUE, e.g. labeler.train.epochs=3")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _yaml_value(value)
    return out


def merge(base: Any, override: Any) -> Any:
    """Mapping ``override`` merged into mapping ``base`` recursively, in place (lists and scalars replace)."""
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def _field_path(model: type[BaseModel], loc: tuple) -> tuple[list[str], type[BaseModel] | None]:
    """The part of a pydantic error location that names params keys (union-member tags dropped), and the
    model that holds the last key."""
    keys: list[str] = []
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            keys.append(str(part))
            holder = current
            current = current.model_fields[part].annotation
            origin = getattr(current, "__origin__", None)
            if origin is dict or origin is list:  # models: dict[str, Model]; next part is the dict key / index
                current = ("container", current.__args__[-1])
        elif isinstance(current, tuple) and current[0] == "container":
            keys.append(str(part))
            current = current[1]
        else:
            break
    return keys, (holder if keys else None)


def _message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be "):]
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def format_errors(error: ValidationError, model: type[BaseModel], where: str) -> str:
    """One line per params key in error (a union's alternatives joined with ``or``)."""
    lines: dict[str, list[str]] = {}
    inputs: dict[str, Any] = {}
    for err in error.errors():
        keys, holder = _field_path(model, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            parent = _field_path(model, tuple(err["loc"])[:-1])[0]
            known = sorted(_model_at(model, parent).model_fields) if _model_at(model, parent) else []
            key = ".".join([*parent, str(err["loc"][-1])])
            lines.setdefault(key, []).append(f"unknown key (known: {', '.join(known)})")
            continue
        msg = _message(err)
        if msg.startswith("@"):  # a model validator naming a key below its model: "@a.b: message"
            sub, _, msg = msg[1:].partition(": ")
            lines.setdefault(".".join([*keys, sub]), []).append(_message({"msg": msg}))
            continue
        key = ".".join(keys) or "<top level>"
        lines.setdefault(key, []).append(msg)
        inputs.setdefault(key, err.get("input"))
    out = []
    for key, msgs in lines.items():
        got = f", got {inputs[key]!r}" if key in inputs and "got" not in msgs[0] else ""
        alternatives = [m.removeprefix("expected ") if i else m for i, m in enumerate(dict.fromkeys(msgs))]
        out.append(f"{where}: {key}: {' or '.join(alternatives)}{got}")
    return "\n".join(out)


def _model_at(model: type[BaseModel], keys: list[str]) -> type[BaseModel] | None:
    current: Any = model
    for key in keys:
        if isinstance(current, type) and issubclass(current, BaseModel) and key in current.model_fields:
            current = current.model_fields[key].annotation
            if getattr(current, "__origin__", None) in (dict, list):
                current = current.__args__[-1]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def validate(model: type[BaseModel], data: Any, where: str) -> Any:
    """``model.model_validate(data)``, a :class:`ParamsError` with one line per bad key otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParamsError(format_errors(e, model, where)) from None


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A params or profile file: a mapping at the top level (empty file: ``{}``)."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def load_params(path: str | Path = "params.yaml", overrides: list[str] | None = None,
                profile: str | Path | None = None) -> Any:
    """params.yaml, with a profile file merged over it (in memory) and ``KEY=VALUE`` overrides over that, as a
    validated :class:`~mal.config.params.Params`."""
    from mal.config.params import Params

    data = read_mapping(path)
    where = str(path)
    if profile is not None:
        from mal.common.profiles import profile_path

        prof = profile_path(profile, Path(path).parent)
        merge(data, read_mapping(prof))
        where = f"{path} + {prof}"
    if overrides:
        merge(data, parse_overrides(overrides))
    return validate(Params, data, where)


def run_main(main: Any, argv: list[str] | None = None) -> int:
    """``main(argv)`` of a stage or CLI, with bad params reported as their one-line message (exit status 2)
    instead of a traceback."""
    import sys

    try:
        return int(main(argv) or 0)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
