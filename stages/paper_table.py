"""DVC stage `paper_table`: the paper table (labelers x detectors, GT-mask baseline per detector).

    python stages/paper_table.py [--params params.yaml]

Writes `<table.out_dir>/paper_table.{md,csv}`, `retention.png` and `<table.metrics_dir>/paper_table.json` from
the metrics of `evaluate` and `mask_quality` (see mal/report.py).
"""

from __future__ import annotations

import argparse
import sys

from mal.common.params import load_params
from mal.report import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    print(write_report(load_params(args.params)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
