"""Shared fixtures: a tiny synthetic dataset and a throw-away copy of the repository."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

import mal.common.runtime  # noqa: F401  (before any test imports torch: OpenMP's wait policy, as for the stages)

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for running the project's CLIs (dvc, prefect, python) from tests, offline."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", MPLBACKEND="Agg")
    env.update(extra)
    return env


def command_runner(cwd: Path, env: dict[str, str]) -> Callable[..., str]:
    """``run(*cmd) -> stdout`` in ``cwd``; a failing command fails the test with its output's tail."""

    def run(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc.stdout

    return run


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of this repo to ``dest`` and commit them
    in a fresh git repo: what a fresh clone of the working tree looks like (no data, no caches)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = tool_env()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True, env=env)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True, env=env)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True, env=env)
    return dest


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny prepared shapes set: 6 train / 3 val images of 96 px."""
    from mal.datasets.shapes import build_shapes

    out = tmp_path_factory.mktemp("shapes")
    build_shapes(out, num_train=6, num_val=3, image_size=96, min_objects=2, max_objects=4, seed=1)
    return out


def tiny_shapes_records(out: Path, num_val: int) -> tuple[Path, list, list]:
    """A 2-image shapes set in ``out`` with ``num_val`` val images: ``(out, <= 4 train box records, val records)``,
    the labeler tests' tiny data."""
    from mal.common.boxes import is_trainable
    from mal.common.coco_io import load_coco
    from mal.datasets.shapes import build_shapes
    from mal.labeler.data import box_records

    build_shapes(out, num_train=2, num_val=num_val, image_size=48, min_objects=2, max_objects=3, seed=0)
    train_json, val_json = out / "train_boxes.json", out / "val_gt.json"
    train = box_records(load_coco(train_json)[0], train_json, lambda a: is_trainable(a, 16, 2))[:4]
    return out, train, box_records(load_coco(val_json)[0], val_json)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server or a process group the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_stage(name: str) -> ModuleType:
    """The stage script ``stages/<name>.py`` as a fresh module (its ``main(argv)`` is what DVC runs)."""
    spec = importlib.util.spec_from_file_location(f"_stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
