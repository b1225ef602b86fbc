"""DVC stage `prepare`: build `data.out_dir` (train_boxes / train_gt / val_gt JSONs) from params.yaml.

    python stages/prepare.py [--params params.yaml]

The dataset is `data.dataset` (nuclei | shapes | coco; see mal/datasets/); counts per split and validation
warnings go to `data.metrics`.
"""

from __future__ import annotations

import argparse
import sys

from mal.common.params import check_keys, load_params
from mal.datasets.prepare import BUILDERS, prepare

DATA_KEYS = ("dataset", "out_dir", "metrics", "min_train_box_area", "min_train_box_side", *BUILDERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    check_keys(params["data"], DATA_KEYS, "params: data")
    metrics = prepare(params, params["data"]["metrics"])
    for split in ("train", "val"):
        m = metrics[split]
        print(f"{split}: {m['images']} images, {m['boxes']} boxes ({m['crowd_boxes']} crowd, "
              f"{m['too_small_to_train']} too small to train on), warnings {m['warnings'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
