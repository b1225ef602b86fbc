"""The whole DAG with real `dvc` in a real git repo, on the tiny profile: repro, no-op repro, metrics diff."""

from __future__ import annotations

import csv
import json
import re
import subprocess

import pytest
import yaml

from mal.common.profiles import apply_profile
from tests.conftest import REPO, command_runner, copy_repo, tool_env


@pytest.mark.slow
def test_dvc_repro_whole_dag_then_noop_then_metrics_diff(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = tool_env(PYTHONPATH=str(repo))
    run = command_runner(repo, env)

    apply_profile(REPO / "profiles" / "tiny.yaml", repo / "params.yaml")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    first = run("dvc", "repro")
    stages = run("dvc", "stage", "list", "--name-only").split()
    for stage in stages:
        assert f"Running stage '{stage}'" in first, stage
    table = (repo / "reports" / "paper_table.md").read_text()
    for det in params["table"]["detectors"]:
        for masks in ["GT (human)", *(f"MAL {lab}" for lab in params["table"]["labelers"])]:
            assert re.search(rf"^\| {det} +\| {re.escape(masks)} +\|", table, re.M)  # tabulate pads cells
    csv_rows = list(csv.DictReader((repo / "reports" / "paper_table.csv").read_text().splitlines()))
    assert len(csv_rows) == len(params["table"]["detectors"]) * (1 + len(params["table"]["labelers"]))
    # every number a cell has is filled (sd needs 2 seeds; retention needs a GT detector with AP > 0)
    filled = ("seeds", "mask_AP", "mask_AP_lo", "mask_AP_hi", "mask_AP50", "mask_AP75", "box_AP")
    assert all(row[k] != "" for row in csv_rows for k in filled), csv_rows
    assert all(row["seeds"] == str(len(params["table"]["seeds"])) for row in csv_rows)

    second = run("dvc", "repro")
    assert "Running stage" not in second
    assert "Data and pipelines are up to date." in run("dvc", "status")

    # A parameter change re-runs exactly the stages downstream of it; metrics diff compares with HEAD.
    run("git", "add", "-A")
    run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny run")

    # A fresh clone at another path reproduces every tracked file byte for byte: no timing in a metric or a
    # DVC output, no absolute path, so `git status` stays clean and dvc.lock is unchanged.
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True, env=env)
    proc = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, env=env, capture_output=True, text=True)
    assert status.stdout == "", f"an identical re-run changed tracked files:\n{status.stdout}"
    params["pseudo_label"]["threshold"] = 0.2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    third = run("dvc", "repro")
    ran = {line.split("'")[1] for line in third.splitlines() if line.startswith("Running stage")}
    assert not any(s.startswith(("prepare", "train_labeler", "train_detector_gt", "evaluate_gt")) for s in ran), ran
    assert {f"pseudo_label@{lab}" for lab in params["table"]["labelers"]} <= ran
    assert "pseudo_label.threshold" in run("dvc", "params", "diff")
    diff = json.loads(run("dvc", "metrics", "diff", "--json") or "{}")
    assert any("pseudo_label" in path or "mask_quality" in path for path in diff), diff

    # A new seed trains and evaluates only its own cells (a DVC matrix entry each); the table re-runs.
    params["table"]["seeds"] = [*params["table"]["seeds"], 7]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fourth = run("dvc", "repro")
    ran = {line.split("'")[1] for line in fourth.splitlines() if line.startswith("Running stage")}
    cells = [(masks, det) for det in params["table"]["detectors"] for masks in ["gt", *params["table"]["labelers"]]]
    expected = {"paper_table"} | {
        f"{stage}_gt@{det}-7" if masks == "gt" else f"{stage}@{masks}-{det}-7"
        for masks, det in cells for stage in ("train_detector", "evaluate")}
    assert ran == expected, ran
    assert re.search(r"^\|[^|]+\|[^|]+\| +2 \|", (repo / "reports" / "paper_table.md").read_text(), re.M)  # 2 seeds now
