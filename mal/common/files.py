"""Files: atomic writes and content fingerprints (the only implementations in the project).

Every output a stage or a resumable run writes goes through :func:`atomic_path`: readers (DVC, a resumed
run, a concurrent stage) see either the old file or the complete new one, never a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` (``os.replace``), else it is removed.

    The temp file has ``path``'s own name, inside a fresh hidden folder in the same directory: writers that
    pick the format from the suffix (``cv2.imwrite``, ``savefig``) work, the rename is atomic, and writers
    that record the file name (``torch.save`` names its archive after it) write the same bytes on every run.
    ``mode``: the written file's permissions (ordinary shared files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_dir.rmdir()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = None) -> None:
    with atomic_path(path) as tmp, tmp.open("w") as f:
        json.dump(obj, f, indent=indent)


def save_png_atomic(path: str | Path, rgb: np.ndarray) -> None:
    """Write an ``H x W x 3`` uint8 RGB image to a ``.png`` path."""
    import cv2  # only the overlay writers need OpenCV

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{path}: could not write PNG")


def fingerprint(*objs: Any) -> str:
    """16-hex-digit sha256 of the objects as canonical JSON (sorted keys; non-JSON values via ``str``)."""
    return hashlib.sha256(json.dumps(objs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
