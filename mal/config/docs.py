"""docs/config.md, rendered from the params models (keys, types, defaults, descriptions: written once, there).

    python -m mal.config.docs            # rewrite docs/config.md
    python -m mal.config.docs --check    # exit 1 when docs/config.md is not what the models say (a test runs it)
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"

HEADER = """# Params reference

Every key of params.yaml: its type, default and meaning. Generated from the typed config (`mal/config/`) by
`python -m mal.config.docs`; a test fails when this page and the code differ. Bad params stop every stage, the CLI and
`make repro` before any work with one line per problem, e.g.

    error: params.yaml: pseudo_label.batch_size: expected a valid integer, got 'thirty-two'

Why pydantic (not OmegaConf structured configs): range checks (`ge`, `gt`), literal choices and unions such as
`"auto" | int`, strict types (YAML's `"32"` is not a number), and errors that name the dotted key and the value given.
The file is read as YAML 1.2 (ruamel, as DVC reads it), so `5e-6` is a number. `dvc exp run -S key=value` and
`load_params(path, ["key=value"])` override keys; `python -m mal profile NAME` merges profiles/NAME.yaml over
params.yaml and validates the result before writing it. The `run` section says where and how fast stages run:
no stage lists it as a DVC param, so changing it re-runs nothing. Paths are not params: dvc.yaml passes every
artifact path to its stage as an argument.
"""


def _type_name(annotation: Any) -> str:
    text = str(annotation) if typing.get_origin(annotation) else getattr(annotation, "__name__", str(annotation))
    return text.replace("typing.", "").replace("NoneType", "None").replace("mal.config.", "")


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else f"`{value!r}`"
    return f"`{field.default!r}`"


def _rows(model: type[BaseModel], prefix: str, out: list[str], subsections: list[tuple[str, type[BaseModel]]]) -> None:
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            subsections.append((key, ann))
            continue
        args = typing.get_args(ann)
        if typing.get_origin(ann) is dict and args and isinstance(args[-1], type) and issubclass(args[-1], BaseModel):
            subsections.append((f"{key}.<name>", args[-1]))
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{key}` | {_type_name(ann).replace('|', '&#124;')} | {_default(field)} | {desc} |")


def render() -> str:
    """The whole page."""
    from mal.config.params import Params

    parts = [HEADER]
    todo: list[tuple[str, type[BaseModel]]] = [("", Params)]
    while todo:
        prefix, model = todo.pop(0)
        rows: list[str] = []
        found: list[tuple[str, type[BaseModel]]] = []
        _rows(model, prefix, rows, found)
        todo[:0] = found
        if rows:
            title = f"`{prefix}`" if prefix else "top level"
            doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            parts.append(f"## {title}\n\n{doc + chr(10) + chr(10) if doc and model.__module__ != 'pydantic.main' else ''}"
                         "| key | type | default | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/config.md differs (writes nothing)")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC}: out of date; run: python -m mal.config.docs", file=sys.stderr)
            return 1
        return 0
    from mal.common.files import write_text_atomic

    write_text_atomic(DOC, text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
