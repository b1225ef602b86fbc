"""DVC stage `evaluate`: COCO (pycocotools) or LVIS (lvis API) box + mask AP of a trained detector on the val GT.

    python stages/evaluate.py --detector mask_rcnn_MNv2_demo --masks gt --seed 0

Reads `<detector.out_dir>/<cell>/` (model_final.pth, config.yaml, train_info.json; `<cell>` =
`<masks>__<detector>__s<seed>`) and writes `<evaluate.predictions_dir>/<cell>.json` (the val predictions, COCO
results format: the paper_table stage re-scores them on bootstrap resamples) and
`<evaluate.metrics_dir>/<cell>.json`: flat numbers in percent — mask_AP, mask_AP50, mask_AP75,
mask_APs/m/l, mask_AR*, the same with box_, num_predictions. A statistic COCO cannot compute (no objects of that
size) is null. An LVIS val set (`evaluate.evaluator: auto` detects it; `coco` | `lvis` force one) is scored
federated and adds mask_/box_APr, APc, APf (mal/detection/lvis_eval.py). Wall-clock time goes to
`<timings_dir>/evaluate/<cell>.json` (git-ignored).
Retention (pseudo / gt mask_AP of the same detector) is computed by the paper_table stage.
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import sys
import time
from pathlib import Path

from mal.common.devices import log_device, resolve_num_gpus
from mal.common.files import write_json_atomic
from mal.common.params import load_params
from mal.common.paths import detector_cell, detector_metrics, detector_predictions, image_roots, timings_path
from mal.detection.lvis_eval import evaluate_val
from mal.detection.params import check_evaluate_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--masks", required=True, help="'gt' or a labeler name")
    ap.add_argument("--seed", type=int, default=None, help="detector seed (DVC: each of table.seeds); default: params seed")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from mal.detection import detector as det  # imports detectron2

    params = load_params(args.params)
    dparams, eparams = params["detector"], params["evaluate"]
    check_evaluate_params(eparams)
    seed = int(params.get("seed", 0)) if args.seed is None else args.seed
    cell = detector_cell(args.masks, args.detector, seed)
    model_dir = Path(dparams["out_dir"]) / cell
    cfg = det.load_cfg(model_dir / "config.yaml")
    device = "cuda" if resolve_num_gpus(dparams.get("num_gpus", "auto"), "detector.num_gpus") else "cpu"
    log_device(f"evaluate {cell}", device)
    t0 = time.perf_counter()
    preds = det.predict(cfg, model_dir / "model_final.pth", eparams["val_json"],
                        image_roots(params["data"])["val"], num_threads=int(eparams.get("num_threads", 0)), device=device)
    evaluator, metrics = evaluate_val(eparams["val_json"], preds, evaluator=str(eparams.get("evaluator", "auto")),
                                      max_dets=int(eparams.get("max_dets", 100)))
    write_json_atomic(detector_predictions(params, args.masks, args.detector, seed), preds)
    out = detector_metrics(params, args.masks, args.detector, seed)
    write_json_atomic(out, metrics, indent=2)
    timings = {"eval_time_s": round(time.perf_counter() - t0, 1)}
    write_json_atomic(timings_path(params, "evaluate", cell), timings, indent=2)
    print(f"evaluate: {cell} ({evaluator}): mask_AP {metrics['mask_AP']} box_AP {metrics['box_AP']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
