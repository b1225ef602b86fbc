"""Pretrained encoder weights built offline from pinned registry packages (see docs/weights.md)."""
