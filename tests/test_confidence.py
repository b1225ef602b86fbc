"""The per-mask confidence: computed on the box's crop probabilities, written as ``score`` by the labeller."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mal.pseudo.confidence import CANDIDATES, CHOSEN, candidate_scores, mask_confidence
from mal.pseudo.label import LabelOptions, label_images, load_boxes
from tests._pseudo_fixtures import ConstPredictor, ann, save_image, write_coco


def test_score_is_the_mean_foreground_probability_inside_the_box() -> None:
    assert CHOSEN == "foreground_mean"
    prob = np.full((8, 8), 0.99, np.float32)  # outside the box: ignored
    inbox = np.zeros((8, 8), np.float32)
    inbox[2:6, 2:6] = 1
    prob[2:6, 2:6] = 0.1  # background inside the box: not part of the mask, not in the mean
    prob[2:4, 2:6] = [0.6, 0.7, 0.8, 0.9]
    assert mask_confidence(prob, inbox, 0.5) == pytest.approx(0.75)
    assert mask_confidence(prob, inbox, 0.65) == pytest.approx(0.8)  # mask = the pixels above threshold
    assert mask_confidence(prob, inbox, 0.95) == 0.0  # empty mask
    prob[2, 2] = 0.612345
    assert mask_confidence(prob, inbox, 0.5) == round((0.612345 + 0.7 + 0.8 + 0.9 + 0.6 + 0.7 + 0.8 + 0.9) / 8, 4)


def test_every_candidate_is_a_confidence_in_0_1() -> None:
    rng = np.random.default_rng(0)
    inbox = np.zeros((16, 16), np.float32)
    inbox[3:12, 4:14] = 1
    for _ in range(20):
        got = candidate_scores(rng.random((16, 16), dtype=np.float32), inbox, float(rng.random()))
        assert set(got) == set(CANDIDATES) and all(0.0 <= v <= 1.0 for v in got.values())
    crisp = np.where(inbox > 0, 0.99, 0.01).astype(np.float32)
    vague = np.where(inbox > 0, 0.55, 0.45).astype(np.float32)
    c, v = candidate_scores(crisp, inbox, 0.5), candidate_scores(vague, inbox, 0.5)
    assert all(c[k] > v[k] for k in CANDIDATES)  # a decided map is more trustworthy under every candidate


def test_labeller_writes_the_score_top_level_and_in_mal(tmp_path: Path) -> None:
    im = save_image(tmp_path, 1, size=(50, 40))
    anns = [ann(1, 1, [5, 5, 10, 8]), ann(2, 1, [20.5, 10.5, 15, 20]), ann(3, 1, [1, 1, 1, 1])]
    path = write_coco(tmp_path, [im], anns)
    res = label_images(load_boxes(path), path, ConstPredictor(0.7, mask_size=16),
                       LabelOptions(threshold=0.5))["annotations"]
    for i in (1, 2):
        assert res[i]["score"] == res[i]["mal"]["score"] == pytest.approx(0.7) and res[i]["mal"]["source"] == "labeler"
        assert isinstance(res[i]["score"], float)
    assert res[3]["mal"] == {"source": "box_fallback", "reason": "too_small", "score": 0.0} and res[3]["score"] == 0.0


def test_candidates_script_prints_every_candidate(shapes_dir: Path, capsys: pytest.CaptureFixture) -> None:
    import importlib.util

    from tests._pseudo_fixtures import tiny_checkpoint

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "confidence_candidates.py"
    spec = importlib.util.spec_from_file_location("confidence_candidates", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--gt", str(shapes_dir / "train_gt.json"), "--checkpoint", str(tiny_checkpoint()),
            "--threshold", "0.494", "--agreement", "--threads", "1"]
    assert mod.main(args) == 0  # also asserts each written score equals the chosen candidate
    rows = {line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows == set(CANDIDATES) | {"flip_agreement", "teacher_agreement"}
