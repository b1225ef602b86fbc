"""dvc.yaml and the stage code name the same files: what each stage reads from params.yaml (through
``mal.common.paths``) is a dep of that stage, and what it writes is one of its outs / metrics / plots."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from mal.common import paths
from mal.common.params import load_params
from mal.common.timm_weights import is_path_like
from mal.detection.detector import get_spec
from tests.conftest import REPO

LIVE_PLOTS = Path("plots/metrics")  # where dvclive writes its curves inside its directory


def _covered(path: Path | str, declared: list[str]) -> bool:
    p = PurePosixPath(Path(path).as_posix())
    return any(p == PurePosixPath(d) or PurePosixPath(d) in p.parents for d in declared)


@pytest.fixture(scope="module")
def dvc_stages() -> dict[str, dict[str, list[str]]]:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {s.addressing: {"deps": [d.def_path for d in s.deps], "outs": [o.def_path for o in s.outs]}
                for s in repo.index.stages}


def _expected(params: dict) -> dict[str, dict[str, list[Path]]]:
    """stage -> {"deps": paths the code reads, "outs": paths the code writes}, from params.yaml alone."""
    data, table = params["data"], params["table"]
    roots = paths.image_roots(data)
    if data["dataset"] != "coco":  # built-in sets write their images under <out_dir>/images/
        roots = {split: root / "images" for split, root in roots.items()}
    prepared = {s: paths.prepared_json(data, s) for s in ("train_boxes", "train_gt", "val_gt")}
    out: dict[str, dict[str, list[Path]]] = {
        "weights": {"deps": [], "outs": [Path(params["weights"]["out_dir"])]},
        "prepare": {"deps": [Path(data["coco"][k]) for k in ("train_json", "train_images", "val_json", "val_images")],
                    "outs": [*prepared.values(), Path(data["metrics"])]},
        "paper_table": {"deps": [Path(params["evaluate"]["metrics_dir"]), Path(params["evaluate"]["predictions_dir"]),
                                 Path(params["evaluate"]["val_json"]), Path(data["metrics"])],
                        "outs": [Path(table["out_dir"]) / f for f in ("paper_table.md", "paper_table.csv",
                                                                       "paper_table.json", "comparisons.csv",
                                                                       "retention.png")]
                        + [Path(table["metrics_dir"]) / "paper_table.json"]},
    }
    for lab in table["labelers"]:
        lp = paths.labeler_paths(params, lab)
        pl = paths.templated(params["pseudo_label"], ("boxes_json", "checkpoint", "out_json", "metrics"), lab)
        mq = paths.templated(params["mask_quality"], ("pseudo_json", "gt_json", "metrics", "overlay_dir"), lab)
        pretrained = params["labeler"]["models"][lab].get("pretrained")
        weights = [Path(pretrained)] if isinstance(pretrained, str) and is_path_like(pretrained) else []  # as the encoder
        out[f"train_labeler@{lab}"] = {"deps": [prepared["train_boxes"], prepared["val_gt"], roots["train"],
                                                roots["val"], *weights],
                                       "outs": [lp["checkpoint"], lp["metrics"], lp["plots_dir"] / LIVE_PLOTS]}
        out[f"pseudo_label@{lab}"] = {"deps": [pl["boxes_json"], pl["checkpoint"], roots["train"]],
                                      "outs": [pl["out_json"], pl["metrics"]]}
        out[f"mask_quality@{lab}"] = {"deps": [mq["pseudo_json"], mq["gt_json"], roots["train"]],
                                      "outs": [mq["metrics"], mq["overlay_dir"]]}
        out["paper_table"]["deps"].append(mq["metrics"])
    dp = params["detector"]
    for det, seed in itertools.product(table["detectors"], table["seeds"]):
        spec = get_spec(det)
        weights = dp["pretrained"].get(spec.backbone) if spec.timm_model else None  # the timm backbone's file
        for masks in ["gt", *table["labelers"]]:
            cell = paths.detector_cell(masks, det, seed)
            train_json = Path(dp["gt_json"] if masks == "gt" else dp["pseudo_json"].format(labeler=masks))
            name = f"train_detector_gt@{det}-{seed}" if masks == "gt" else f"train_detector@{masks}-{det}-{seed}"
            out[name] = {"deps": [train_json, roots["train"], *([Path(weights)] if weights else [])],
                         "outs": [Path(dp["out_dir"]) / cell, Path(dp["live_dir"]) / cell / LIVE_PLOTS]}
            name = f"evaluate_gt@{det}-{seed}" if masks == "gt" else f"evaluate@{masks}-{det}-{seed}"
            out[name] = {"deps": [Path(dp["out_dir"]) / cell, Path(params["evaluate"]["val_json"]), roots["val"]],
                         "outs": [paths.detector_metrics(params, masks, det, seed),
                                  paths.detector_predictions(params, masks, det, seed)]}
    return out


def test_every_path_the_code_uses_is_declared_in_dvc_yaml(dvc_stages) -> None:
    expected = _expected(load_params(REPO / "params.yaml"))
    assert set(expected) == set(dvc_stages), "dvc.yaml stages differ from the params' table"
    problems = []
    for stage, want in expected.items():
        for kind in ("deps", "outs"):
            problems += [f"{stage}: {kind} lacks {p}" for p in want[kind] if not _covered(p, dvc_stages[stage][kind])]
    assert not problems, "\n".join(problems)


def test_stage_outputs_hold_no_timing_or_absolute_path() -> None:
    """An identical re-run must leave git clean: timings live under timings_dir (git-ignored, no DVC out)."""
    params = load_params(REPO / "params.yaml")
    probe = Path(params["timings_dir"]) / "train_labeler" / "x.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode == 0
    assert ignored, f"{params['timings_dir']} must be git-ignored"
    with_timings = [p for p in REPO.glob("metrics/**/*.json") if "seconds" in p.read_text() or "time_s" in p.read_text()]
    assert not with_timings, f"tracked metrics with wall-clock numbers: {with_timings}"
