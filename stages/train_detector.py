"""DVC stage `train_detector`: train a detectron2 detector on GT or pseudo masks.

    python stages/train_detector.py --detector mask_rcnn_MNv2_demo --masks gt --seed 0 \
        --train-json data/prepared/train_gt.json --images data/prepared/images \
        --out models/detector/gt__mask_rcnn_MNv2_demo__s0 --live-dir dvclive/train_detector/gt__mask_rcnn_MNv2_demo__s0 \
        --work-dir .work/train_detector/gt__mask_rcnn_MNv2_demo__s0 [--params params.yaml]

Params `detector` (the zoo config, `demo_arch`, backbone weights, detectron2 keys in `opts` and
`models.<detector>`), `run.train_detector` (GPUs, threads: where it runs, not what it computes). The train
JSON's file_names are relative to the prepared folder (the parent of --images) for the built-in sets, to
`data.coco.train_images` for dataset coco. Writes --out (model_final.pth with the weights only, config.yaml,
train_info.json: an identical re-run reproduces them), the loss / lr curves in --live-dir (dvclive), and in
--work-dir (kept: not a DVC output) checkpoints while it runs (an interrupted run resumes), detectron2's
log.txt and metrics.json, and timings.json. One process per GPU (`mal.common.launch`); under torchrun, one of its.
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import json
import sys
from pathlib import Path

from mal.common.devices import log_device, resolve_num_gpus
from mal.common.files import write_json_atomic
from mal.config import ParamsError, load_params, run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True, help="a key of mal.detection.detector.DETECTORS")
    ap.add_argument("--masks", required=True, help="'gt' or the labeler whose pseudo-labels --train-json holds")
    ap.add_argument("--seed", type=int, default=0, help="detector seed (DVC: each of table.seeds)")
    ap.add_argument("--train-json", type=Path, required=True, help="training COCO JSON with masks")
    ap.add_argument("--images", type=Path, required=True, help="prepared images folder (built-in sets)")
    ap.add_argument("--out", type=Path, required=True, help="model folder (replaced)")
    ap.add_argument("--live-dir", type=Path, required=True, help="dvclive curves folder (replaced)")
    ap.add_argument("--work-dir", type=Path, required=True, help="checkpoints (resume), logs, timings")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-resume", action="store_true", help="discard checkpoints of an earlier run")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    from mal.detection import detector as det  # imports detectron2
    from mal.detection.train import train_detector

    if args.detector not in det.DETECTORS:
        raise SystemExit(f"train_detector: unknown --detector {args.detector!r}; known: {', '.join(sorted(det.DETECTORS))}")
    try:  # every detectron2 key of the params, before any training
        det.check_params(params.detector)
    except det.DetectorConfigError as e:
        raise ParamsError(f"{args.params}: {e}") from None
    if not args.train_json.is_file():
        raise SystemExit(f"train_detector: {args.train_json}: training JSON not found "
                         f"(masks={args.masks!r}; run the prepare / pseudo_label stage first)")
    run = params.run.train_detector
    num_gpus = resolve_num_gpus(run.num_gpus, "run.train_detector.num_gpus")  # asked for but absent: an error
    log_device(f"train_detector {args.out.name}", "cuda" if num_gpus else "cpu", amp=params.detector.amp,
               num_gpus=num_gpus)
    trained, timings = train_detector(
        args.detector, params.detector, args.train_json, params.data.image_root("train", args.images.parent),
        args.work_dir, args.live_dir, seed=args.seed, num_gpus=num_gpus, num_threads=run.num_threads,
        resume=not args.no_resume)
    if not trained.info:  # a torchrun process other than rank 0
        return 0
    trained.info.update({"detector": args.detector, "masks": args.masks, "seed": args.seed,
                         "train_json": str(args.train_json)})
    trained.write(args.out)
    write_json_atomic(args.work_dir / "timings.json", timings, indent=2)
    print(f"train_detector: {json.dumps(trained.info)} {json.dumps(timings)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
