"""`python -m mal <command> ...` — user-facing entry points, looked up by name."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys

# command -> module with a `main(argv: list[str] | None) -> int | None`
COMMANDS = {
    "label": "mal.pseudo.cli",
    "export": "mal.pseudo.export",
    "review": "mal.review.cli",
    "profile": "mal.common.profiles",
    "doctor": "mal.doctor",
}


def summary(module: str) -> str:
    """First line of a command module's docstring, read from its source: `--help` imports no torch."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    line = doc.strip().splitlines()[0] if doc.strip() else ""
    # docstrings open with "`python -m mal NAME ...`: what it does"; keep the what
    return line.split("`: ", 1)[-1].strip()


def usage() -> str:
    from mal import __version__

    width = max(map(len, COMMANDS))
    lines = [
        f"usage: python -m mal {{{','.join(COMMANDS)}}} [args...]   (mal {__version__})",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary(mod)}" for name, mod in COMMANDS.items()),
        "",
        "options:",
        "  -h, --help  show this help and exit",
        "  --version   print the version and exit",
        "",
        "`python -m mal COMMAND --help` shows the command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        from mal import __version__  # mal/__init__.py imports nothing heavy

        print(f"mal {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        asked = bool(argv) and argv[0] in ("-h", "--help")
        if argv and not asked:
            print(f"error: unknown command {argv[0]!r}\n", file=sys.stderr)
        print(usage(), file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
