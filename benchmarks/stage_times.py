"""Time per stage of the last `dvc repro`, from the stages' own timing files (`.work/<stage>/<name>/timings.json`).

    make repro                                      # or: /usr/bin/time -f %e dvc repro
    python benchmarks/stage_times.py [--total-s 1234]   # --total-s: the run's wall clock, to show the overhead

Prints one line per stage family (count, seconds in all, seconds each) and, with ``--total-s``, what the stages'
own clocks do not cover: process start-up (imports of torch / detectron2), `prepare`, `weights`, `paper_table`
and DVC's hashing. The files hold what the last run of each stage measured; a stage skipped by DVC keeps its
older file, so run this right after a full `make repro`. Prints numbers only, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the keys of a timing file that hold the stage's own wall clock (the first present counts)
CLOCK_KEYS = ("stage_seconds", "seconds", "train_time_s", "eval_time_s")


def stage_seconds(work_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """``{stage: [(name, seconds), ...]}`` from ``<work_dir>/<stage>/<name>/timings.json`` (the stages' --work-dir)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for f in sorted(work_dir.glob("*/*/timings.json")):
        record = json.loads(f.read_text())
        value = next((record[k] for k in CLOCK_KEYS if isinstance(record.get(k), (int, float))), None)
        if value is not None:
            out.setdefault(f.parent.parent.name, []).append((f.parent.name, float(value)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", type=Path, default=ROOT / ".work", help="the stages' work folders (dvc.yaml)")
    ap.add_argument("--total-s", type=float, default=None, help="wall clock of the whole run (seconds)")
    args = ap.parse_args(argv)
    timings = args.work_dir
    found = stage_seconds(timings)
    if not found:
        print(f"no timing files under {timings}: run `make repro` first")
        return 1
    total = 0.0
    print(f"{'stage':<16} {'runs':>4} {'seconds':>8}  each")
    for stage, runs in found.items():
        s = sum(v for _, v in runs)
        total += s
        each = ", ".join(f"{n} {v:.0f}" for n, v in runs) if len(runs) <= 3 else (
            f"{min(v for _, v in runs):.0f}-{max(v for _, v in runs):.0f} (mean {s / len(runs):.1f})")
        print(f"{stage:<16} {len(runs):>4} {s:>8.0f}  {each}")
    print(f"{'stages in all':<21} {total:>8.0f}  ({total / 60:.1f} min)")
    if args.total_s is not None:
        print(f"{'run wall clock':<21} {args.total_s:>8.0f}  ({args.total_s / 60:.1f} min); outside the stages' "
              f"clocks: {args.total_s - total:.0f} s (process start-up, prepare, weights, paper_table, DVC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
