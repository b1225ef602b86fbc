"""Phase 4, the paper table: cells over seeds, bootstrap intervals (``bootstrap``) and the rendered table (``table``)."""

from mal.report.table import build_table, write_report

__all__ = ["build_table", "write_report"]
