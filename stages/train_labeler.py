"""DVC stage `train_labeler`: train one MAL labeler (``labeler.models.<name>``) on the prepared boxes.

    python stages/train_labeler.py --params params.yaml --labeler vit_tiny
    torchrun --nproc_per_node 8 stages/train_labeler.py --params params.yaml --labeler vit_mae_base

With ``labeler.train.num_gpus`` (auto | N) above 1 and no torchrun around it, the stage starts its N
processes itself (mal/labeler/launch.py), so `dvc repro` and the Prefect tasks use every GPU; a failing
process fails the stage. Each process logs to <timings_dir>/train_labeler/<name>/rank<k>.log; rank 0 writes
the checkpoint, metrics and curves.

Reads data/prepared/train_boxes.json (boxes only, the labeler never sees train masks) and val_gt.json;
writes (labeler.paths) models/labeler/<name>/checkpoint.pt, metrics/train_labeler/<name>.json and the
dvclive curves in metrics/train_labeler/<name>_plots/plots/metrics/*.tsv. A killed run resumes from
.work/train_labeler/<name>/state.pt when its config and data are unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mal.common.runtime  # noqa: E402, F401  (first: OpenMP's wait policy must be set before torch loads)
from mal.common.boxes import is_trainable  # noqa: E402
from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.files import write_json_atomic  # noqa: E402
from mal.common.params import load_params  # noqa: E402
from mal.common.paths import image_roots, labeler_paths, prepared_json, rank_log_path, timings_path  # noqa: E402
from mal.labeler.data import box_records  # noqa: E402
from mal.labeler.distributed import dist_cleanup  # noqa: E402
from mal.labeler.launch import launched_by_torchrun, resolve_num_processes, run_workers  # noqa: E402
from mal.labeler.train import labeler_cfgs, train_labeler  # noqa: E402


def _log_to_rank_file(params: dict, labeler: str) -> None:
    """Every process also logs to its own file (torchrun interleaves the processes' stderr)."""
    path = rank_log_path(params, "train_labeler", labeler, int(os.environ.get("RANK", "0")))
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--labeler", required=True, help="a key of labeler.models in the params file")
    ap.add_argument("--no-resume", action="store_true", help="ignore a matching run state and start fresh")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    params = load_params(args.params)
    lab = params.get("labeler") or {}
    models = lab.get("models") or {}
    if args.labeler not in models:
        raise SystemExit(f"{args.params}: labeler.models has no '{args.labeler}' (have: {sorted(models)})")
    paths = labeler_paths(params, args.labeler)
    model_cfg, train_cfg = labeler_cfgs(lab, args.labeler)
    nproc = resolve_num_processes(train_cfg["num_gpus"], train_cfg["device"])
    if nproc > 1 and not launched_by_torchrun():
        return run_workers(Path(__file__).resolve(), list(sys.argv[1:] if argv is None else argv), nproc)
    _log_to_rank_file(params, args.labeler)
    try:
        _train(args, params, paths, model_cfg, train_cfg)
    except BaseException:
        logging.exception("train_labeler %s failed on rank %s", args.labeler, os.environ.get("RANK", "0"))
        raise
    dist_cleanup()
    return 0


def _train(args: argparse.Namespace, params: dict, paths: dict[str, Path], model_cfg: dict, train_cfg: dict) -> None:
    """Read the prepared boxes, train, and (rank 0) write the metrics and timings."""
    data = params["data"]
    roots = image_roots(data)
    train_json, val_json = prepared_json(data, "train_boxes"), prepared_json(data, "val_gt")
    train_coco, _ = load_coco(train_json, image_root=roots["train"])
    min_area, min_side = float(data["min_train_box_area"]), float(data["min_train_box_side"])
    train_records = box_records(
        train_coco, train_json, lambda a: is_trainable(a, min_area, min_side), image_root=roots["train"]
    )
    val_records = None
    if val_json.is_file():
        val_coco, _ = load_coco(val_json, image_root=roots["val"])
        val_records = box_records(
            val_coco, val_json, lambda a: not a.get("iscrowd", 0) and "segmentation" in a, image_root=roots["val"]
        )
        val_records = val_records or None
    logging.info(
        "labeler %s: %d training boxes (of %d), %d val boxes with masks",
        args.labeler,
        len(train_records),
        len(train_coco["annotations"]),
        len(val_records or []),
    )

    t0 = time.time()
    metrics = train_labeler(
        model_cfg,
        train_cfg,
        train_records,
        val_records,
        out_checkpoint=paths["checkpoint"],
        state_path=paths["state"],
        live_dir=paths["plots_dir"],
        seed=int(params.get("seed", 0)),
        resume=not args.no_resume,
    )
    if metrics:  # rank 0
        timings = {**metrics.pop("timings"), "stage_seconds": round(time.time() - t0, 1)}
        metrics["labeler"] = args.labeler
        metrics["train_boxes"] = len(train_records)
        write_json_atomic(paths["metrics"], metrics, indent=2)
        write_json_atomic(timings_path(params, "train_labeler", args.labeler), timings, indent=2)
        logging.info("metrics: %s; timings: %s", metrics, timings)


if __name__ == "__main__":
    sys.exit(main())
