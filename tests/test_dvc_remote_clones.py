"""Workers share results through a DVC remote: real `dvc` in real git clones at two paths, tiny profile.

Clone A runs the labeler half of the DAG and pushes outputs + run-cache to a local-directory remote
(`dvc push --run-cache` + `python -m pipeline.run_cache`, as the Prefect flow does with push=True); clone B
(another absolute path, empty .work/) runs `dvc repro --pull`, which restores those stages from the run-cache
instead of re-running them, then runs the detector half. Nothing machine-specific may reach a DVC output: an absolute
path in a prepared file would change its hash on B and defeat the cache of everything downstream.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from mal.common.profiles import apply_profile
from tests.conftest import REPO, command_runner, copy_repo, tool_env

LABELER_HALF = ("prepare", "weights", "train_labeler@vit_tiny", "pseudo_label@vit_tiny")  # weights: a dep of every labeler
GIT = ("git", "-c", "user.email=t@t", "-c", "user.name=t")


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def _clone(origin: Path, dest: Path):
    subprocess.run(["git", "clone", "-q", str(origin), str(dest)], check=True, env=tool_env())
    return command_runner(dest, tool_env(PYTHONPATH=str(dest)))


def _files_mentioning(root: Path, needle: bytes, tops: tuple[str, ...]) -> list[str]:
    hits = []
    for top in tops:
        paths = [root / top] if (root / top).is_file() else sorted((root / top).rglob("*"))
        hits += [str(p.relative_to(root)) for p in paths if p.is_file() and needle in p.read_bytes()]
    return hits


@pytest.mark.slow
def test_clone_b_restores_what_clone_a_pushed(tmp_path: Path) -> None:
    origin = copy_repo(tmp_path / "origin")
    run_o = command_runner(origin, tool_env(PYTHONPATH=str(origin)))
    apply_profile(REPO / "profiles" / "tiny.yaml", origin / "params.yaml")
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["table"]["detectors"] = params["table"]["detectors"][:1]  # one detector keeps B's half short
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_o("dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run_o(*GIT, "add", "-A")
    run_o(*GIT, "commit", "-qm", "tiny params + remote")

    a = tmp_path / "worker_a" / "clone"
    run_a = _clone(origin, a)
    out_a = run_a("dvc", "repro", *LABELER_HALF)
    assert _ran(out_a) == set(LABELER_HALF), out_a
    assert "pseudo_label: device cpu" in out_a or "pseudo_label: device cuda" in out_a  # every stage says where
    run_a("dvc", "push", "--run-cache")
    # DVC pushes the run entries but not the objects of cache: false outs (metrics): without them no clone can
    # restore the stage. pipeline.run_cache pushes every object the entries name.
    run_a("python", "-m", "pipeline.run_cache")
    lock_a = yaml.safe_load((a / "dvc.lock").read_text())["stages"]
    for stage in LABELER_HALF:
        for out in lock_a[stage]["outs"]:
            md5 = out["md5"]
            assert (tmp_path / "remote" / "files" / "md5" / md5[:2] / md5[2:]).is_file(), (stage, out["path"])

    b = tmp_path / "elsewhere" / "worker_b" / "repo"  # another absolute path, its own empty .work/
    run_b = _clone(origin, b)
    out_b = run_b("dvc", "repro", "--pull")
    ran_b = _ran(out_b)
    assert not ran_b & set(LABELER_HALF), f"B re-ran stages A pushed:\n{out_b}"
    # weights: the tiny profile leaves its params alone, so its committed dvc.lock entry matches and B pulls its outs
    assert "Pulling data for stage: 'weights'" in out_b, out_b
    for stage in LABELER_HALF[:1] + LABELER_HALF[2:]:
        assert f"Stage '{stage}' is cached - skipping run" in out_b, out_b
        assert not list((b / ".work" / "timings" / stage.split("@")[0]).glob("*.json")), stage  # script never ran
    assert {"train_detector@vit_tiny-mask_rcnn_MNv2_demo-0", "paper_table"} <= ran_b, out_b
    assert re.search(r"^train_detector vit_tiny__mask_rcnn_MNv2_demo__s0: device (cpu|cuda)", out_b, re.M), out_b
    assert "Data and pipelines are up to date." in run_b("dvc", "status")

    lock_b = yaml.safe_load((b / "dvc.lock").read_text())["stages"]
    for stage in LABELER_HALF:
        assert lock_b[stage]["outs"] == lock_a[stage]["outs"], stage
    leaks = _files_mentioning(b, str(a).encode(), ("data", "models", "metrics", "reports", "dvclive", "dvc.lock"))
    assert not leaks, f"clone A's path reached files of clone B: {leaks}"
    leaks = _files_mentioning(b, str(b).encode(), ("data", "models", "metrics", "reports", "dvclive", "dvc.lock"))
    assert not leaks, f"clone B's own absolute path in DVC outputs: {leaks}"
