"""DVC stage `evaluate`: box + mask AP of a trained detector on the val GT, with detectron2's evaluators.

    python stages/evaluate.py --model models/detector/gt__mask_rcnn_MNv2_demo__s0 --val-gt data/prepared/val_gt.json \
        --predictions data/predictions/gt__mask_rcnn_MNv2_demo__s0.json \
        --metrics metrics/detector/gt__mask_rcnn_MNv2_demo__s0.json --work-dir .work/evaluate/gt__mask_rcnn_MNv2_demo__s0

Reads --model (model_final.pth, config.yaml); runs it on every val image (`inference_on_dataset`) and scores it with
detectron2's COCOEvaluator (official pycocotools) or, for an LVIS val set (`evaluate.evaluator: auto` detects it;
`coco` | `lvis` force one), its LVISEvaluator. Writes --predictions (COCO results: the paper_table stage re-scores
them on bootstrap resamples) and --metrics: flat numbers in percent — mask_AP, mask_AP50, mask_AP75, mask_APs/m/l,
mask_AR*, the same with box_, num_predictions; null where COCO cannot compute one; LVIS adds APr/APc/APf. The val
file_names are relative to --val-gt's folder (built-in sets) or `data.coco.val_images`. Timings: --work-dir.
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import sys
from pathlib import Path

from mal.common.devices import log_device, resolve_device
from mal.common.files import write_json_atomic
from mal.config import load_params, run_main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="trained detector folder (train_detector's --out)")
    ap.add_argument("--val-gt", type=Path, required=True, help="val COCO JSON with masks")
    ap.add_argument("--predictions", type=Path, required=True, help="val predictions JSON (written)")
    ap.add_argument("--metrics", type=Path, required=True, help="flat metrics JSON (written)")
    ap.add_argument("--work-dir", type=Path, required=True, help="timings")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    from mal.detection.detector import load_cfg  # imports detectron2
    from mal.detection.evaluation import evaluate_detector

    device = resolve_device(params.run.evaluate.device, "run.evaluate.device")
    log_device(f"evaluate {args.model.name}", device)
    result, timings = evaluate_detector(
        load_cfg(args.model / "config.yaml"), args.model / "model_final.pth", args.val_gt,
        params.data.image_root("val", args.val_gt.parent), params.evaluate, device=str(device),
        num_threads=params.run.evaluate.num_threads)
    write_json_atomic(args.predictions, result.predictions)
    write_json_atomic(args.metrics, result.metrics, indent=2)
    write_json_atomic(args.work_dir / "timings.json", timings, indent=2)
    m = result.metrics
    print(f"evaluate: {args.model.name} ({result.evaluator}): mask_AP {m['mask_AP']} box_AP {m['box_AP']} "
          f"-> {args.metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
