"""Every rendering of the paper table comes from its rows: Markdown (tabulate) and the review page's HTML show
the same cells, and a rows file of the wrong shape is one line naming the file and the field."""

from __future__ import annotations

import html
import json
import re

import pytest

from mal.report.render import comparison_cells, markdown, paper_cells
from mal.report.table import Table
from mal.review.repro import table_html
from tests.conftest import REPO


def _table() -> Table:
    row = {"detector": "det", "seeds": 2, "mask_AP": 40.04, "mask_AP_sd": 1.0, "mask_AP_lo": 37.0,
           "mask_AP_hi": 43.0, "mask_AP50": 70.0, "mask_AP75": 35.0, "box_AP": 42.0, "box_AP_sd": None}
    rows = [{**row, "masks": "GT (human)", "retention_pct": 100.0, "retention_lo": 100.0, "retention_hi": 100.0,
             "pseudo_mIoU": None},
            {**row, "masks": "MAL a<b>", "mask_AP": 30.0, "retention_pct": 74.96, "retention_lo": 70.0,
             "retention_hi": 80.0, "pseudo_mIoU": 0.8125},
            {**row, "masks": "MAL c", "mask_AP": 29.0, "retention_pct": None, "retention_lo": None,
             "retention_hi": None, "pseudo_mIoU": 0.5}]
    pairs = [{"detector": "det", "a": "a<b>", "b": "c", "diff": 1.0, "lo": -0.5, "hi": 2.5, "verdict": "x"}]
    meta = {"title": "tiny <run>", "level": 0.9, "resamples": 100, "resample_seeds": False, "seeds": [0, 1],
            "val_images": 3, "val_instances": 6, "detectable_diff_AP": 1.5, "detectable_diff_AP_max": 1.5}
    return Table(rows, pairs, meta)


def _md_rows(md: str) -> list[list[str]]:
    """The cells of every pipe-table row (separator rows left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()
            if line.startswith("|") and not re.fullmatch(r"[|:\- ]+", line)]


def test_markdown_and_html_show_the_same_cells() -> None:
    table = _table()
    headers, rows = paper_cells(table)
    assert rows[1][3] == "30.0 ± 1.0 [37.0, 43.0]" and rows[1][7] == "75.0 [70.0, 80.0]" and rows[1][8] == "0.812"
    assert rows[0][6] == "42.0 ± –" and rows[2][7] == "– [–, –]"  # no sd (one seed), no retention (GT AP 0)
    assert headers[3] == "mask AP (± sd) [90 %]"
    md = markdown(table)
    assert md.startswith("## tiny <run>\n\n") and "90 % bootstrap interval" in md and "draws of the val images (" in md
    pair_headers, pairs = comparison_cells(table)
    assert _md_rows(md) == [headers, *rows, pair_headers, *pairs]
    page = table_html(table)
    cells = [html.unescape(c) for c in re.findall(r"<t[dh](?: class=l)?>(.*?)</t[dh]>", page)]
    assert cells == [*headers, *(c for r in rows for c in r), *pair_headers, *(c for r in pairs for c in r)]
    assert "a&lt;b&gt;" in page and "<b>" not in page  # names are text
    assert pairs[0][3] == "not distinguishable"  # [-0.5, 2.5] holds 0


def test_committed_markdown_is_the_rendering_of_the_committed_rows() -> None:
    rows = Table.from_json(json.loads((REPO / "reports" / "paper_table.json").read_text()))
    assert _md_rows(markdown(rows)) == _md_rows((REPO / "reports" / "paper_table.md").read_text())


@pytest.mark.parametrize("data, message", [
    ([], "expected an object with meta, rows, comparisons"),
    ({"meta": {}, "rows": []}, "missing key 'comparisons'"),
    ({"meta": {}, "rows": [{"detector": "d"}], "comparisons": []}, r"rows\[0\]: missing field 'masks'"),
])
def test_a_bad_rows_file_is_named(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^rows.json: {message}"):
        Table.from_json(data, "rows.json")
