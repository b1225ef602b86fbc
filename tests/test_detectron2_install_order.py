"""scripts/install_detectron2.sh: a compiled detectron2 wins over the pure-Python copy whenever present.

The scene: the script's pure install (marker + `.pth`) is in a throw-away venv, then a detectron2 with a `_C`
extension is installed the way `pip install -e detectron2` does it (setuptools' own editable wheel: a meta-path
finder, which Python consults only after every sys.path entry, so the `.pth` shadows it). The `_C` file is not
loadable: the script must find it without importing it.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install_detectron2.sh"
SO_NAME = "_C" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def _venv(tmp: Path) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True)
    py = tmp / "venv" / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return py, Path(site)


def _pure_install_state(venv: Path, site: Path) -> Path:
    """What a finished pure install leaves (the script's own files: package dir, marker, .pth)."""
    target = venv / "detectron2-pure"
    (target / "detectron2").mkdir(parents=True)
    (target / "detectron2" / "__init__.py").write_text("KIND = 'pure'\n")
    (target / "detectron2" / "_C.py").write_text("raise ImportError('not available')\n")
    (target / ".mal-detectron2-0.7.2").write_text("pure\n")
    (site / "mal-detectron2-pure.pth").write_text(f"{target}\n")
    return target


def _editable_compiled(tmp: Path, site: Path) -> Path:
    """`pip install -e` of a flat-layout detectron2 with a built `_C`: setuptools builds the editable wheel,
    we unpack it into site-packages (what installing a pure-Python wheel is)."""
    proj = tmp / "detectron2-src"
    (proj / "detectron2").mkdir(parents=True)
    (proj / "detectron2" / "__init__.py").write_text("KIND = 'compiled'\n")
    (proj / "detectron2" / SO_NAME).write_bytes(b"\x7fELF not really")
    (proj / "setup.py").write_text("from setuptools import setup\nsetup(name='detectron2', version='0.6', "
                                   "packages=['detectron2'])\n")
    code = "from setuptools import build_meta as b; print(b.build_editable('dist'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=proj, capture_output=True, text=True, check=True)
    with zipfile.ZipFile(proj / "dist" / out.stdout.strip().splitlines()[-1]) as whl:
        whl.extractall(site)
    return proj / "detectron2"


def _which(py: Path) -> str:
    return subprocess.run([str(py), "-c", "import detectron2; print(detectron2.KIND)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def _run_script(py: Path) -> str:
    out = subprocess.run(["bash", str(SCRIPT), str(py)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_compiled_editable_build_wins_over_the_pure_copy(tmp_path: Path) -> None:
    py, site = _venv(tmp_path)
    _pure_install_state(tmp_path / "venv", site)
    compiled = _editable_compiled(tmp_path, site)
    assert _which(py) == "pure"  # the shadowing the script has to undo

    out = _run_script(py)
    assert "compiled detectron2 is already installed" in out and str(compiled) in out, out
    assert not (site / "mal-detectron2-pure.pth").exists()
    assert _which(py) == "compiled"
    # a second run (e.g. `make install` again) keeps it that way and installs nothing
    assert "compiled detectron2 is already installed" in _run_script(py)
    assert _which(py) == "compiled"
