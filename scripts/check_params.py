"""Check a params file before `dvc repro` runs anything (`make repro` calls it): one line naming the file and
the dotted key of the first problem, exit status 1; nothing printed and status 0 when the file is fine.

    python scripts/check_params.py [params.yaml]

The stages run the same checks when they read their params (``mal.common.params.load_params``), so a bare
`dvc repro` stops at its first stage too, with a traceback ending in the same line.
"""

from __future__ import annotations

import sys

from mal.common.params import load_params


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        load_params(args[0] if args else "params.yaml")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
