"""DVC stage `evaluate`: COCO box + mask AP of a trained detector on the validation GT (pycocotools).

    python stages/evaluate.py --detector mask_rcnn_R18_demo --masks gt

Reads `<detector.out_dir>/<masks>__<detector>/` (model_final.pth, config.yaml, train_info.json) and writes
`<evaluate.metrics_dir>/<masks>__<detector>.json`: flat numbers in percent — mask_AP, mask_AP50, mask_AP75,
mask_APs/m/l, mask_AR*, the same with box_ — plus train_iterations, train_time_s, train_s_per_iter,
eval_time_s, num_predictions. A statistic COCO cannot compute (no objects of that size) is null.
Retention (pseudo / gt mask_AP of the same detector) is computed by the paper_table stage.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads make every
# step several times slower (measured: 12 s vs 2 s per iteration under load). Must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json
import sys
import time
from pathlib import Path

from mal.common.coco_io import write_json_atomic
from mal.common.params import load_params
from mal.detection.coco_eval import evaluate_predictions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True)
    ap.add_argument("--masks", required=True, help="'gt' or a labeler name")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from mal.detection import detector as det  # imports detectron2

    params = load_params(args.params)
    dparams, eparams = params["detector"], params["evaluate"]
    cell = f"{args.masks}__{args.detector}"
    model_dir = Path(dparams["out_dir"]) / cell
    cfg = det.load_cfg(model_dir / "config.yaml")
    t0 = time.perf_counter()
    preds = det.predict(cfg, model_dir / "model_final.pth", eparams["val_json"],
                        num_threads=int(eparams.get("num_threads", 0)))
    metrics = evaluate_predictions(eparams["val_json"], preds, max_dets=int(eparams.get("max_dets", 100)))
    metrics["eval_time_s"] = round(time.perf_counter() - t0, 1)
    info_path = model_dir / "train_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        metrics.update({"train_iterations": info.get("iterations"), "train_time_s": info.get("train_time_s"),
                        "train_s_per_iter": info.get("s_per_iter")})
    out = Path(eparams["metrics_dir"]) / f"{cell}.json"
    write_json_atomic(out, metrics, indent=2)
    print(f"evaluate: {cell}: mask_AP {metrics['mask_AP']} box_AP {metrics['box_AP']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
