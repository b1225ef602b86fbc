"""Check a params file before `dvc repro` runs anything (`make repro` calls it): one line per problem naming the
file and the dotted key, exit status 1; nothing printed and status 0 when the file is fine.

    python scripts/check_params.py [params.yaml]

Every stage reads its params through the same loader (``mal.config.load_params``) and stops with the same
line(s), before any work, so a bare `dvc repro` fails at its first stage with that message too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.config import ParamsError, load_params  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        load_params(args[0] if args else "params.yaml")
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
