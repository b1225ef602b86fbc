"""dvc.yaml is the one path layout: every path a stage's cmd passes is a dep or an out of that stage (the
stage reads and writes nothing else tracked), and its work folder is git-ignored scratch."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import REPO

SCRATCH_FLAGS = ("--work-dir",)  # resume state, logs, timings: not DVC outs


def _covered(path: str, declared: list[str]) -> bool:
    p = PurePosixPath(path)
    return any(p == PurePosixPath(d) or PurePosixPath(d) in p.parents for d in declared)


@pytest.fixture(scope="module")
def stages() -> dict[str, dict]:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {s.addressing: {"cmd": s.cmd, "deps": [d.def_path for d in s.deps],
                               "outs": [o.def_path for o in s.outs]} for s in repo.index.stages}


def _path_args(cmd: str) -> list[tuple[str, str]]:
    words = shlex.split(cmd)
    return [(flag, value) for flag, value in zip(words, words[1:], strict=False)
            if flag.startswith("--") and "/" in value and flag != "--params"]


def test_every_path_argument_is_a_dep_or_an_out(stages) -> None:
    problems = []
    for name, st in stages.items():
        args = _path_args(st["cmd"])
        assert args or name == "weights" or "--out" in st["cmd"], f"{name}: no path arguments in {st['cmd']!r}"
        for flag, value in args:
            if flag in SCRATCH_FLAGS:
                continue
            declared = st["deps"] + st["outs"]  # a folder holding a declared out counts (dvclive's <dir>/plots/...)
            if not _covered(value, declared) and not any(_covered(d, [value]) for d in st["outs"]):
                problems.append(f"{name}: {flag} {value} is neither a dep nor an out")
    assert not problems, "\n".join(problems)


def test_every_out_is_written_through_an_argument(stages) -> None:
    """An out no argument names would be a path the code derives itself: a second copy of the layout."""
    problems = []
    for name, st in stages.items():
        given = [v for _, v in _path_args(st["cmd"])]
        problems += [f"{name}: out {o} named by no argument" for o in st["outs"]
                     if not any(_covered(v, [o]) or _covered(o, [v]) for v in given)]
    assert not problems, "\n".join(problems)


def test_work_folders_are_ignored_and_metrics_hold_no_timing(stages) -> None:
    """An identical re-run must leave git clean: timings live in the git-ignored work folders."""
    work = {v for st in stages.values() for f, v in _path_args(st["cmd"]) if f in SCRATCH_FLAGS}
    assert work
    for path in work:
        probe = Path(path) / "timings.json"
        assert subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode == 0, path
    with_timings = [p for p in REPO.glob("metrics/**/*.json") if "seconds" in p.read_text() or "time_s" in p.read_text()]
    assert not with_timings, f"tracked metrics with wall-clock numbers: {with_timings}"
