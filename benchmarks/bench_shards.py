"""Benchmark: sharded pseudo-labelling, N shard processes / 1 process, through the real stage.

    python benchmarks/bench_shards.py [--labeler vit_tiny] [--copies 4] [--processes 2]

Runs ``stages/pseudo_label.py`` twice on the same boxes (the prepared train boxes, each image listed
``--copies`` times so that start-up is a small part of the run): once as one process with all the threads
(``num_threads = --threads``), once as ``--processes`` shard processes with ``--threads / --processes``
threads each (``run.pseudo_label.num_shards`` = ``shard_processes`` = ``--processes``), so both use the same cores.
Prints each run's wall time and boxes/s and the ratio N-process / 1-process throughput, from one run.
Both runs write to a temp dir; the merged outputs are checked to be identical. No timed assertion.
Needs ``data/prepared`` and ``models/labeler/<labeler>`` (run ``make repro`` first).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mal.config import load_params  # noqa: E402


def _repeated_boxes(src: Path, copies: int, dst: Path) -> int:
    """``src``'s images ``copies`` times (new image and box ids, same files); returns the box count."""
    coco = json.loads(src.read_text())
    images, anns = [], []
    for c in range(copies):
        off = c * 10_000_000
        images += [{**im, "id": im["id"] + off} for im in coco["images"]]
        anns += [{**a, "id": a["id"] + off, "image_id": a["image_id"] + off} for a in coco["annotations"]]
    dst.write_text(json.dumps({**coco, "images": images, "annotations": anns}))
    return len(anns)


def _run(params: dict, work: Path, name: str, labeler: str, processes: int, threads: int,
         boxes: Path) -> tuple[float, Path]:
    p = copy.deepcopy(params)
    out = work / name
    p.setdefault("run", {}).setdefault("pseudo_label", {}).update(
        num_shards=processes, shard_processes=processes, num_threads=max(threads // processes, 1))
    params_file = out / "params.yaml"
    out.mkdir(parents=True)
    params_file.write_text(yaml.safe_dump(p))
    cmd = [sys.executable, str(ROOT / "stages/pseudo_label.py"), "--params", str(params_file), "--labeler", labeler,
           "--boxes", str(boxes), "--checkpoint", str(ROOT / f"models/labeler/{labeler}/checkpoint.pt"),
           "--images", str(ROOT / "data/prepared/images"), "--out", str(out / "pseudo.json"),
           "--metrics", str(out / "metrics.json"), "--work-dir", str(out / "work")]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, out / "pseudo.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--labeler", default="vit_tiny")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads in all, split over the processes")
    args = ap.parse_args()
    params = load_params(ROOT / args.params).model_dump()
    work = Path(tempfile.mkdtemp(prefix="bench_shards_"))
    boxes = work / "boxes.json"
    n = _repeated_boxes(ROOT / "data/prepared/train_boxes.json", args.copies, boxes)  # dvc.yaml's prepare output
    t1, out1 = _run(params, work, "one", args.labeler, 1, args.threads, boxes)
    tn, outn = _run(params, work, "many", args.labeler, args.processes, args.threads, boxes)
    same = json.loads(out1.read_text()) == json.loads(outn.read_text())
    print(f"{n} boxes; 1 process x {args.threads} threads: {t1:.1f} s ({n / t1:.1f} boxes/s)")
    print(f"{args.processes} shard processes x {max(args.threads // args.processes, 1)} thread(s): {tn:.1f} s "
          f"({n / tn:.1f} boxes/s); outputs identical: {same}")
    print(f"ratio {args.processes}-process / 1-process throughput = {t1 / tn:.3f} (stage wall time, start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
