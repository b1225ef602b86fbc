"""DVC stage `paper_table`: the paper table (labelers x detectors x seeds, GT-mask baseline per detector).

    python stages/paper_table.py --detector-metrics metrics/detector --predictions data/predictions \
        --val-json data/prepared/val_gt.json --prepare-metrics metrics/prepare.json \
        --mask-quality metrics/mask_quality --rows reports/paper_table.json --csv reports/paper_table.csv \
        --comparisons reports/comparisons.csv --markdown reports/paper_table.md --plot reports/retention.png \
        --metrics metrics/paper_table.json [--params params.yaml]

Params ``table`` (labelers, detectors, seeds, bootstrap) and ``evaluate.max_dets``. Reads the cells
``<masks>__<detector>__s<seed>.json`` of --detector-metrics and --predictions. Writes the rows once (--rows
JSON, the same rows as --csv, the labeler pairs as --comparisons), their Markdown rendering (--markdown), the
retention plot (--plot) and the flat numbers for `dvc metrics diff` (--metrics). docs/table.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mal.common.files import write_bytes_atomic, write_json_atomic, write_text_atomic
from mal.config import load_params, run_main
from mal.report.render import markdown
from mal.report.table import COLUMNS, COMPARISON_COLUMNS, TableInputs, build_table, retention_png, summary_metrics, to_csv


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector-metrics", type=Path, required=True, help="evaluate's flat metrics, <cell>.json")
    ap.add_argument("--predictions", type=Path, required=True, help="evaluate's val predictions, <cell>.json")
    ap.add_argument("--val-json", type=Path, required=True, help="val GT (COCO JSON with masks)")
    ap.add_argument("--prepare-metrics", type=Path, required=True, help="prepare's metrics JSON (the title)")
    ap.add_argument("--mask-quality", type=Path, required=True, help="mask_quality's metrics, <labeler>.json")
    ap.add_argument("--rows", type=Path, required=True, help="the table's rows, meta, pairs: JSON (written)")
    ap.add_argument("--csv", type=Path, required=True, help="the rows as CSV (written)")
    ap.add_argument("--comparisons", type=Path, required=True, help="the labeler pairs as CSV (written)")
    ap.add_argument("--markdown", type=Path, required=True, help="the table rendered as Markdown (written)")
    ap.add_argument("--plot", type=Path, required=True, help="retention per cell, PNG (written)")
    ap.add_argument("--metrics", type=Path, required=True, help="flat metrics JSON for dvc (written)")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    inputs = TableInputs(args.detector_metrics, args.predictions, args.val_json, args.prepare_metrics,
                         args.mask_quality)
    result, timings = build_table(params.table, inputs, params.evaluate.max_dets)
    write_json_atomic(args.rows, result.to_json(), indent=2)  # the rows: every rendering reads them
    write_text_atomic(args.csv, to_csv(result.rows, COLUMNS))
    write_text_atomic(args.comparisons, to_csv(result.comparisons, COMPARISON_COLUMNS))
    md = markdown(result)
    write_text_atomic(args.markdown, md)
    write_bytes_atomic(args.plot, retention_png(result.rows))
    write_json_atomic(args.metrics, summary_metrics(result), indent=2)
    print(md)
    print(f"paper_table: {len(result.rows)} rows, {len(result.comparisons)} pairs in {timings['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
