"""`python -m mal <command> ...` — user-facing entry points, looked up by name."""

from __future__ import annotations

import importlib
import sys

# command -> module with a `main(argv: list[str] | None) -> int | None`
COMMANDS = {
    "label": "mal.pseudo.cli",
    "profile": "mal.common.profiles",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m mal {" + ",".join(COMMANDS) + "} [args...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
