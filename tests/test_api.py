"""mal.Labeler: in-memory images through the labelling code path, and the runnable docs/api.md example."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mal.common.masks import decode_segmentation
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.labeler.model import checkpoint_mask_threshold
from mal.pseudo.shards import label_coco
from tests._pseudo_fixtures import ann, save_image, tiny_checkpoint, write_coco

REPO = Path(__file__).resolve().parents[1]
BOXES = [
    [4, 3, 20, 15],
    [10.5, 6.25, 12, 18],
    [30, 20, 25, 25],  # partly outside: clipped
    [3, 3, 1.5, 8],  # too small: box fallback
    [12, 7, 0, 9],  # zero size: empty fallback
    [0, 0, 40, 30],
]
THRESHOLD = 0.494  # the random tiny labeler's probabilities sit around 0.49: a mix of labels and fallbacks


@pytest.fixture(scope="module")
def labeler():
    from mal import Labeler

    return Labeler.from_checkpoint(tiny_checkpoint(), device="cpu", threshold=THRESHOLD)


def test_in_memory_image_matches_label_coco_on_the_saved_file(labeler, tmp_path: Path) -> None:
    arr = np.random.default_rng(3).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    im = save_image(tmp_path, 1, arr, size=(40, 30))  # PNG: the file holds the same pixels
    path = write_coco(tmp_path, [im], [ann(i + 1, 1, b) for i, b in enumerate(BOXES)])
    opts = LabelOptions(threshold=THRESHOLD)
    label_coco(path, tiny_checkpoint(), tmp_path / "out.json", opts, RunPseudoLabelParams(device="cpu", show_progress=False))
    want = json.loads((tmp_path / "out.json").read_text())["annotations"]
    got = labeler.label(arr, BOXES)
    assert len(got) == len(BOXES) == len(want)
    for g, w, box in zip(got, want, BOXES, strict=True):
        assert g.mask.dtype == bool and g.mask.shape == (30, 40)
        np.testing.assert_array_equal(g.mask, decode_segmentation(w["segmentation"], 30, 40).astype(bool))
        assert (g.score, g.source, g.reason) == (w["score"], w["mal"]["source"], w["mal"].get("reason"))
        assert g.box == box
    assert {g.source for g in got} == {"labeler", "box_fallback"}  # both paths compared
    assert [g.reason for g in got[3:5]] == ["too_small", "zero_size"] and got[3].score == 0.0
    assert any(0.0 < g.score < 1.0 for g in got)


def test_default_threshold_is_the_checkpoints() -> None:
    from mal import Labeler

    lab = Labeler.from_checkpoint(tiny_checkpoint(), device="cpu")
    assert lab.options.threshold == checkpoint_mask_threshold(tiny_checkpoint()) != THRESHOLD


def test_pil_and_gray_inputs_convert_like_read_image(labeler) -> None:
    arr = np.random.default_rng(4).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    ref = labeler.label(arr, BOXES[:2])
    pil = labeler.label(Image.fromarray(arr), BOXES[:2])
    rgba = labeler.label(np.dstack([arr, np.full((30, 40), 7, np.uint8)]), BOXES[:2])  # alpha dropped
    for r, p, a in zip(ref, pil, rgba, strict=True):
        assert r.score == p.score == a.score and np.array_equal(r.mask, p.mask) and np.array_equal(r.mask, a.mask)
    gray16 = (arr[..., 0].astype(np.uint16) * 257)  # 16-bit gray: min/max scaled, repeated to RGB
    rgb = np.repeat(arr[..., :1], 3, axis=2)
    lo, hi = int(arr[..., 0].min()), int(arr[..., 0].max())
    rgb = np.round((rgb.astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8)
    for a, b in zip(labeler.label(gray16, BOXES[:2]), labeler.label(rgb, BOXES[:2]), strict=True):
        assert a.score == b.score and np.array_equal(a.mask, b.mask)


def test_no_boxes_and_invalid_boxes(labeler) -> None:
    img = np.zeros((30, 40, 3), np.uint8)
    assert labeler.label(img, []) == []
    with pytest.raises(ValueError, match="invalid_bbox"):
        labeler.label(img, [[2, 2, 8, 8], [2, 2, -3, 8]])
    with pytest.raises(ValueError, match="image must be"):
        labeler.label(np.zeros((30, 40, 5), np.uint8), [[2, 2, 8, 8]])


def test_import_mal_stays_light_and_exports_the_labeler() -> None:
    code = "import sys, mal, mal.common.masks; assert 'torch' not in sys.modules; print(mal.Labeler.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "mal.pseudo.api"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import mal

        mal.Nope  # noqa: B018


@pytest.mark.parametrize("doc", ["README.md", "docs/api.md"])
def test_documented_api_example_runs(doc: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", (REPO / doc).read_text(), flags=re.S)
              if "from mal import Labeler" in b]
    assert len(blocks) == 1, f"{doc}: expected one Python API example"
    monkeypatch.setenv("MAL_CHECKPOINT", str(tiny_checkpoint()))
    exec(compile(blocks[0], doc, "exec"), {"__name__": "__main__"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("box_fallback too_small score 0.000")
