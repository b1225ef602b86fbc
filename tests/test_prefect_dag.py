"""Unit tests of the Prefect side that need no Prefect server: DAG from DVC, outcome parsing, settings,
the workspace lock, the work-pool templates and prefect.yaml."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from mal.config.prefect import PrefectParams
from pipeline.dag import StageDag, base_name, is_gpu_stage, load_dag, parse_dot_edges, topological_order
from pipeline.dvc_runner import (
    PULLED,
    RAN,
    RESTORED,
    SKIPPED,
    DvcStageError,
    parse_outcome,
    repro_stage,
    run_dvc,
)

ROOT = Path(__file__).resolve().parents[1]
GPU_STAGES = PrefectParams().gpu_stages
DVC = str(Path(sys.executable).with_name("dvc"))
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1"}

MATRIX_DVC_YAML = """\
stages:
  prepare:
    cmd: python -c "open('a.txt', 'w').write('a')"
    outs: [a.txt]
  train_labeler:
    matrix:
      enc: ${enc}
    cmd: python -c "open('lab_${item.enc}.txt', 'w').write('${item.enc}')"
    deps: [a.txt]
    outs: ["lab_${item.enc}.txt"]
  train_detector:
    matrix:
      enc: ${enc}
      det: ${det}
    cmd: python -c "open('det_${item.enc}_${item.det}.txt', 'w').write('x')"
    deps: ["lab_${item.enc}.txt"]
    outs: ["det_${item.enc}_${item.det}.txt"]
  table:
    cmd: python -c "open('table.txt', 'w').write('t')"
    deps: [det_vit_t_r18.txt, det_vit_s_r50.txt]
    outs: [table.txt]
"""


def _dvc_repo(path: Path, dvc_yaml: str, params: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "dvc.yaml").write_text(dvc_yaml)
    (path / "params.yaml").write_text(params)
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=path, env=ENV, check=True)
    return path


def _dvc_dag(repo: Path, *targets: str) -> tuple[set[str], set[tuple[str, str]]]:
    out = subprocess.run([DVC, "dag", "--dot", *targets], cwd=repo, env=ENV, check=True,
                         capture_output=True, text=True).stdout
    return parse_dot_edges(out)


@pytest.fixture(scope="module")
def matrix_repo(tmp_path_factory) -> Path:
    return _dvc_repo(tmp_path_factory.mktemp("matrix") / "repo", MATRIX_DVC_YAML,
                     "enc: [vit_t, vit_s]\ndet: [r18, r50]\n")


def test_matrix_dag_matches_dvc_dag(matrix_repo: Path) -> None:
    dag = load_dag(matrix_repo)
    nodes, edges = _dvc_dag(matrix_repo)
    assert set(dag.stages) == nodes
    assert dag.edges() == edges
    assert "train_detector@vit_s-r50" in nodes  # DVC's matrix naming: stage@v1-v2
    order = dag.order
    for up, down in edges:
        assert order.index(up) < order.index(down)


def test_dag_is_independent_of_cwd(matrix_repo: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert set(load_dag(matrix_repo).stages) == set(load_dag(str(matrix_repo)).stages)
    assert all("dvc.yaml" not in s for s in load_dag(matrix_repo).stages)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["train_labeler@vit_t"], {"prepare", "train_labeler@vit_t"}),
        (["train_detector@vit_s-r18"], {"prepare", "train_labeler@vit_s", "train_detector@vit_s-r18"}),
        (["train_labeler"], {"prepare", "train_labeler@vit_t", "train_labeler@vit_s"}),  # matrix group
        (["table"], {"prepare", "train_labeler@vit_t", "train_labeler@vit_s", "train_detector@vit_t-r18",
                     "train_detector@vit_s-r50", "table"}),
    ],
)
def test_targets_select_upstream_like_dvc(matrix_repo: Path, targets, expected) -> None:
    dag = load_dag(matrix_repo, targets)
    assert set(dag.stages) == expected
    if "@" in targets[0] or targets[0] == "table":
        assert set(dag.stages) == _dvc_dag(matrix_repo, *targets)[0]


def test_unknown_target_is_a_clear_error(matrix_repo: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        load_dag(matrix_repo, ["nope"])


def test_real_dvc_yaml_dag_matches_dvc_dag(tmp_path: Path) -> None:
    """The project's own dvc.yaml (paper-table matrix) on a scratch copy: same stages/edges as `dvc dag`."""
    repo = _dvc_repo(tmp_path / "real", (ROOT / "dvc.yaml").read_text(), (ROOT / "params.yaml").read_text())
    dag = load_dag(repo)
    nodes, edges = _dvc_dag(repo)
    assert set(dag.stages) == nodes and dag.edges() == edges
    assert any("@" in s for s in dag.stages), "the paper table should be a matrix"
    assert any(is_gpu_stage(s, GPU_STAGES) for s in dag.stages)


def test_topological_order_and_errors() -> None:
    assert topological_order({"c": ["b"], "b": ["a"], "a": []}) == ("a", "b", "c")
    with pytest.raises(ValueError, match="cycle"):
        topological_order({"a": ["b"], "b": ["a"]})
    with pytest.raises(ValueError, match="unknown"):
        topological_order({"a": ["zz"]})
    assert StageDag(upstream={"b": ("a",), "a": ()}).order == ("a", "b")


def test_gpu_stage_names() -> None:
    assert base_name("sub/dvc.yaml:train_detector@gt-r50") == "train_detector"
    assert is_gpu_stage("train_labeler@vit_tiny", GPU_STAGES)
    assert is_gpu_stage("pseudo_label@vit_tiny", GPU_STAGES)
    assert is_gpu_stage("train_detector_gt@r18", GPU_STAGES) and is_gpu_stage("evaluate_gt@r18", GPU_STAGES)
    assert not is_gpu_stage("train_detector_gt@r18", ["train_detector"])  # patterns match whole names
    assert is_gpu_stage("train_detector_gt@r18", ["train_detector*"])
    assert not any(is_gpu_stage(s, GPU_STAGES) for s in ("prepare", "mask_quality@vit", "paper_table"))


def test_dvc_env_puts_the_workspace_first(tmp_path: Path, monkeypatch) -> None:
    from pipeline.dvc_runner import dvc_env

    monkeypatch.setenv("PYTHONPATH", "/x")
    env = dvc_env(tmp_path)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/x"]
    assert env["DVC_NO_ANALYTICS"] == "1"


def test_parse_outcome() -> None:
    assert parse_outcome("a@x-y", ["Running stage 'a@x-y':", "> cmd"]) == RAN
    assert parse_outcome("a", ["Stage 'a' didn't change, skipping"]) == SKIPPED
    assert parse_outcome("a", ["Stage 'a' is cached - skipping run, checking out outputs"]) == RESTORED
    assert parse_outcome("a", ["Pulling data for stage: 'a'", "Data and pipelines are up to date."]) == PULLED
    pull_failed = ["Pulling data for stage: 'a'", "Unable to pull data for stage: 'a'", "Running stage 'a':"]
    assert parse_outcome("a", pull_failed) == RAN
    with pytest.raises(ValueError, match="'a'"):
        parse_outcome("a", ["Stage 'b' didn't change, skipping", "Data and pipelines are up to date."])


@pytest.mark.slow
def test_repro_stage_runs_then_skips_and_serialises(tmp_path: Path) -> None:
    """Real `dvc repro --single-item` under the workspace lock: two threads at once never collide."""
    repo = _dvc_repo(tmp_path / "r", MATRIX_DVC_YAML, "enc: [vit_t, vit_s]\ndet: [r18, r50]\n")
    assert repro_stage("prepare", repo, log=lambda _: None).outcome == RAN
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(stage: str) -> None:
        try:
            results[stage] = repro_stage(stage, repo, log=lambda _: None).outcome
        except BaseException as exc:  # reported below
            errors.append(exc)

    cells = ("train_labeler@vit_t", "train_labeler@vit_s")
    threads = [threading.Thread(target=run, args=(s,)) for s in cells]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {"train_labeler@vit_t": RAN, "train_labeler@vit_s": RAN}
    assert repro_stage("train_labeler@vit_t", repo, log=lambda _: None).outcome == SKIPPED
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert {"prepare", "train_labeler@vit_t", "train_labeler@vit_s"} <= set(lock["stages"])
    with pytest.raises(DvcStageError, match="train_detector@vit_t-r18"):  # upstream output missing
        (repo / "lab_vit_t.txt").unlink()
        repro_stage("train_detector@vit_t-r18", repo, log=lambda _: None)


@pytest.mark.slow
def test_workers_share_results_through_a_dvc_remote(tmp_path: Path) -> None:
    """The cluster story with real DVC: worker A runs + pushes (outs and run-cache); worker B's fresh
    clone restores the stage from the run-cache, and with A's dvc.lock just pulls the outputs."""
    params = "enc: [vit_t, vit_s]\ndet: [r18, r50]\n"
    remote = tmp_path / "remote"
    remote.mkdir()
    quiet = lambda _: None  # noqa: E731
    a = _dvc_repo(tmp_path / "a", MATRIX_DVC_YAML, params)
    run_dvc(["remote", "add", "-d", "shared", str(remote)], a, log=quiet)
    assert repro_stage("prepare", a, log=quiet).outcome == RAN
    assert repro_stage("train_labeler@vit_t", a, log=quiet).outcome == RAN
    run_dvc(["push", "--run-cache"], a, log=quiet)

    b = _dvc_repo(tmp_path / "b", MATRIX_DVC_YAML, params)
    run_dvc(["remote", "add", "-d", "shared", str(remote)], b, log=quiet)
    assert repro_stage("prepare", b, log=quiet, pull=True).outcome == RAN  # no deps: never run-cached
    assert repro_stage("train_labeler@vit_t", b, log=quiet, pull=True).outcome == RESTORED
    assert (b / "lab_vit_t.txt").read_text() == "vit_t"

    (b / "dvc.lock").write_text((a / "dvc.lock").read_text())  # as if A's dvc.lock was committed
    (b / "lab_vit_t.txt").unlink()
    assert repro_stage("train_labeler@vit_t", b, log=quiet, pull=True).outcome == PULLED
    assert (b / "lab_vit_t.txt").read_text() == "vit_t"


def test_settings_from_params(tmp_path: Path) -> None:
    from mal.common.profiles import profile_path
    from pipeline.flow import load_settings

    p = tmp_path / "params.yaml"
    p.write_text("seed: 0\n")
    assert load_settings(p) == PrefectParams().model_dump()  # the defaults: one definition
    p.write_text("prefect:\n  retries: 3\n  gpu_tag: gpu\n")
    assert load_settings(p)["retries"] == 3 and load_settings(p)["gpu_tag"] == "gpu"
    p.write_text("prefect:\n  retriez: 3\n")
    with pytest.raises(ValueError, match="retriez"):
        load_settings(p)
    with pytest.raises(ValueError, match="missing.yaml"):
        load_settings(tmp_path / "missing.yaml")
    assert profile_path("paper", tmp_path) == tmp_path / "profiles" / "paper.yaml"
    assert profile_path("my/p.yaml", tmp_path) == tmp_path / "my" / "p.yaml"
    assert profile_path("/abs/p.yaml", tmp_path) == Path("/abs/p.yaml")


def test_status_is_clean() -> None:
    from pipeline.flow import _status_is_clean

    assert _status_is_clean(["{}"]) and _status_is_clean(["{}", "WARNING: something"])
    assert not _status_is_clean(['{"prepare": [{"changed deps": {"params.yaml": {"data": "modified"}}}]}'])
    assert not _status_is_clean([]) and not _status_is_clean(["ERROR: no json"])


def test_prefect_yaml_deployments() -> None:
    cfg = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in cfg["deployments"]}
    assert set(deps) == {"mal-pipeline", "mal-pipeline-local"}
    for d in deps.values():
        assert d["entrypoint"] == "pipeline/flow.py:mal_pipeline"
    gpu = deps["mal-pipeline"]["work_pool"]
    assert gpu["job_variables"]["gpu_count"] >= 1 and "image" in gpu["job_variables"]
    steps = [next(iter(s)) for s in cfg["pull"]]
    assert steps == ["prefect.deployments.steps.git_clone", "prefect.deployments.steps.set_working_directory"]


@pytest.mark.parametrize("name", ["kubernetes-gpu.json", "docker-gpu.json"])
def test_work_pool_templates_expose_gpu_count(name: str) -> None:
    tpl = json.loads((ROOT / "pipeline" / "work_pools" / name).read_text())
    variables = tpl["variables"]["properties"]
    used = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", json.dumps(tpl["job_configuration"])))
    assert used <= set(variables), used - set(variables)
    assert {"image", "gpu_count", "env"} <= used
    assert variables["gpu_count"]["type"] == "integer"


def _render(name: str, job_variables: dict) -> dict:
    """What a worker does with a base job template: defaults + job variables into job_configuration."""
    from prefect.utilities.templating import apply_values

    tpl = json.loads((ROOT / "pipeline" / "work_pools" / name).read_text())
    values = {k: v["default"] for k, v in tpl["variables"]["properties"].items() if "default" in v}
    return apply_values(tpl["job_configuration"], {**values, **job_variables})


def test_work_pool_templates_render_gpus() -> None:
    k8s = _render("kubernetes-gpu.json", {"image": "reg/mal:gpu", "gpu_count": 2})
    container = k8s["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg/mal:gpu"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    docker = _render("docker-gpu.json", {"image": "reg/mal:gpu", "gpu_count": 4})
    assert docker["image"] == "reg/mal:gpu"
    assert docker["container_create_kwargs"]["device_requests"][0]["count"] == 4


def test_flow_module_imports_by_path(tmp_path: Path) -> None:
    """The worker loads `pipeline/flow.py` by path; it must find the `pipeline` package itself."""
    code = ("from prefect.flows import load_flow_from_entrypoint as L; "
            f"f = L({str(ROOT / 'pipeline' / 'flow.py')!r} + ':mal_pipeline'); print(f.name)")
    env = {**ENV, "PREFECT_HOME": str(tmp_path), "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "mal-pipeline"


def test_gpu_deployment_takes_a_whole_node_as_the_paper_profile_says() -> None:
    """The GPU deployment's pods get `prefect.gpus_per_worker` GPUs (paper profile): the zoo's 8, so
    train_detector runs the 3x schedule unscaled, and each GPU stage holds that many `mal-gpu` slots."""
    from mal.config import load_params
    from pipeline.flow import load_settings

    paper = load_params(ROOT / "params.yaml", profile="paper").model_dump()
    deps = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    gpu_count = deps["mal-pipeline"]["work_pool"]["job_variables"]["gpu_count"]
    world = paper["detector"]["opts"]["SOLVER"]["REFERENCE_WORLD_SIZE"]
    assert gpu_count == paper["prefect"]["gpus_per_worker"] == world == 8
    k8s = _render("kubernetes-gpu.json", {"image": "reg/mal:gpu", "gpu_count": gpu_count})
    assert k8s["job_manifest"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": 8}
    assert load_settings(ROOT / "params.yaml")["gpus_per_worker"] == 1  # the CPU demo: one slot per stage
