"""Review page for a whole ``dvc repro``: every path comes from params.yaml, read relative to its folder.

Sections: the paper table; per labeler its training curves (dvclive TSVs), what the labeller wrote, the
mask quality (overall, S/M/L and per-class mIoU with the box/GrabCut baselines, the confidence check), the
score histogram and the least-confident masks. A stage that has not run yet leaves a named gap, not an error.
"""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path
from typing import Any

from mal.common.params import load_params
from mal.common.paths import detector_cell, detector_metrics, image_roots, labeler_paths, templated
from mal.review import page
from mal.review.labelled import cards_html, load_labelled, score_histogram_html, skipped_count, summary, summary_html

DEFAULT_NUM = 12
SIZES = ("miou", "miou_small", "miou_medium", "miou_large")


class _Run:
    """params.yaml plus the files it names, resolved against the params file's folder; records what is missing."""

    def __init__(self, params_path: str | Path):
        self.params_path = Path(params_path)
        self.params = load_params(self.params_path)
        self.base = self.params_path.resolve().parent
        self.missing: list[str] = []

    def at(self, path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else self.base / path

    def exists(self, path: str | Path, what: str) -> Path | None:
        """The resolved path, or None after noting ``what`` as missing."""
        p = self.at(path)
        if p.exists():
            return p
        self.missing.append(f"{path} ({what})")
        return None

    def json(self, path: str | Path, what: str) -> dict[str, Any] | None:
        p = self.exists(path, what)
        return json.loads(p.read_text()) if p is not None else None


def paper_table_html(run: _Run) -> str:
    """``<table.out_dir>/paper_table.md`` (or .csv); before ``report`` has run, the detector metrics there are."""
    out_dir = Path(run.params["table"]["out_dir"])
    md, csv_path = run.at(out_dir / "paper_table.md"), run.at(out_dir / "paper_table.csv")
    if md.is_file():
        return page.markdown_table(md.read_text())
    if csv_path.is_file():
        rows = list(csv.reader(csv_path.read_text().splitlines()))
        return page.table(rows[0], [[_num(v) for v in r] for r in rows[1:]], cls="paper", left=2)
    run.missing.append(f"{out_dir / 'paper_table.md'} (stage report)")
    rows = []
    table = run.params["table"]
    for det, seed in itertools.product(table["detectors"], table["seeds"]):
        for masks in ["gt", *table["labelers"]]:
            path = detector_metrics(run.params, masks, det, seed)
            m = run.json(path, f"stage evaluate {detector_cell(masks, det, seed)}")
            if m is not None:
                rows.append([det, masks, seed, *(m.get(k) for k in ("mask_AP", "mask_AP50", "mask_AP75", "box_AP"))])
    if not rows:
        return '<p class="warn">No paper table and no detector metrics yet.</p>'
    return page.table(["detector", "masks", "seed", "mask AP", "AP50", "AP75", "box AP"], rows, cls="paper", left=3)


def _num(v: str) -> Any:
    try:
        return float(v)
    except ValueError:
        return v or None


def curves_html(run: _Run, lab: str) -> str:
    """One small plot per dvclive TSV of the labeler's training (``step`` vs the value)."""
    tsv_dir = labeler_paths(run.params, lab)["plots_dir"] / "plots" / "metrics"
    found = run.exists(tsv_dir, f"stage train_labeler {lab}: curves")
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
    p = run.params
    out = f"<h2>Labeler {page.esc(lab)}</h2><h3>Training curves</h3>{curves_html(run, lab)}"
    labelled = run.json(templated(p["pseudo_label"], ("metrics",), lab)["metrics"], f"stage pseudo_label {lab}")
    if labelled is not None:
        keys = ("boxes_in", "masks_out", "labeler_masks", "box_fallback", "skipped", "boxes_per_s")
        out += "<h3>Labelling</h3>" + page.table(["", "value"], [(k, labelled.get(k)) for k in keys if k in labelled])
    mq = templated(p["mask_quality"], ("metrics", "pseudo_json", "gt_json"), lab)
    q = run.json(mq["metrics"], f"stage mask_quality {lab}")
    if q is not None:
        out += "<h3>Mask quality (pseudo masks vs GT, train boxes)</h3>" + quality_html(q)
    pseudo_path = run.exists(mq["pseudo_json"], f"stage pseudo_label {lab}: labelled file")
    if pseudo_path is None:
        return out
    coco = load_labelled(pseudo_path)
    gt_path = run.at(mq["gt_json"])
    gt = load_labelled(gt_path, "GT COCO file") if gt_path.is_file() else None
    cards, shown = cards_html(coco, pseudo_path, run.at(image_roots(p["data"])["train"]), gt, num)
    hist = score_histogram_html(coco, f"{lab}: {mq['pseudo_json']}")
    return (out + f"<h3>Labelled file</h3>{summary_html(summary(coco, skipped_count(pseudo_path)))}"
            f"<h3>Confidence histogram</h3>{hist}"
            f"<h3>Least-confident masks ({shown} of {len(coco['annotations'])})</h3>{cards}")


def build_repro_page(params_path: str | Path = "params.yaml", num: int = DEFAULT_NUM) -> tuple[str, list[str]]:
    """The review page of the run ``params_path`` describes; returns ``(html, missing inputs)``."""
    run = _Run(params_path)
    table = run.params["table"]
    body = "<h2>Paper table</h2>" + paper_table_html(run)
    body += "".join(labeler_html(run, lab, num) for lab in table["labelers"])
    if run.missing:
        items = "".join(f"<li>{page.esc(m)}</li>" for m in run.missing)
        body = f'<div class="warn">Not found (stage not run yet?):<ul>{items}</ul></div>' + body
    table_json = run.at(Path(table["out_dir"]) / "paper_table.json")  # its title describes the data it was computed on
    described = json.loads(table_json.read_text())["meta"]["title"] if table_json.is_file() else run.params_path
    title = f"MAL run review: {described}"
    return page.document(title, body, f"{run.params_path.resolve()}"), run.missing
