"""DVC stage `train_detector`: train a Detectron2 detector on GT or pseudo masks.

    python stages/train_detector.py --detector mask_rcnn_MNv2_demo --masks gt --seed 0
    python stages/train_detector.py --detector cascade_MNv2_demo --masks vit_tiny --seed 1   # a labeler's pseudo-labels

Reads params.yaml `detector:`. Training JSON: `detector.gt_json` for `--masks gt`, else
`detector.pseudo_json` with {labeler} = the masks source. `--seed` (one of `table.seeds`; default: params `seed`)
seeds the detector's initialisation and data order; each seed is its own run, `<cell>` = `<masks>__<detector>__s<seed>`.
Checkpoints go to `<work_dir>/<cell>/` (kept across runs, so an interrupted run resumes when started again with the
same config); the finished model goes to `<out_dir>/<cell>/`: model_final.pth (weights only), config.yaml, train_info.json
(all reproduced exactly by an identical re-run); detectron2's log.txt and per-iteration train_log.jsonl and the
wall-clock timings go to `<timings_dir>/train_detector/` (git-ignored); loss/lr curves for `dvc plots` go to
`<detector.live_dir>/<cell>/` (dvclive).
Multi-GPU: `--num-gpus N` (detectron2 launch; default: every visible GPU). With `detector.train.reference_world_size`
R (paper profile: 8, the zoo's), batch, lr and iterations are scaled to N GPUs x machines (same images per GPU,
same epochs; `mal.detection.detector.scale_to_world_size`).
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import json
import shutil
import sys
from pathlib import Path

from mal.common.devices import log_device, resolve_num_gpus
from mal.common.files import write_json_atomic
from mal.common.params import load_params
from mal.common.paths import detector_cell, image_roots, timings_path
from mal.detection.params import check_detector_params


def train_json_for(dparams: dict, masks: str) -> Path:
    """The training COCO JSON of a mask source (``gt`` or a labeler name)."""
    if masks == "gt":
        return Path(dparams["gt_json"])
    return Path(dparams["pseudo_json"].format(labeler=masks))


# Besides every ``loss_*`` part detectron2 reports (Cascade's are per stage: loss_cls_stage0..2, ...), so the
# logged parts always add up to total_loss whatever the architecture. No wall-clock key ("time"): the curves are
# tracked files, and an identical re-run must leave them unchanged (seconds per iteration: the timings file).
CURVE_KEYS = ("total_loss", "lr")


def curve_keys(record: dict) -> list[str]:
    """The keys of one detectron2 metrics record that become curves."""
    return [*CURVE_KEYS, *sorted(k for k in record if k.startswith("loss_"))]


def write_curves(jsonl: Path, live_dir: Path) -> int:
    """Replay detectron2's per-iteration JSON lines into a dvclive directory (``dvc plots`` curves).

    Done once training is over, so a resumed run's curves are complete (detectron2 appends to the file across
    resumes; a repeated iteration keeps its last record). Returns the number of steps written.
    """
    from dvclive import Live

    records: dict[int, dict] = {}
    for line in jsonl.read_text().splitlines() if jsonl.is_file() else []:
        rec = json.loads(line)
        if "iteration" in rec:
            records[int(rec["iteration"])] = rec
    shutil.rmtree(live_dir, ignore_errors=True)
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None, resume=False)
    for it in sorted(records):
        live.step = it
        for key in curve_keys(records[it]):
            val = records[it].get(key)
            if isinstance(val, (int, float)) and val == val:
                live.log_metric(f"train/{key}", float(val))
    live.end()
    return len(records)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", required=True, help="a key of mal.detection.detector.DETECTORS")
    ap.add_argument("--masks", required=True, help="'gt' or a labeler name (uses its pseudo-label JSON)")
    ap.add_argument("--seed", type=int, default=None, help="detector seed (DVC: each of table.seeds); default: params seed")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--num-gpus", default=None, help="default: params detector.num_gpus (auto | N; 0 = CPU)")
    ap.add_argument("--num-machines", type=int, default=1)
    ap.add_argument("--machine-rank", type=int, default=0)
    ap.add_argument("--dist-url", default="auto", help="tcp://host:port of machine 0 for multi-machine runs")
    ap.add_argument("--no-resume", action="store_true", help="discard checkpoints of an earlier run")
    ap.add_argument("--opts", nargs="*", default=[], help="extra detectron2 options: KEY VALUE ...")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from mal.detection import detector as det  # imports detectron2

    params = load_params(args.params)
    dparams = params["detector"]
    check_detector_params(dparams, backbones=det.weight_backbones())
    det.get_spec(args.detector)
    train_json = train_json_for(dparams, args.masks)
    if not train_json.is_file():
        raise SystemExit(f"train_detector: {train_json}: training JSON not found "
                         f"(masks={args.masks!r}; run the prepare / pseudo_label stage first)")
    seed = int(params.get("seed", 0)) if args.seed is None else args.seed
    cell = detector_cell(args.masks, args.detector, seed)
    work = Path(dparams["work_dir"]) / cell
    out = Path(dparams["out_dir"]) / cell
    image_root = image_roots(params["data"])["train"]
    num_gpus = resolve_num_gpus(args.num_gpus if args.num_gpus is not None else dparams.get("num_gpus", "auto"),
                                "detector.num_gpus")  # GPUs asked for but absent: an error, not a slow CPU run
    dparams = {**dparams, "seed": seed, "device": "cuda" if num_gpus else "cpu"}
    cfg = det.build_cfg(args.detector, train_json, work, dparams, image_root=image_root)
    if args.opts:
        cfg.merge_from_list(args.opts)
    log_device(f"train_detector {cell}", cfg.MODEL.DEVICE, amp=cfg.SOLVER.AMP.ENABLED, num_gpus=num_gpus)
    # the zoo schedule is for 8 GPUs x 2 images: on another world size, the same epochs (linear scaling)
    cfg = det.scale_to_world_size(cfg, max(num_gpus, 1) * args.num_machines)
    info, timings = det.train(cfg, train_json, image_root, work, num_gpus=max(num_gpus, 1),
                              num_machines=args.num_machines, machine_rank=args.machine_rank,
                              dist_url=args.dist_url, num_threads=int(dparams.get("num_threads", 0)),
                              resume=not args.no_resume)
    # Publish the finished run (weights only) to the DVC out dir, replacing it as a whole. Only what an
    # identical re-run reproduces goes there; logs and timings go beside the stage's timings (git-ignored).
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    det.export_final(work, tmp / "model_final.pth")
    cfg.defrost()
    cfg.OUTPUT_DIR = str(out)
    cfg.MODEL.WEIGHTS = ""
    (tmp / "config.yaml").write_text(cfg.dump())
    info.update({"detector": args.detector, "masks": args.masks, "seed": seed, "train_json": str(train_json)})
    write_json_atomic(tmp / "train_info.json", info, indent=2)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    timing_file = timings_path(params, "train_detector", cell)
    logs = timing_file.with_suffix("")  # <timings_dir>/train_detector/<cell>/{log.txt,train_log.jsonl}
    logs.mkdir(parents=True, exist_ok=True)
    for src, dst in (("log.txt", "log.txt"), ("metrics.json", "train_log.jsonl")):
        if (work / src).is_file():
            shutil.copyfile(work / src, logs / dst)
    write_json_atomic(timing_file, timings, indent=2)
    write_curves(logs / "train_log.jsonl", Path(dparams["live_dir"]) / cell)
    shutil.rmtree(work, ignore_errors=True)  # checkpoints are only needed to resume an unfinished run
    print(f"train_detector: {cell}: {json.dumps(info)} {json.dumps(timings)} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
