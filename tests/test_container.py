"""The cluster image and its Kubernetes job template (docs/cluster.md).

No Docker daemon and no GPU here: the Dockerfile is linted with hadolint (pinned in requirements.txt), not built.
The template is rendered the way a Prefect worker renders it (prefect's own `apply_values`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.mounts import MOUNTS, link_mounts

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "pipeline" / "work_pools" / "kubernetes-gpu.json"
PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


def _hadolint() -> str:
    exe = Path(sys.executable).with_name("hadolint")
    return str(exe) if exe.exists() else (shutil.which("hadolint") or "hadolint")


def test_dockerfile_passes_hadolint() -> None:
    res = subprocess.run([_hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # every inline ignore carries a reason on the comment lines right above it
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], line


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(kv.split("=", 1) for kv in line[4:].split()))
    return env


def test_dockerfile_sets_the_make_environment_and_runs_the_pinned_installers() -> None:
    text = (ROOT / "Dockerfile").read_text()
    env = _dockerfile_env()
    assert {"DVC_NO_ANALYTICS": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "MPLBACKEND": "Agg"}.items() <= env.items()
    assert "bash scripts/install.sh" in text and "bash scripts/install_detectron2.sh" in text
    assert re.search(r"^USER 1000", text, re.M) and not re.search(r"^ENTRYPOINT", text, re.M)  # worker args run as given


def _render(job_variables: dict) -> dict:
    """Defaults + job variables into job_configuration, as a Prefect worker does."""
    from prefect.utilities.templating import apply_values

    tpl = json.loads(TEMPLATE.read_text())
    values = {k: v["default"] for k, v in tpl["variables"]["properties"].items() if "default" in v}
    return apply_values(tpl["job_configuration"], {**values, **job_variables})


def test_kubernetes_template_has_shm_volumes_and_gpus() -> None:
    tpl = json.loads(TEMPLATE.read_text())
    props = tpl["variables"]["properties"]
    used = set(PLACEHOLDER.findall(json.dumps(tpl["job_configuration"])))
    for var in ("shm_size", "datasets_claim", "weights_claim", "work_claim", "gpu_count"):
        assert var in used and "default" in props[var], var
    pod = _render({"image": "reg/mal:gpu", "gpu_count": 2, "shm_size": "32Gi"})["job_manifest"]["spec"]["template"]["spec"]
    assert "{{" not in json.dumps(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert volumes["datasets"]["persistentVolumeClaim"] == {"claimName": "mal-datasets", "readOnly": True}
    assert volumes["work"]["persistentVolumeClaim"] == {"claimName": "mal-work"}
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 2}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert set(mounts) == set(volumes) and mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["datasets"].get("readOnly") and mounts["weights"].get("readOnly") and not mounts["work"].get("readOnly")
    assert pod["securityContext"]["fsGroup"] == 1000  # the image's uid 1000 can write the PVC
    # the image tells the flow where the volumes are; the flow links them into the clone
    env = _dockerfile_env()
    paths = {mounts[name]["mountPath"] for name in ("datasets", "weights", "work")}
    assert {env[var] for var in MOUNTS.values()} == paths


def test_prefect_yaml_job_variables_exist_in_the_pool_templates() -> None:
    cfg = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    gpu = next(d for d in cfg["deployments"] if d["name"] == "mal-pipeline")
    for name in ("kubernetes-gpu.json", "docker-gpu.json"):
        props = json.loads((ROOT / "pipeline" / "work_pools" / name).read_text())["variables"]["properties"]
        assert set(gpu["work_pool"]["job_variables"]) <= set(props), name


def test_mounted_folders_are_linked_into_the_clone(tmp_path: Path) -> None:
    repo, mnt = tmp_path / "clone", tmp_path / "mnt"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/paper-run\n")
    for sub in ("datasets", "weights", "work"):
        (mnt / sub).mkdir(parents=True)
    env = {"MAL_DATASETS_DIR": str(mnt / "datasets"), "MAL_WEIGHTS_DIR": str(mnt / "weights"),
           "MAL_WORK_DIR": str(mnt / "work")}
    assert set(link_mounts(repo, env)) == {"datasets", "weights", ".work"}
    assert (repo / "datasets").resolve() == mnt / "datasets"
    assert (repo / ".work").resolve() == mnt / "work" / "paper-run"  # per branch: a new pod resumes there
    (repo / ".work" / "state.pt").write_text("x")
    assert link_mounts(repo, env)[".work"].startswith("->")  # a re-run re-links, the state stays
    assert (mnt / "work" / "paper-run" / "state.pt").read_text() == "x"
    assert link_mounts(repo, {"MAL_DATASETS_DIR": str(tmp_path / "absent")}) == {}  # no volume: untouched
