"""Packaging: pyproject's dependency ranges admit requirements.txt's pins; a built wheel installs working commands."""

from __future__ import annotations

import configparser
import email.parser
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import mal

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {k: [Requirement(r) for r in v] for k, v in project.get("optional-dependencies", {}).items()}
    return [Requirement(r) for r in project["dependencies"]], extras


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_pyproject_ranges_admit_the_pins() -> None:
    deps, extras = _declared()
    pins = _pins()
    for req in deps + [r for rs in extras.values() for r in rs]:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req} excludes the pin {pins[name]}"
    assert "detectron2" not in {canonicalize_name(r.name) for r in deps}  # scripts/install_detectron2.sh


def _build_wheel(tmp: Path) -> Path:
    """Builds from a copy of pyproject.toml + mal/ so the work tree gets no build/ or egg-info."""
    src = tmp / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "mal", src / "mal", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", ".", "-w", str(tmp)]
    res = subprocess.run(cmd, cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = tmp.glob("mal-*.whl")
    return wheel


def _check_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        dist_info = next(n.split("/")[0] for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(f"{dist_info}/METADATA").decode())
        entry_points = configparser.ConfigParser()
        entry_points.read_string(z.read(f"{dist_info}/entry_points.txt").decode())
    assert meta["Version"] == mal.__version__
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    deps, extras = _declared()
    base = {(canonicalize_name(r.name), r.specifier) for r in requires if r.marker is None}
    assert base == {(canonicalize_name(r.name), r.specifier) for r in deps}
    for extra, reqs in extras.items():
        got = {canonicalize_name(r.name) for r in requires if r.marker and r.marker.evaluate({"extra": extra})}
        assert got == {canonicalize_name(r.name) for r in reqs}, extra
    assert dict(entry_points["console_scripts"]) == {"mal": "mal.__main__:main", "mal-label": "mal.pseudo.cli:main"}


@pytest.mark.slow
def test_wheel_installs_working_commands(tmp_path: Path) -> None:
    """Build the wheel, check its metadata, install it into a fresh venv and run `mal` / `mal-label` from there.

    The wheel goes in with ``--no-deps``, and the new venv finds torch, numpy & co through a ``.pth`` file naming
    this project's site-packages: CI and these machines are offline (nothing may be downloaded at test time),
    and the dependency *declarations* are checked from the wheel's METADATA instead. The new venv's own
    site-packages comes first on sys.path, so ``mal`` is the installed wheel, not the work tree or the project
    venv's editable install (whose .pth files are not processed from a .pth-added directory).
    """
    wheel = _build_wheel(tmp_path)
    _check_metadata(wheel)
    base_python = getattr(sys, "_base_executable", None) or str(Path(sys.base_prefix) / "bin" / "python3")
    venv = tmp_path / "v"
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # this venv's pip, run for the new interpreter (the venv has no pip of its own: no ensurepip, offline)
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)]
    res = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*cmd: str | Path) -> str:
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    assert run(python, "-c", "import mal; print(mal.__file__)").startswith(site)
    out = run(venv / "bin" / "mal", "--help")
    assert all(f"  {name}  " in out for name in ("label", "export", "profile"))
    assert run(venv / "bin" / "mal", "--version").strip() == f"mal {mal.__version__}"
    out = run(venv / "bin" / "mal-label", "--help")
    assert "Example::" in out and "--num-shards N --shard-index i" in out and "(default: coco-rle)" in out
