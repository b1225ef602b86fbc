"""DVC stage `train_labeler`: train one MAL labeler (``labeler.models.<name>``) on the prepared boxes.

    python stages/train_labeler.py --labeler vit_tiny --train-boxes data/prepared/train_boxes.json \
        --val-gt data/prepared/val_gt.json --checkpoint models/labeler/vit_tiny/checkpoint.pt \
        --metrics metrics/train_labeler/vit_tiny.json --plots metrics/train_labeler/vit_tiny_plots \
        --work-dir .work/train_labeler/vit_tiny
    torchrun --nproc_per_node 8 stages/train_labeler.py ...   # the same, processes started by hand

With ``run.train_labeler.num_gpus`` (auto | N) above 1 the stage starts its N processes itself
(mal/common/launch.py), so `dvc repro` and the Prefect tasks use every GPU; a failing process fails the stage.
Each process logs to <work-dir>/logs/rank<k>.log; rank 0 writes the checkpoint and curves, the stage the metrics.
A killed run resumes from <work-dir>/state.pt when its config and data are unchanged; wall-clock numbers go to
<work-dir>/timings.json (git-ignored).
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import logging
import sys
from pathlib import Path

from mal.common.files import write_json_atomic
from mal.common.launch import launch, launched_externally
from mal.config import load_params, run_main
from mal.labeler.distributed import resolve_num_processes
from mal.labeler.job import TrainJob, run_job
from mal.labeler.train import labeler_cfgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeler", required=True, help="a key of labeler.models in the params file")
    ap.add_argument("--train-boxes", type=Path, required=True, help="prepared train boxes (COCO JSON)")
    ap.add_argument("--val-gt", type=Path, required=True, help="prepared val GT masks (COCO JSON)")
    ap.add_argument("--checkpoint", type=Path, required=True, help="the trained labeler (written)")
    ap.add_argument("--metrics", type=Path, required=True, help="final metrics JSON (written)")
    ap.add_argument("--plots", type=Path, required=True, help="dvclive folder of the curves (written)")
    ap.add_argument("--work-dir", type=Path, required=True, help="run state, logs, timings (not DVC outs)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-resume", action="store_true", help="ignore a matching run state and start fresh")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    params = load_params(args.params)
    model_cfg, train_cfg = labeler_cfgs(params, args.labeler)
    data = params.data
    job = TrainJob(
        name=args.labeler, model_cfg=model_cfg, train_cfg=train_cfg, train_json=args.train_boxes,
        val_json=args.val_gt, train_root=data.image_root("train", args.train_boxes.parent),
        val_root=data.image_root("val", args.val_gt.parent), min_area=data.min_train_box_area,
        min_side=data.min_train_box_side, checkpoint=args.checkpoint, state=args.work_dir / "state.pt",
        plots_dir=args.plots, seed=params.seed, resume=not args.no_resume,
    )
    if launched_externally():  # one process of a hand-typed torchrun
        result = run_job(job)
    else:
        nproc = resolve_num_processes(train_cfg["num_gpus"], train_cfg["device"])
        result = launch(run_job, nproc, job, log_dir=args.work_dir / "logs")
    if result is not None:  # rank 0
        metrics, timings = result
        write_json_atomic(args.metrics, metrics, indent=2)
        write_json_atomic(args.work_dir / "timings.json", timings, indent=2)
        logging.info("metrics: %s; timings: %s", metrics, timings)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
