"""`python -m mal profile`: overrides merge recursively and comments survive."""

from __future__ import annotations

import pytest
import yaml

from mal.common.profiles import apply_profile
from mal.config import ParamsError
from mal.config.load import merge


def test_merge_is_recursive_and_replaces_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 3}
    assert merge(base, {"a": {"c": [9]}, "e": 5}) == {"a": {"b": 1, "c": [9]}, "d": 3, "e": 5}


def test_apply_profile_keeps_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# top comment\ndata:\n  dataset: nuclei  # default\n  min_train_box_side: 2\nseed: 0\n")
    (tmp_path / "p.yaml").write_text("data: {dataset: shapes}\nseed: 3\n")
    apply_profile(tmp_path / "p.yaml", params)
    text = params.read_text()
    assert "# top comment" in text and "# default" in text
    assert yaml.safe_load(text) == {"data": {"dataset": "shapes", "min_train_box_side": 2}, "seed": 3}


def test_a_profile_with_a_bad_key_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\n")
    (tmp_path / "p.yaml").write_text("data: {datset: shapes}\n")
    with pytest.raises(ParamsError, match="data.datset: unknown key"):
        apply_profile(tmp_path / "p.yaml", params)
    assert params.read_text() == "seed: 0\n"


def test_unknown_profile_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"profiles/nope.yaml: profile not found"):
        apply_profile("nope", tmp_path / "params.yaml")
