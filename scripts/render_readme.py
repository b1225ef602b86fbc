"""Render the measured blocks of README.md (`results`) and docs/pseudo_labels.md (`quality`) from the run's files.

    python scripts/render_readme.py            # rewrite the blocks (`make readme`)
    python scripts/render_readme.py --check    # exit 1 with a diff when a block differs (tests/test_readme_table.py)

A block is the text between its `<!-- NAME:begin ... -->` and `<!-- NAME:end -->` lines. The figures come from
reports/paper_table.json (the paper table's rows) and metrics/ (per-seed detector metrics, labeler val mIoU,
mask quality, labelling counts), each found through dvc.yaml in --root. Run it after `dvc repro` changed a
metric; commit the docs with the metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mal.common.files import write_text_atomic  # noqa: E402
from mal.report.readme import block_diff, quality_block, replace_block, results_block  # noqa: E402

BLOCKS = (("README.md", "results", results_block), ("docs/pseudo_labels.md", "quality", quality_block))


def _render(root: Path, readme: Path | None) -> list[tuple[Path, str, str]]:
    """``(file, current text, rendered text)`` per file with a block."""
    out = []
    for rel, name, block in BLOCKS:
        path = readme if readme is not None and name == "results" else root / rel
        current = path.read_text()
        out.append((path, current, replace_block(current, block(root), str(path), name)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 with a diff if README differs")
    ap.add_argument("--root", type=Path, default=REPO, help="the run: dvc.yaml, reports/, metrics/ (default: repo)")
    ap.add_argument("--readme", type=Path, default=None, help="README with the results block (default: <root>/README.md)")
    args = ap.parse_args(argv)
    try:
        rendered = _render(args.root, args.readme)
    except (OSError, ValueError) as e:
        print(f"render_readme: error: {e}", file=sys.stderr)
        return 2
    stale = [(path, current, wanted) for path, current, wanted in rendered if wanted != current]
    for path, current, wanted in stale:
        if args.check:
            sys.stdout.write(block_diff(current, wanted, str(path)))
            print(f"render_readme: {path}: figures differ from reports/ and metrics/: run "
                  "`python scripts/render_readme.py` (make readme)", file=sys.stderr)
        else:
            write_text_atomic(path, wanted)
            print(f"render_readme: rewrote the measured block of {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
