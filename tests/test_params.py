"""Reading params files: a YAML-1.1 string where a number was meant is a clear error at load time."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mal.common.params import load_params
from tests.conftest import REPO


def test_repository_params_and_profiles_load():
    assert load_params(REPO / "params.yaml")["labeler"]["train"]["lr_per_sample"] == pytest.approx(3.125e-5)


def test_dotless_exponent_is_named_with_its_fix(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("labeler:\n  train:\n    lr_per_sample: 5e-6\n    crf_clamp: [0.1, 1e0]\n  name: run1e5x\n")
    with pytest.raises(ValueError) as err:
        load_params(path)
    msg = str(err.value)
    assert str(path) in msg and "labeler.train.lr_per_sample: '5e-6'" in msg and "write 5.0e-6" in msg
    assert "2 such value(s)" in msg and "labeler.train.crf_clamp[1]" in msg


def test_numbers_and_ordinary_strings_pass(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("a: 5.0e-6\nb: '1.5'\nc: run_1e5\nd: [1, 2.5e+3]\ne: null\n")
    assert load_params(path) == {"a": 5e-6, "b": "1.5", "c": "run_1e5", "d": [1, 2500.0], "e": None}


def test_stage_reports_the_bad_value_before_any_work(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("lr_per_sample: 3.125e-5", "lr_per_sample: 3e-5")
    assert "lr_per_sample: 3e-5" in text
    (tmp_path / "params.yaml").write_text(text)
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/train_labeler.py"), "--params", str(tmp_path / "params.yaml"),
         "--labeler", "vit_tiny"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "labeler.train.lr_per_sample: '3e-5' is read as a string" in proc.stderr
    assert "write 3.0e-5" in proc.stderr


def test_check_params_script_prints_one_line_naming_the_key(tmp_path) -> None:
    """`make repro`'s pre-check: a bad table.seeds is one line on stderr and exit 1; a good file passes quietly."""
    import subprocess
    import sys

    from tests.conftest import REPO

    bad = tmp_path / "params.yaml"
    bad.write_text("table:\n  labelers: [a]\n  seeds: [0, 1, 0]\n")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "check_params.py"), str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: table.seeds: duplicate seeds [0] in [0, 1, 0] (each seed trains one detector per cell)"]
    ok = subprocess.run([sys.executable, str(REPO / "scripts" / "check_params.py"), str(REPO / "params.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
