"""What it costs DVC to watch a user's image folder (``data.coco.*_images`` are deps of the stages).

    .venv/bin/python benchmarks/bench_dvc_inputs.py --files 20000 --kib 160

Makes a throw-away git + DVC repo with one stage depending on a folder of ``--files`` random files of
``--kib`` KiB each (COCO train2017: 118,287 images, ~160 KiB on average), then times ``dvc status``: the
first call hashes every file (md5, like a first ``dvc repro``), the second reuses DVC's state database
(size + mtime + inode), the third runs after one file changed. Prints the seconds and the per-file cost
scaled to COCO's size. Not a test: the numbers depend on the disk and the machine's load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COCO_TRAIN_IMAGES = 118_287


def _timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--kib", type=int, default=160)
    ap.add_argument("--dir", default=None, help="where to build the repo (default: a temp dir)")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="bench_dvc_inputs_"))
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    block = os.urandom(args.kib * 1024)
    for i in range(args.files):  # distinct contents: a per-file prefix
        (images / f"{i:06d}.jpg").write_bytes(i.to_bytes(8, "little") + block)
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: echo ok > out.txt\n    deps: [images]\n"
                                   "    outs: [out.txt]\n")
    first = _timed([dvc, "status"], root)
    second = _timed([dvc, "status"], root)
    (images / "000000.jpg").write_bytes(b"changed" + block)
    third = _timed([dvc, "status"], root)
    gib = args.files * args.kib / 2**20
    scale = COCO_TRAIN_IMAGES / args.files
    print(f"{args.files} files, {gib:.2f} GiB: first dvc status (hash all) {first:.1f} s, "
          f"second (state db) {second:.1f} s, after one change {third:.1f} s")
    print(f"scaled to COCO train2017 ({COCO_TRAIN_IMAGES} images): first ~{first * scale:.0f} s, "
          f"then ~{second * scale:.0f} s per dvc status/repro")
    if args.dir is None:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
