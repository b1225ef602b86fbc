"""The docs' measured blocks: every figure README and docs/pseudo_labels.md quote from a run, rendered from
the run's files.

Each block sits between its two markers (:func:`markers`); ``scripts/render_readme.py`` rewrites them and
``--check`` fails (with a diff) when one differs from what the files give, so the docs cannot drift from
``metrics/``. README's ``results`` block holds the paper table as ``reports/paper_table.md`` has it (the same
rows and renderer), each detector's mask AP per seed, and per labeler its val mIoU, pseudo-mask mIoU,
confidence Spearman and labelling counts; docs/pseudo_labels.md's ``quality`` block the mask quality of each
labeler's pseudo-masks. Each file is found through dvc.yaml (:mod:`mal.report.layout`).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from mal.report.layout import StageOutputs
from mal.report.render import fmt, markdown, markdown_table
from mal.report.table import GT_ROW, Table


def markers(name: str) -> tuple[str, str]:
    """The begin / end lines of block ``name``."""
    return (f"<!-- {name}:begin (rendered by `python scripts/render_readme.py` from reports/ and metrics/) -->",
            f"<!-- {name}:end -->")


BEGIN, END = markers("results")


class _Files:
    """The run's JSON files by stage (dvc.yaml), relative to ``root``; a missing one is an error naming it."""

    def __init__(self, root: Path):
        self.root = root
        self.outs = StageOutputs(root)

    def load(self, path: str | None, stage: str) -> Any:
        if path is None:
            raise ValueError(f"{self.root / 'dvc.yaml'}: no stage {stage!r} with that output")
        full = self.root / path
        if not full.is_file():
            raise FileNotFoundError(f"{full}: missing (run `dvc repro {stage}`, or pull it)")
        return json.loads(full.read_text())

    def metric(self, stage: str) -> Any:
        paths = self.outs.paths(stage, "metrics")
        return self.load(paths[0] if paths else None, stage)


def _labelers(table: Table) -> list[str]:
    return list(dict.fromkeys(r["masks"].removeprefix("MAL ") for r in table.rows if r["masks"] != GT_ROW))


def _seed_table(files: _Files, table: Table) -> str:
    """Mask AP of every trained detector, one column per seed: the seed noise the sd summarises."""
    seeds = table.meta["seeds"]
    rows = []
    for r in table.rows:
        masks = "gt" if r["masks"] == GT_ROW else r["masks"].removeprefix("MAL ")
        group = "evaluate_gt" if masks == "gt" else "evaluate"
        cells = []
        for seed in seeds:
            key = f"{masks}-{r['detector']}-{seed}" if masks != "gt" else f"{r['detector']}-{seed}"
            cells.append(files.metric(f"{group}@{key}")["mask_AP"])
        rows.append([r["detector"], r["masks"], *(fmt(c) for c in cells), fmt(max(cells) - min(cells))])
    return markdown_table(["Detector", "Masks", *(f"seed {s}" for s in seeds), "max − min"], rows, left=2)


def _labeler_table(files: _Files, table: Table) -> tuple[str, list[dict[str, Any]]]:
    rows, quality = [], []
    for lab in _labelers(table):
        train, q = files.metric(f"train_labeler@{lab}"), files.metric(f"mask_quality@{lab}")
        labelled = files.metric(f"pseudo_label@{lab}")
        conf = q.get("confidence") or {}
        quality.append(q)
        rows.append([f"`{lab}`", fmt(train["val_miou"], 3),
                     f"{fmt(q['miou'], 3)} ({fmt(q['miou_small'], 3)} / {fmt(q['miou_medium'], 3)})",
                     fmt(conf.get("spearman"), 3), f"{labelled['boxes_in']} / {labelled['masks_out']}",
                     str(labelled["box_fallback"]), str(labelled["skipped"])])
    headers = ["labeler", "val mIoU", "pseudo-mask mIoU (small / medium)", "confidence Spearman",
               "boxes in / masks out", "box fallbacks", "skipped"]
    return markdown_table(headers, rows), quality


def _baselines(quality: list[dict[str, Any]]) -> str:
    """The box-as-mask and GrabCut mIoU on the same train boxes (one line when every labeler's agree)."""
    def line(q: dict[str, Any]) -> str:
        b = q.get("baselines") or {}
        parts = [f"{name} {fmt((b.get(key) or {}).get('miou'), 3)}" for key, name in
                 (("box", "box-as-mask"), ("grabcut", "OpenCV GrabCut")) if key in b]
        grab = b.get("grabcut") or {}
        if "fallbacks_to_box" in grab:
            parts[-1] += f" ({grab['fallbacks_to_box']} of {grab['num_instances']} fell back to the box)"
        return ", ".join(parts)

    lines = {line(q) for q in quality}
    if len(lines) == 1:
        return f"Baselines on the same train boxes (mIoU): {lines.pop()}."
    return "Baselines on the same train boxes (mIoU): " + "; ".join(
        f"{q.get('labeler', i)}: {line(q)}" for i, q in enumerate(quality)) + "."


def _rankings(table: Table) -> str:
    """Per detector, the labelers ordered by mask AP and by pseudo-mask mIoU, and how many retention intervals
    lie below 100 %: the claims the prose reads, computed rather than typed."""
    lines = []
    for det in dict.fromkeys(r["detector"] for r in table.rows):
        labs = [r for r in table.rows if r["detector"] == det and r["masks"] != GT_ROW]
        by_ap = " > ".join(r["masks"].removeprefix("MAL ") for r in sorted(labs, key=lambda r: -r["mask_AP"]))
        by_miou = " > ".join(r["masks"].removeprefix("MAL ") for r in sorted(labs, key=lambda r: -r["pseudo_mIoU"]))
        below = sum(r["retention_hi"] is not None and r["retention_hi"] < 100 for r in labs)
        lines.append(f"- {det}: by mask AP {by_ap}; by pseudo-mask mIoU {by_miou}; retention interval below 100 % "
                     f"for {below} of {len(labs)} labelers.")
    return "\n".join(lines)


def results_block(root: str | Path) -> str:
    """The block's Markdown (between the markers), from the run in ``root`` (its dvc.yaml and outputs)."""
    files = _Files(Path(root))
    rows_json = files.outs.named("paper_table", "paper_table.json")
    table = Table.from_json(files.load(rows_json, "paper_table"), rows_json or "paper_table.json")
    labelers, quality = _labeler_table(files, table)
    parts = [markdown(table, title_prefix="Data: "),
             f"Rankings (from the rows above):\n\n{_rankings(table)}",
             f"Mask AP of each detector by seed (`metrics/detector/`):\n\n{_seed_table(files, table)}",
             "Labelers (`metrics/train_labeler/`, `metrics/mask_quality/`, `metrics/pseudo_label/`): val mIoU "
             "at the labeler's val threshold, pseudo-mask mIoU on the train boxes, the rank correlation of the "
             f"masks' `score` with their IoU, and where each box went:\n\n{labelers}",
             _baselines(quality)]
    return "\n\n".join(p.strip() for p in parts) + "\n"


def quality_block(root: str | Path) -> str:
    """Mask quality of every labeler's pseudo-masks on the train boxes (``mask_quality@<L>``, ``pseudo_label@<L>``)."""
    files = _Files(Path(root))
    labelers = [n.split("@", 1)[1] for n in files.outs.stages if n.startswith("mask_quality@")]
    rows, lowest = [], 0.2
    for lab in labelers:
        q, labelled = files.metric(f"mask_quality@{lab}"), files.metric(f"pseudo_label@{lab}")
        conf, base = q.get("confidence") or {}, q.get("baselines") or {}
        lowest = conf.get("lowest_fraction", lowest)
        grab = base.get("grabcut") or {}
        rows.append([f"`{lab}`", *(fmt(q[k], 3) for k in ("miou", "miou_small", "miou_medium", "miou_large")),
                     fmt((base.get("box") or {}).get("miou"), 3),
                     f"{fmt(grab.get('miou'), 3)} ({grab.get('fallbacks_to_box', '–')})",
                     f"{labelled['labeler_masks']} / {labelled['boxes_in']}", str(labelled["box_fallback"]),
                     str(labelled["skipped"]), fmt(conf.get("spearman"), 3), fmt(conf.get("ratio_vs_chance"), 2)])
    headers = ["labeler", "mIoU", "small", "medium", "large", "box-as-mask", "GrabCut (fell back to the box)",
               "labeler masks / boxes", "fallbacks", "skips", "confidence Spearman",
               f"bad masks in lowest {100 * lowest:.0f} % / chance"]
    return (f"`mask_quality` on the train boxes, each labeler as `dvc repro` last trained it, class-averaged mIoU "
            f"(`metrics/mask_quality/<L>.json`, counts from `metrics/pseudo_label/<L>.json`):\n\n"
            f"{markdown_table(headers, rows)}\n")


def replace_block(text: str, block: str, where: str = "README.md", name: str = "results") -> str:
    """``text`` with the part between block ``name``'s markers replaced by ``block`` (each marker exactly once)."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"{where}: expected one line {begin!r} and, after it, one line {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def block_diff(current: str, wanted: str, where: str = "README.md") -> str:
    """A unified diff from ``current`` to ``wanted`` ("" when they agree)."""
    return "".join(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), f"{where} (now)",
                                        f"{where} (rendered from reports/ and metrics/)"))
