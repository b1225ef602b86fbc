"""mal.config: one typed config; every bad params case is one line naming the dotted key, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mal.config import ParamsError, load_params, parse_overrides
from mal.config.params import Params
from tests.conftest import REPO


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    msg = str(err.value)
    assert "\n" not in msg, msg  # one line
    assert msg.startswith(f"{path}: "), msg
    return msg


def test_repository_params_and_profiles_validate() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.labeler.train.lr_per_sample == pytest.approx(3.125e-5)
    for profile in sorted((REPO / "profiles").glob("*.yaml")):
        load_params(REPO / "params.yaml", profile=profile)


def test_defaults_live_in_the_models_only(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    params = load_params(tmp_path / "params.yaml")
    assert params.seed == 3 and params.model_dump() == Params(seed=3).model_dump()


def test_wrong_type_names_key_expected_and_value(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "pseudo_label:\n  batch_size: thirty-two\n")
    assert "pseudo_label.batch_size: expected a valid integer" in msg and "'thirty-two'" in msg


def test_unknown_key_is_named_with_the_known_ones(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "mask_quality:\n  num_overlay: 3\n")
    assert "mask_quality.num_overlay: unknown key (known: " in msg and "num_overlays" in msg


def test_out_of_range_and_choices(tmp_path: Path) -> None:
    assert "labeler.train.epochs: expected greater than or equal to 1, got 0" in _bad(
        tmp_path, "labeler:\n  train:\n    epochs: 0\n")
    assert "data.dataset: expected 'nuclei', 'shapes' or 'coco'" in _bad(tmp_path, "data:\n  dataset: lvis\n")
    assert "run.train_labeler.num_gpus: " in _bad(tmp_path, "run:\n  train_labeler:\n    num_gpus: many\n")


def test_a_labelers_own_train_overrides_are_checked(tmp_path: Path) -> None:
    msg = _bad(tmp_path, "labeler:\n  models:\n    v:\n      train: {epochs: 2, lr_per_sampel: 1.0}\n")
    assert "labeler.models.v.train.lr_per_sampel: unknown key (known: " in msg and "lr_per_sample" in msg
    (tmp_path / "ok.yaml").write_text("labeler:\n  train: {epochs: 9}\n  models:\n    v:\n      train: {epochs: 2}\n")
    params = load_params(tmp_path / "ok.yaml")
    assert params.labeler.train_for("v").epochs == 2 and params.labeler.train.epochs == 9


def test_yaml_1_2_reads_a_dotless_exponent_as_a_number(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("labeler:\n  train:\n    lr_per_sample: 5e-6\n")
    assert load_params(tmp_path / "params.yaml").labeler.train.lr_per_sample == pytest.approx(5e-6)


def test_overrides_merge_like_dvc_exp_run_set(tmp_path: Path) -> None:
    assert parse_overrides(["a.b=1", "c=[0, 1]", "d=x"]) == {"a": {"b": 1}, "c": [0, 1], "d": "x"}
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    params = load_params(tmp_path / "params.yaml", ["labeler.train.epochs=3", "table.seeds=[0, 2]"])
    assert params.labeler.train.epochs == 3 and params.table.seeds == [0, 2]
    with pytest.raises(ParamsError, match="labeler.train.epochs: expected a valid integer"):
        load_params(tmp_path / "params.yaml", ["labeler.train.epochs=three"])


def test_stage_and_check_script_print_one_line_before_any_work(tmp_path: Path) -> None:
    text = (REPO / "params.yaml").read_text().replace("batch_size: 32", 'batch_size: "thirty-two"', 1)
    (tmp_path / "params.yaml").write_text(text)
    for cmd in ([sys.executable, str(REPO / "scripts" / "check_params.py"), str(tmp_path / "params.yaml")],
                [sys.executable, str(REPO / "stages" / "prepare.py"), "--out", str(tmp_path / "prep"),
                 "--metrics", str(tmp_path / "m.json"), "--params", str(tmp_path / "params.yaml")]):
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "pseudo_label.batch_size: expected a valid integer" in lines[0], proc.stderr
        assert not (tmp_path / "prep").exists()


def test_docs_config_md_is_what_the_models_say() -> None:
    """docs/config.md is rendered from the models: a new key, default or description not rendered fails here."""
    from mal.config.docs import DOC, render

    assert DOC.read_text() == render(), "docs/config.md is out of date: python -m mal.config.docs"
    assert "| `pseudo_label.batch_size` |" in DOC.read_text() and "| `run.train_labeler.num_gpus` |" in DOC.read_text()
