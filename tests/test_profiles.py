"""`python -m mal profile`: overrides merge recursively and comments survive."""

from __future__ import annotations

import pytest
import yaml

from mal.common.profiles import apply_profile, merge


def test_merge_is_recursive_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [9]}, "e": 5}) == {"a": {"b": 1, "c": [9]}, "d": 3, "e": 5}


def test_apply_profile_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# top comment\ndata:\n  dataset: nuclei  # default\n  out_dir: data/prepared\nseed: 0\n")
    (tmp_path / "p.yaml").write_text("data: {dataset: shapes}\nseed: 3\n")
    apply_profile(tmp_path / "p.yaml", params)
    text = params.read_text()
    assert "# top comment" in text and "# default" in text
    assert yaml.safe_load(text) == {"data": {"dataset": "shapes", "out_dir": "data/prepared"}, "seed": 3}


def test_unknown_profile_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"profiles/nope.yaml: profile not found"):
        apply_profile("nope", tmp_path / "params.yaml")
