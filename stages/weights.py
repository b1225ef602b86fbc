"""DVC stage `weights`: build the pretrained encoder files listed in params `weights:` (offline).

    python stages/weights.py --out models/weights [--params params.yaml]

Each name in `weights.encoders` (a key of `mal.weights.sources.SOURCES`) becomes
`<out>/<name>.safetensors` (timm names) + `<name>.json` (source, sha256s, pretrained data config).
The source file is read from its pinned installed package after a sha256 check; an up-to-date pair is kept.
"""

from __future__ import annotations

import argparse
import sys

from mal.config import load_params, run_main
from mal.weights.build import build_encoder
from mal.weights.sources import WeightsSourceError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder of the encoder files (<name>.safetensors + .json)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in load_params(args.params).weights.encoders:
        try:
            path, built = build_encoder(name, args.out)
        except (WeightsSourceError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({'built' if built else 'up to date'})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
