"""DVC stage `weights`: build the pretrained encoder files listed in params `weights:` (offline).

    python stages/weights.py [--params params.yaml]

Each name in `weights.encoders` (a key of `mal.weights.sources.SOURCES`) becomes
`<weights.out_dir>/<name>.safetensors` (timm names) + `<name>.json` (source, sha256s, pretrained data config).
The source file is read from its pinned installed package after a sha256 check; an up-to-date pair is kept.
"""

from __future__ import annotations

import argparse
import sys

from mal.common.params import load_params
from mal.weights.build import build_encoder
from mal.weights.sources import WeightsSourceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    section = load_params(args.params).get("weights") or {}
    if "out_dir" not in section or not section.get("encoders"):
        print(f"error: {args.params}: needs weights.out_dir and a non-empty weights.encoders", file=sys.stderr)
        return 2
    for name in section["encoders"]:
        try:
            path, built = build_encoder(name, section["out_dir"])
        except (WeightsSourceError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({'built' if built else 'up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
