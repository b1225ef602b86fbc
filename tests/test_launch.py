"""mal.common.launch: one launcher for every multi-process stage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from mal.common.launch import launch


def _write_rank(out_dir: str) -> str:
    Path(out_dir, f"{os.environ['RANK']}of{os.environ['WORLD_SIZE']}").write_text(os.environ["MASTER_PORT"])
    return f"rank {os.environ['RANK']}"


def _all_reduce(out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method="env://")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    Path(out_dir, f"sum{dist.get_rank()}").write_text(str(int(t.item())))
    dist.destroy_process_group()


def _fail_on_rank1(out_dir: str) -> None:
    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 broke")


def test_one_process_runs_in_this_process(tmp_path: Path) -> None:
    seen: list[str] = []
    assert launch(seen.append, 1, "x") is None
    assert seen == ["x"]


def test_processes_get_ranks_and_a_process_group(tmp_path: Path) -> None:
    assert launch(_write_rank, 2, str(tmp_path)) == "rank 0"  # rank 0's result comes back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0of2", "1of2"]
    launch(_all_reduce, 2, str(tmp_path), log_dir=tmp_path / "logs")
    assert Path(tmp_path, "sum0").read_text() == Path(tmp_path, "sum1").read_text() == "3"
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == ["rank0.log", "rank1.log"]


def test_a_failing_process_fails_the_launch(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 broke"):
        launch(_fail_on_rank1, 2, str(tmp_path))
