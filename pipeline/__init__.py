"""Prefect orchestration of the DVC pipeline (see docs/prefect.md)."""
