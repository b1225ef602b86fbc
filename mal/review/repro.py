"""Review page for a whole ``dvc repro``: every path comes from the run's dvc.yaml, read relative to its folder.

dvc.yaml is the one path layout (the stages get their paths as arguments from it): DVC's own API resolves it
(matrix entries included, with the run's params.yaml), and the page takes each file from the stage that writes
it -- its ``outs`` / ``metrics`` / ``plots``, or the path its ``cmd`` passes (``--pseudo``, ``--gt``).

Sections: the paper table (rendered from ``paper_table.json``'s rows, as README and ``paper_table.md`` are);
per labeler its training curves (dvclive TSVs), what the labeller wrote, the mask quality (overall, S/M/L and
per-class mIoU with the box/GrabCut baselines, the confidence check), the score histogram and the
least-confident masks. A stage that has not run yet (or a stage dvc.yaml lacks) leaves a named gap, not an
error.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from mal.config import load_params
from mal.report.layout import StageOutputs
from mal.report.render import comparison_cells, notes, paper_cells
from mal.report.table import Table
from mal.review import page
from mal.review.labelled import cards_html, load_labelled, score_histogram_html, skipped_count, summary, summary_html

DEFAULT_NUM = 12
SIZES = ("miou", "miou_small", "miou_medium", "miou_large")
TABLE_STAGE = "paper_table"


class _Run:
    """params.yaml and dvc.yaml of a run folder, the files they name resolved against it; records what is missing."""

    def __init__(self, params_path: str | Path):
        self.params_path = Path(params_path)
        self.params = load_params(self.params_path)
        self.base = self.params_path.resolve().parent
        self.outs = StageOutputs(self.base)
        self.missing: list[str] = []
        if not self.outs.stages:
            self.missing.append(f"{self.base / 'dvc.yaml'} (the pipeline: no stage found)")

    def at(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.base / path

    def exists(self, path: str | Path | None, what: str) -> Path | None:
        """The resolved path, or None after noting ``what`` as missing (``path`` None: dvc.yaml names no file)."""
        if path is None:
            self.missing.append(f"{what} (not in dvc.yaml)")
            return None
        p = self.at(path)
        if p.exists():
            return p
        self.missing.append(f"{path} ({what})")
        return None

    def json(self, path: str | Path | None, what: str) -> dict[str, Any] | None:
        p = self.exists(path, what)
        return json.loads(p.read_text()) if p is not None else None

    def metric(self, stage: str) -> dict[str, Any] | None:
        """The (first) metrics JSON of ``stage``."""
        paths = self.outs.paths(stage, "metrics")
        return self.json(paths[0] if paths else None, f"stage {stage}")


def table_html(table: Table) -> str:
    """The paper table from its rows: the same cells as ``paper_table.md`` and README."""
    out = f"<h3>{page.esc(table.meta['title'])}</h3>" + page.table(*paper_cells(table), cls="paper", left=2)
    if table.comparisons:
        out += page.table(*comparison_cells(table), cls="paper")
    return out + f'<p class="note">{page.esc(notes(table))}</p>'


def paper_table_html(run: _Run) -> str:
    """The paper_table stage's rows; before it has run, the detector metrics of the evaluate stages there are."""
    rows_json = run.outs.named(TABLE_STAGE, "paper_table.json")
    data = run.json(rows_json, f"stage {TABLE_STAGE}")
    if data is not None:
        return table_html(Table.from_json(data, run.at(rows_json)))
    rows = []
    for name in sorted(n for n in run.outs.stages if n.split("@")[0] in ("evaluate", "evaluate_gt")):
        for path in run.outs.paths(name, "metrics"):
            m = run.json(path, f"stage {name}")
            masks, det, seed = Path(path).stem.rsplit("__", 2)  # the cell: <masks>__<detector>__s<seed>
            if m is not None:
                rows.append([det, masks, seed.removeprefix("s"),
                             *(m.get(k) for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP"))])
    if not rows:
        return '<p class="warn">No paper table and no detector metrics yet.</p>'
    return page.table(["detector", "masks", "seed", "mask AP", "AP50", "AP75", "box AP"], rows, cls="paper", left=3)


def curves_html(run: _Run, lab: str) -> str:
    """One small plot per dvclive TSV of the labeler's training (``step`` vs the value)."""
    plots = run.outs.paths(f"train_labeler@{lab}", "plots")
    found = run.exists(plots[0] if plots else None, f"stage train_labeler@{lab}: curves")
    tsvs = sorted(found.glob("*.tsv")) if found is not None else []
    if not tsvs:
        return '<p class="warn">No training curves.</p>'
    plt = page.pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(4, len(tsvs))
    rows = -(-len(tsvs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax, tsv in zip(axes.flat, tsvs, strict=False):  # more axes than curves: the rest are hidden below
        rec = list(csv.DictReader(tsv.read_text().splitlines(), delimiter="\t"))
        name = tsv.stem
        marker = "." if len(rec) < 40 else None
        ax.plot([float(r["step"]) for r in rec], [float(r[name]) for r in rec], lw=1.2, marker=marker)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=7)  # the labeler logs one dvclive step per epoch
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tsvs):]:
        ax.axis("off")
    fig.tight_layout()
    return page.img(page.figure_uri(fig), f"{lab} training curves")


def quality_html(q: dict[str, Any]) -> str:
    """Overall and S/M/L mIoU of the labeler and baselines, per-class mIoU, and the confidence check."""
    methods = {"labeler": q, **(q.get("baselines") or {})}
    rows = [[name, *(m.get(k) for k in SIZES), m.get("num_instances")] for name, m in methods.items()]
    out = page.table(["masks", "mIoU", "small", "medium", "large", "instances"], rows, cls="miou")
    classes = sorted(q.get("per_class") or {})
    if classes:
        names = list(methods)
        crow = [[c, (q["per_class"][c] or {}).get("count"),
                 *(((m.get("per_class") or {}).get(c) or {}).get("miou") for m in methods.values())] for c in classes]
        out += "<h3>Per class</h3>" + page.table(["class", "count", *(f"{n} mIoU" for n in names)], crow, cls="per-class")
    conf = q.get("confidence")
    if isinstance(conf, dict) and conf:
        out += ("<h3>Does the score find the bad masks?</h3>"
                + page.table(["", "value"], sorted(conf.items()), cls="confidence")
                + '<p class="note">spearman: rank correlation of score and IoU; bad_share: share of bad masks '
                  "overall; bad_share_in_lowest: among the lowest-scored; ratio_vs_chance: the second over the first.</p>")
    return out


def labeler_html(run: _Run, lab: str, num: int) -> str:
    out = f"<h2>Labeler {page.esc(lab)}</h2><h3>Training curves</h3>{curves_html(run, lab)}"
    labelled = run.metric(f"pseudo_label@{lab}")
    if labelled is not None:
        keys = ("boxes_in", "masks_out", "labeler_masks", "box_fallback", "skipped", "boxes_per_s")
        out += "<h3>Labelling</h3>" + page.table(["", "value"], [(k, labelled.get(k)) for k in keys if k in labelled])
    quality_stage = f"mask_quality@{lab}"
    q = run.metric(quality_stage)
    if q is not None:
        out += "<h3>Mask quality (pseudo masks vs GT, train boxes)</h3>" + quality_html(q)
    pseudo_json, gt_json = run.outs.arg(quality_stage, "--pseudo"), run.outs.arg(quality_stage, "--gt")
    pseudo_path = run.exists(pseudo_json, f"stage pseudo_label@{lab}: labelled file")
    if pseudo_path is None:
        return out
    coco = load_labelled(pseudo_path)
    gt_path = run.at(gt_json) if gt_json else None
    gt = load_labelled(gt_path, "GT COCO file") if gt_path is not None and gt_path.is_file() else None
    # the stage's own rule: built-in sets' images live beside the prepared GT, a COCO set's in the user's folder
    image_root = run.at(run.params.data.image_root("train", gt_path.parent if gt_path else pseudo_path.parent))
    cards, shown = cards_html(coco, pseudo_path, image_root, gt, num)
    hist = score_histogram_html(coco, f"{lab}: {pseudo_json}")
    return (out + f"<h3>Labelled file</h3>{summary_html(summary(coco, skipped_count(pseudo_path)))}"
            f"<h3>Confidence histogram</h3>{hist}"
            f"<h3>Least-confident masks ({shown} of {len(coco['annotations'])})</h3>{cards}")


def default_out(params_path: str | Path) -> Path:
    """``review.html`` beside the paper table's files (dvc.yaml's paper_table outs), else beside params.yaml."""
    base = Path(params_path).resolve().parent
    rows_json = StageOutputs(base).named(TABLE_STAGE, "paper_table.json")
    return base / (Path(rows_json).parent if rows_json else Path()) / "review.html"


def build_repro_page(params_path: str | Path = "params.yaml", num: int = DEFAULT_NUM) -> tuple[str, list[str]]:
    """The review page of the run in ``params_path``'s folder (its dvc.yaml); returns ``(html, missing inputs)``."""
    run = _Run(params_path)
    body = "<h2>Paper table</h2>" + paper_table_html(run)
    body += "".join(labeler_html(run, lab, num) for lab in run.params.table.labelers)
    if run.missing:
        items = "".join(f"<li>{page.esc(m)}</li>" for m in run.missing)
        body = f'<div class="warn">Not found (stage not run yet?):<ul>{items}</ul></div>' + body
    rows_json = run.outs.named(TABLE_STAGE, "paper_table.json")
    table_json = run.at(rows_json) if rows_json else None  # its title describes the data it was computed on
    described = (json.loads(table_json.read_text())["meta"]["title"] if table_json is not None and table_json.is_file()
                 else run.params_path)
    title = f"MAL run review: {described}"
    return page.document(title, body, f"{run.params_path.resolve()}"), run.missing
