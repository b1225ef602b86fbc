"""DVC stage `prepare`: build the prepared folder (train_boxes / train_gt / val_gt JSONs) from params.yaml.

    python stages/prepare.py --out data/prepared --metrics metrics/prepare.json [--params params.yaml]

The dataset is `data.dataset` (nuclei | shapes | coco; see mal/datasets/); counts per split and validation
warnings go to --metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mal.common.files import write_json_atomic
from mal.config import load_params, run_main
from mal.datasets.prepare import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="prepared folder (replaced)")
    parser.add_argument("--metrics", type=Path, required=True, help="counts per split (written)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    metrics = prepare(load_params(args.params).data, args.out)
    write_json_atomic(args.metrics, metrics, indent=2)
    for split in ("train", "val"):
        m = metrics[split]
        print(f"{split}: {m['images']} images, {m['boxes']} boxes ({m['crowd_boxes']} crowd, "
              f"{m['too_small_to_train']} too small to train on), warnings {m['warnings'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
