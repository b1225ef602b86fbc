"""`python -m mal --help` / `--version` and every command's `--help`: one line per command, every option
documented with its default."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import mal
from mal.__main__ import COMMANDS, main, summary
from mal.pseudo import cli, export

ROOT = Path(__file__).resolve().parents[1]


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, module in COMMANDS.items():
        line = summary(module)
        assert line and "\n" not in line, name
        assert f"  {name}  " in out and line in out
    assert "--version" in out


def test_help_and_version_import_nothing_heavy() -> None:
    """The listing reads docstrings from source: `mal --help` must not pay for torch / detectron2."""
    code = (
        "import sys; from mal.__main__ import main; main(['--help']); main(['--version']);"
        "heavy = [m for m in ('torch', 'cv2', 'detectron2', 'prefect') if m in sys.modules]; print('HEAVY', heavy)"
    )
    res = _python("-c", code)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout and f"mal {mal.__version__}" in res.stdout


def test_module_help_version_and_unknown_command() -> None:
    res = _python("-m", "mal", "--version")
    assert (res.returncode, res.stdout.strip()) == (0, f"mal {mal.__version__}")
    res = _python("-m", "mal", "nonsense")
    assert res.returncode == 2 and "unknown command 'nonsense'" in res.stderr and "export" in res.stderr


def _assert_options_documented(parser: argparse.ArgumentParser) -> None:
    text = " ".join(parser.format_help().split())  # unwrap
    for a in parser._actions:
        if a.dest == "help":
            continue
        assert a.help, f"{a.option_strings} has no help"
        if a.required or not a.option_strings:
            continue
        if a.default in (None, ""):
            assert "default" in a.help or "required" in a.help, f"{a.option_strings}: help must say the default"
        else:
            assert f"(default: {a.default})" in text, a.option_strings


@pytest.mark.parametrize("build", [cli.build_parser, export.build_parser])
def test_every_option_has_help_and_default(build: Callable[[], argparse.ArgumentParser]) -> None:
    _assert_options_documented(build())


def test_label_help_shows_example_and_sharding(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["label", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "Example::" in out and "python -m mal label --checkpoint" in out
    assert "--num-shards N --shard-index i --shard-dir D" in out and "--merge-only" in out
    assert "--format {coco-rle,coco-poly,yolo-seg,labelstudio,cvat}" in out
