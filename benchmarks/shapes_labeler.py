"""Train and evaluate the labeler on a synthetic shapes set, outside the DVC demo (an experiment script).

    .venv/bin/python benchmarks/shapes_labeler.py --out runs/shapes200 \
        [--num-train 200 --num-val 30] [--set labeler.train.epochs=60 ...] [--dataset nuclei]

Derives ``<out>/params.yaml`` from ``params.yaml`` (``data.dataset: shapes`` with the sizes given, or
``--dataset nuclei`` for the same experiment on the embedded real set, then each ``--set dotted.key=value``, the
value read as YAML, merged as ``dvc exp run -S`` does), runs the real stages (``stages/prepare.py``,
``stages/train_labeler.py``) on it with every output path under ``<out>``, labels the val boxes with the student at
``pseudo_label.threshold`` and prints class-averaged and per-class mIoU next to the box-as-mask baseline.
Writes ``<out>/report.json``. Nothing under the repository's data/, models/ or metrics/ is touched.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mal.config import ParamsError, load_params  # noqa: E402
from mal.config.load import merge, parse_overrides  # noqa: E402


def derive_params(
    base: dict[str, Any], num_train: int, num_val: int, sets: list[str], dataset: str = "shapes"
) -> dict:
    """``base`` (a params mapping) with ``dataset`` (shapes: of the sizes given) and the ``--set`` overrides."""
    params = json.loads(json.dumps(base))
    params["data"]["dataset"] = dataset
    if dataset == "shapes":
        params["data"]["shapes"].update({"num_train": num_train, "num_val": num_val})
    try:
        return merge(params, parse_overrides(sets))
    except ParamsError as e:
        raise SystemExit(f"--set: {e}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--labeler", default="vit_tiny")
    ap.add_argument("--num-train", type=int, default=200)
    ap.add_argument("--num-val", type=int, default=30)
    ap.add_argument("--dataset", choices=["shapes", "nuclei"], default="shapes")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params_path = out / "params.yaml"
    base = load_params(args.params).model_dump()
    params_path.write_text(yaml.safe_dump(derive_params(base, args.num_train, args.num_val, args.sets, args.dataset)))
    try:
        params = load_params(params_path)  # the same checks the stages make, before any work
    except ParamsError as e:
        raise SystemExit(str(e)) from None
    py, data = sys.executable, out / "data"
    checkpoint = out / "models" / args.labeler / "checkpoint.pt"
    metrics_path, work = out / "metrics" / f"{args.labeler}.json", out / "work" / args.labeler
    subprocess.run([py, str(REPO / "stages/prepare.py"), "--params", str(params_path), "--out", str(data),
                    "--metrics", str(out / "prepare.json")], cwd=REPO, check=True)
    subprocess.run([py, str(REPO / "stages/train_labeler.py"), "--params", str(params_path),
                    "--labeler", args.labeler, "--no-resume", "--train-boxes", str(data / "train_boxes.json"),
                    "--val-gt", str(data / "val_gt.json"), "--checkpoint", str(checkpoint), "--metrics",
                    str(metrics_path), "--plots", str(out / "metrics" / f"{args.labeler}_plots"),
                    "--work-dir", str(work)], cwd=REPO, check=True)

    from mal.config.quality import MaskQualityParams as MQ
    from mal.pseudo.engine import resolve_options
    from mal.pseudo.label import Predictor, label_images, load_boxes
    from mal.pseudo.quality import evaluate_masks

    # the stage's options; a null threshold is the one the checkpoint records, resolved as every front end does
    opts = resolve_options(params.pseudo_label.model_copy(update={"which": "student", "flip_tta": False}), checkpoint)
    threshold = opts.threshold
    val_json = data / "val_gt.json"
    gt = load_boxes(val_json)
    labelled = label_images(gt, val_json, Predictor(checkpoint, "student", False), opts)
    pred = {**gt, "annotations": list(labelled["annotations"].values())}
    quality = evaluate_masks(pred, gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)
    box = quality["baselines"]["box"]
    train_metrics = json.loads(metrics_path.read_text())
    report = {
        "val_miou_stage": train_metrics["val_miou"],  # the stage's own val metric (threshold val_threshold)
        "threshold": threshold,
        "miou": quality["miou"],
        "box_miou": box["miou"],
        "per_class": {k: [v["miou"], box["per_class"][k]["miou"], v["count"]]
                      for k, v in quality["per_class"].items()},
        "stage_seconds": json.loads((work / "timings.json").read_text())["stage_seconds"],
        "sets": args.sets,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\n{args.dataset} val ({quality['num_instances']} boxes), threshold {threshold}: "
          f"labeler {quality['miou']:.3f}, box {box['miou']:.3f} (stage val_miou {report['val_miou_stage']:.3f})")
    print(f"{'class':<10} {'labeler':>8} {'box':>6} {'boxes':>6}")
    for name, (m, b, n) in report["per_class"].items():
        print(f"{name:<10} {m:8.3f} {b:6.3f} {n:6d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
