"""mal.common.files: atomic writes leave the old file or the new one, never a partial or a temp file."""

from __future__ import annotations

import json

import pytest

from mal.common.files import atomic_path, file_sha256, fingerprint, write_json_atomic


def test_atomic_path_replaces_on_success_and_cleans_up_on_failure(tmp_path):
    out = tmp_path / "sub" / "a.json"
    write_json_atomic(out, {"x": 1})
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("partial")
        raise RuntimeError
    assert json.loads(out.read_text()) == {"x": 1}
    assert [p.name for p in out.parent.iterdir()] == ["a.json"]
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_fingerprint_is_stable_and_order_sensitive(tmp_path):
    assert fingerprint({"a": 1, "b": 2}, 3) == fingerprint({"b": 2, "a": 1}, 3) != fingerprint(3, {"a": 1, "b": 2})
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_torch_save_through_atomic_path_is_byte_identical(tmp_path):
    """torch.save names its archive after the file: an atomic write must not leak a random temp name into
    the bytes (an identical re-run has to give an identical DVC output)."""
    import torch

    state = {"w": torch.arange(6.0).reshape(2, 3)}
    outs = [tmp_path / run / "checkpoint.pt" for run in ("a", "b")]
    for out in outs:
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert sorted(p.name for p in outs[0].parent.iterdir()) == ["checkpoint.pt"]
