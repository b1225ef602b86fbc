"""Phase 4, the paper table: cells over seeds and their rows (``table``), bootstrap intervals (``bootstrap``),
every rendering from the rows (``render``: Markdown, cells for the review page) and README's results block
(``readme``)."""

from mal.report.table import Table, TableInputs, build_table

__all__ = ["Table", "TableInputs", "build_table"]
