"""The detector's training curves (dvclive, :class:`mal.detection.train.DvcLiveHook`): detectron2's JSON-log
values at its steps, complete across a resume, and total_loss decomposable for every architecture."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("detectron2")
from detectron2.utils.events import EventStorage  # noqa: E402

from mal.detection.train import DvcLiveHook, train_detector  # noqa: E402

CASCADE = {"loss_rpn_cls": 0.1, "loss_rpn_loc": 0.2, "loss_mask": 0.6,
           **{f"loss_{k}_stage{s}": 0.1 + 0.1 * (k == "cls") for k in ("cls", "box_reg") for s in range(3)}}


def _curves(live_dir: Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` from the dvclive ``train/*.tsv`` files."""
    out = {}
    for tsv in (live_dir / "plots" / "metrics" / "train").glob("*.tsv"):
        with tsv.open() as f:
            out[tsv.stem] = {int(r["step"]): float(r[tsv.stem]) for r in csv.DictReader(f, delimiter="\t")}
    return out


def _assert_parts_sum_to_total(curves: dict[str, dict[int, float]]) -> None:
    parts = [k for k in curves if k.startswith("loss_")]
    assert parts and curves["total_loss"]
    for step, total in curves["total_loss"].items():
        logged = sum(curves[k][step] for k in parts)
        assert math.isclose(logged, total, rel_tol=1e-4), f"step {step}: parts {logged} != total_loss {total}"


def _run(hook: DvcLiveHook, start_iter: int, max_iter: int, loss: float) -> None:
    """The hook under a stand-in trainer whose iteration ``it`` puts the losses (``loss`` + it / 1000) and lr,
    as detectron2's run_step and LRScheduler do."""
    trainer = SimpleNamespace(iter=start_iter, start_iter=start_iter, max_iter=max_iter)
    hook.trainer = trainer
    with EventStorage(start_iter) as storage:
        trainer.storage = storage
        hook.before_train()
        for it in range(start_iter, max_iter):
            trainer.iter = storage.iter = it
            parts = {k: v + it / 1000 for k, v in CASCADE.items()}
            storage.put_scalars(total_loss=sum(parts.values()), **parts, time=1.0)
            storage.put_scalar("lr", loss * (it + 1), smoothing_hint=False)
            hook.after_step()
        hook.after_train()


def test_cascade_stage_losses_are_logged_at_the_writer_steps(tmp_path: Path) -> None:
    _run(DvcLiveHook(tmp_path / "live", tmp_path / "metrics.json", period=20), 0, 45, 0.01)
    curves = _curves(tmp_path / "live")
    assert {"loss_cls_stage2", "loss_box_reg_stage0", "lr", "total_loss"} <= set(curves) and "time" not in curves
    assert list(curves["lr"]) == [19, 39, 44] and curves["lr"][44] == pytest.approx(0.45)  # every 20 + the last
    _assert_parts_sum_to_total(curves)


def test_a_resumed_run_has_complete_curves(tmp_path: Path) -> None:
    """Resumed at 30 (last checkpoint 29): the earlier run's records below 30 come from detectron2's JSON log in
    the work dir (the dvclive folder, a DVC output, is gone); its record at 39, past the checkpoint, is replaced."""
    log = tmp_path / "metrics.json"
    log.write_text("".join(json.dumps({"iteration": it, "total_loss": 9.0, "lr": 0.5, "loss_a": 9.0,
                                       "data_time": 0.1}) + "\n" for it in (19, 39)))
    _run(DvcLiveHook(tmp_path / "live", log, period=20), 30, 45, 0.01)
    lr = _curves(tmp_path / "live")["lr"]
    assert list(lr) == [19, 39, 44] and lr[19] == 0.5 and lr[39] == pytest.approx(0.4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_R18_demo", "cascade_R18_demo"])
def test_trained_curves_add_up(name: str, shapes_dir: Path, tmp_path: Path) -> None:
    from tests.test_detector import tiny_params

    params = tiny_params(max_iter=3, CHECKPOINT_PERIOD=100)  # >= 3: a median of 3 values is not additive
    train_detector(name, params, shapes_dir / "train_gt.json", shapes_dir, tmp_path / "work", tmp_path / "live",
                   num_threads=1)
    curves = _curves(tmp_path / "live")
    _assert_parts_sum_to_total(curves)
    records = [json.loads(line) for line in (tmp_path / "work" / "metrics.json").read_text().splitlines()]
    assert curves["total_loss"] == {r["iteration"]: r["total_loss"] for r in records}  # the JSON log's values
