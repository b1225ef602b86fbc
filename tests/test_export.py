"""Exports round-trip: every format parsed back as its consumer would, IoU with the source RLE masks.

Polygon formats (coco-poly, yolo-seg, labelstudio) are rasterised with pycocotools, a continuous-coordinate
rasteriser like the one COCO tools, detectron2 and Label Studio's COCO export use. Exceptions, by design:
the ring's hole is filled in every polygon format (COCO/YOLO/Label Studio polygons cannot carve holes), so
its polygons are compared with the hole-filled mask; CVAT stores masks and must be exact for every shape.
The 3-pixel sliver needs no exception: polygons trace pixel corners, so it survives as a 1 x 3 rectangle.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mal.__main__ import main as mal_main
from mal.common.masks import decode_segmentation, encode_mask
from mal.pseudo.export import FORMATS, export, mask_polygons

SIZES = [(64, 64), (96, 160), (256, 256)]  # (height, width)
SHAPES = ["disc", "ring", "L", "two_blobs", "sliver"]


def shape_mask(name: str, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    s = min(h, w)
    r = np.hypot(xx - w / 2, yy - h / 2)
    m = np.zeros((h, w), np.uint8)
    if name == "disc":
        m[r < s / 4] = 1
    elif name == "ring":
        m[(r < s / 3) & (r > s / 6)] = 1
    elif name == "L":
        m[s // 8 : 7 * s // 8, s // 8 : s // 3] = 1
        m[5 * s // 8 : 7 * s // 8, s // 8 : 7 * s // 8] = 1
    elif name == "two_blobs":
        m[s // 8 : 3 * s // 8, s // 8 : 3 * s // 8] = 1
        m[np.hypot(xx - 3 * w / 4, yy - 3 * h / 4) < s / 8] = 1
    elif name == "sliver":
        m[h // 3, w // 2 : w // 2 + 3] = 1
    return m


def filled(m: np.ndarray) -> np.ndarray:
    """The mask with its holes filled (what a polygon format can express)."""
    contours, _ = cv2.findContours(np.ascontiguousarray(m), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros(m.shape, np.uint8)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.astype(bool) & b.astype(bool)).sum() / max((a.astype(bool) | b.astype(bool)).sum(), 1))


def raster(polys: list[list[float]], h: int, w: int) -> np.ndarray:
    polys = [p for p in polys if len(p) >= 6]
    if not polys:
        return np.zeros((h, w), np.uint8)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))


@pytest.fixture(scope="module")
def labelled() -> dict:
    images, anns = [], []
    for i, (h, w) in enumerate(SIZES, start=1):
        images.append({"id": i, "file_name": f"imgs/im{i}.png", "width": w, "height": h})
        for k, name in enumerate(SHAPES):
            m = shape_mask(name, h, w)
            score = round(0.5 + 0.1 * k, 2)
            anns.append({"id": 100 * i + k, "image_id": i, "category_id": 7 if k % 2 else 3, "bbox": [0, 0, 1, 1],
                         "iscrowd": 0, "area": int(m.sum()), "segmentation": encode_mask(m), "shape": name,
                         "score": score, "mal": {"source": "labeler", "reason": "ok", "score": score}})  # fmt: skip
    empty = encode_mask(np.zeros(SIZES[0], np.uint8))
    anns.append({"id": 999, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "segmentation": empty, "score": 0.1})
    images.append({"id": 4, "file_name": "imgs/no_boxes.png", "width": 32, "height": 32})
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _expected(ann: dict, im: dict, polygon_format: bool) -> np.ndarray:
    m = decode_segmentation(ann["segmentation"], im["height"], im["width"])
    return filled(m) if polygon_format else m


def parse_coco_poly(path: Path, coco: dict) -> dict[int, np.ndarray]:
    res = json.loads(path.read_text())
    ims = {im["id"]: im for im in res["images"]}
    return {a["id"]: raster(a["segmentation"], ims[a["image_id"]]["height"], ims[a["image_id"]]["width"])
            for a in res["annotations"]}  # fmt: skip


def parse_yolo(folder: Path, coco: dict) -> dict[int, np.ndarray]:
    """Lines are in annotation order, empty masks have none: match them back by that order."""
    classes = (folder / "classes.txt").read_text().split()
    assert classes == ["cat", "dog"]  # sorted category ids 3, 7
    out = {}
    for im in coco["images"]:
        h, w = im["height"], im["width"]
        lines = (folder / "labels" / Path(im["file_name"]).with_suffix(".txt")).read_text().splitlines()
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"] and decode_segmentation(
            a["segmentation"], h, w).any()]  # fmt: skip
        assert len(lines) == len(anns)
        for a, line in zip(anns, lines, strict=True):
            cls, *xy = line.split()
            assert int(cls) == {3: 0, 7: 1}[a["category_id"]]
            pts = np.array(xy, float).reshape(-1, 2) * (w, h)
            out[a["id"]] = raster([pts.ravel().tolist()], h, w)
    return out


def parse_labelstudio(path: Path, coco: dict) -> dict[int, np.ndarray]:
    tasks = json.loads(path.read_text())
    assert len(tasks) == len(coco["images"])
    out: dict[int, np.ndarray] = {}
    for task in tasks:
        (pred,) = task["predictions"]
        for r in pred["result"]:
            assert r["type"] == "polygonlabels" and r["from_name"] == "label" and r["to_name"] == "image"
            w, h = r["original_width"], r["original_height"]
            pts = np.array(r["value"]["points"], float) / 100.0 * (w, h)
            aid = int(r["id"][3:].split("_")[0])
            m = raster([pts.ravel().tolist()], h, w)
            out[aid] = out[aid] | m if aid in out else m
    return out


def parse_cvat(path: Path, coco: dict) -> dict[int, np.ndarray]:
    """Decode CVAT's mask RLE (row-major in the box, background first); annotations come in input order."""
    root = ET.parse(path).getroot()
    assert root.findtext("version") == "1.1"
    out = {}
    for im_el, im in zip(root.iter("image"), coco["images"], strict=True):
        h, w = int(im_el.get("height")), int(im_el.get("width"))
        assert im_el.get("name") == im["file_name"]
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"] and decode_segmentation(
            a["segmentation"], h, w).any()]  # fmt: skip
        masks = im_el.findall("mask")
        assert len(masks) == len(anns)
        for a, el in zip(anns, masks, strict=True):
            left, top, bw, bh = (int(el.get(k)) for k in ("left", "top", "width", "height"))
            counts = [int(c) for c in el.get("rle").split(",")]
            assert sum(counts) == bw * bh
            flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
            m = np.zeros((h, w), np.uint8)
            m[top : top + bh, left : left + bw] = flat.reshape(bh, bw)
            out[a["id"]] = m
    return out


PARSERS = {
    "coco-poly": ("x.json", parse_coco_poly),
    "yolo-seg": ("yolo", parse_yolo),
    "labelstudio": ("x.labelstudio.json", parse_labelstudio),
    "cvat": ("x.cvat.xml", parse_cvat),
}


def round_trip_ious(coco: dict, fmt: str, tmp: Path) -> dict[tuple[str, tuple[int, int]], float]:
    name, parse = PARSERS[fmt]
    rep = export(coco, fmt, tmp / name)
    ims = {im["id"]: im for im in coco["images"]}
    back = parse(tmp / name, coco)
    assert rep.annotations_in == len(coco["annotations"])
    assert rep.empty_masks == [999]
    out = {}
    for a in coco["annotations"]:
        if a["id"] == 999:
            assert a["id"] not in back or not back[a["id"]].any()
            continue
        im = ims[a["image_id"]]
        out[(a["shape"], (im["height"], im["width"]))] = iou(back[a["id"]], _expected(a, im, fmt != "cvat"))
    return out


@pytest.mark.parametrize("fmt", list(PARSERS))
def test_round_trip_iou(labelled: dict, fmt: str, tmp_path: Path) -> None:
    ious = round_trip_ious(labelled, fmt, tmp_path)
    assert len(ious) == len(SHAPES) * len(SIZES)
    bad = {k: round(v, 4) for k, v in ious.items() if v < 0.95}
    assert not bad, f"{fmt}: IoU < 0.95 for {bad}"
    if fmt == "cvat":
        assert min(ious.values()) == 1.0  # masks: lossless


def test_polygon_formats_fill_holes(labelled: dict, tmp_path: Path) -> None:
    """The documented limitation, measured: against the true ring the polygon IoU is the filled fraction."""
    ring = shape_mask("ring", 256, 256)
    polys, _ = mask_polygons(ring)
    assert len(polys) == 1  # outer contour only
    back = raster([polys[0].ravel().tolist()], 256, 256)
    assert iou(back, ring) < 0.8 and iou(back, filled(ring)) > 0.99


def test_counts_and_scores(labelled: dict, tmp_path: Path) -> None:
    n = len(labelled["annotations"])
    for fmt, (name, _) in PARSERS.items():
        rep = export(labelled, fmt, tmp_path / name)
        kept = rep.annotations_out if fmt == "coco-poly" else rep.annotations_out + len(rep.empty_masks)
        assert (rep.annotations_in, kept, rep.empty_masks) == (n, n, [999]), fmt  # COCO keeps empty masks
    coco_poly = json.loads((tmp_path / "x.json").read_text())
    assert len(coco_poly["annotations"]) == n
    assert [a["segmentation"] for a in coco_poly["annotations"] if a["id"] == 999] == [[]]
    scores = {a["id"]: a["score"] for a in labelled["annotations"]}
    tasks = json.loads((tmp_path / "x.labelstudio.json").read_text())
    assert tasks[0]["data"]["image"] == "imgs/im1.png" and tasks[3]["predictions"][0]["result"] == []
    seen = set()
    for task in tasks:
        (pred,) = task["predictions"]
        ids = {int(r["id"][3:].split("_")[0]) for r in pred["result"]}
        seen |= ids
        for r in pred["result"]:
            assert r["score"] == scores[int(r["id"][3:].split("_")[0])]
        if ids:
            assert pred["score"] == pytest.approx(np.mean([scores[i] for i in ids]))
            assert pred["model_version"].startswith("mal-")
    assert seen == set(scores) - {999}
    root = ET.parse(tmp_path / "x.cvat.xml").getroot()
    got = [float(m.find("attribute[@name='score']").text) for m in root.iter("mask")]
    assert got == [scores[a["id"]] for a in labelled["annotations"] if a["id"] != 999]
    assert [lab.findtext("name") for lab in root.iter("label")] == ["cat", "dog"]
    assert (tmp_path / "yolo" / "labels" / "imgs" / "no_boxes.txt").read_text() == ""
    assert '0: "cat"' in (tmp_path / "yolo" / "data.yaml").read_text()


def test_export_command_and_unknown_format(labelled: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "labelled.json"
    src.write_text(json.dumps(labelled))
    for fmt in FORMATS:
        out = tmp_path / f"out-{fmt}"
        assert mal_main(["export", "--labelled", str(src), "--format", fmt, "--out", str(out)]) == 0
        assert out.exists()
        assert f"annotations in {len(labelled['annotations'])}" in capsys.readouterr().out
    rle = json.loads((tmp_path / "out-coco-rle").read_text())
    assert [a["segmentation"] for a in rle["annotations"]] == [a["segmentation"] for a in labelled["annotations"]]
    with pytest.raises(SystemExit):
        mal_main(["export", "--labelled", str(src), "--format", "voc", "--out", str(tmp_path / "v")])
    assert mal_main(["export", "--labelled", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["yolo-seg", "cvat"])
def test_label_writes_rle_and_the_chosen_format(tmp_path: Path, fmt: str, capsys: pytest.CaptureFixture) -> None:
    """`label --format F`: --out stays COCO RLE (the source) and F lands at <export-dir>/<out stem><suffix>."""
    from tests._pseudo_fixtures import ann, save_image, tiny_checkpoint, write_coco

    arr = np.zeros((48, 64, 3), np.uint8)
    arr[10:30, 12:40] = (200, 120, 60)
    ims = [save_image(tmp_path / "data", 1, arr, size=(64, 48))]
    boxes = write_coco(tmp_path / "data", ims, [ann(1, 1, [12, 10, 28, 20]), ann(2, 1, [30, 5, 20, 30])])
    out = tmp_path / "res" / "masks.json"
    args = ["label", "--checkpoint", str(tiny_checkpoint()), "--boxes", str(boxes), "--out", str(out), "--quiet"]
    assert mal_main([*args, "--format", fmt, "--export-dir", str(tmp_path / "exp")]) == 0
    assert "export " + fmt in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert [set(a["segmentation"]) for a in res["annotations"]] == [{"size", "counts"}] * 2
    n_masks = sum(decode_segmentation(a["segmentation"], 48, 64).any() for a in res["annotations"])
    assert n_masks > 0
    if fmt == "cvat":
        root = ET.parse(tmp_path / "exp" / "masks.cvat.xml").getroot()
        assert len(root.findall("image/mask")) == n_masks
    else:
        label_files = list((tmp_path / "exp" / "masks_yolo" / "labels").rglob("*.txt"))
        assert len(label_files) == 1 and len(label_files[0].read_text().splitlines()) == n_masks


def test_yolo_folder_is_replaced_whole_and_never_clobbers(labelled: dict, tmp_path: Path) -> None:
    out = tmp_path / "yolo"
    export(labelled, "yolo-seg", out)
    stale = out / "labels" / "imgs" / "gone.txt"
    stale.write_text("0 0 0 1 0 1 1\n")
    export(labelled, "yolo-seg", out)
    assert not stale.exists() and (out / "labels" / "imgs" / "im1.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yolo"]  # no temp folders left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a yolo-seg export"):
        export(labelled, "yolo-seg", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


# --------------------------------------------------------------------------------------------- bad input
def _snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or ``path`` itself) with its bytes: 'untouched' means equal snapshots."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return {str(p.relative_to(path.parent)): p.read_bytes() for p in files if p.is_file()}


def _earlier_export(labelled: dict, fmt: str, out: Path) -> dict[str, bytes]:
    """A good export at ``out`` (what a failed re-export must leave as it was)."""
    export(labelled, fmt, out)
    return _snapshot(out)


BAD_ANNOTATIONS = {  # what is wrong -> (edit of annotation id=201, the one error line after "<file>: ")
    "no segmentation": (lambda a: a.pop("segmentation"), "annotation id=201: missing field 'segmentation'"),
    "bad RLE": (lambda a: a["segmentation"].update(counts="zz{"),
                "annotation id=201: field 'segmentation': RLE counts do not decode (character 'z' at 0 is not an "
                "RLE character)"),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad", list(BAD_ANNOTATIONS))
def test_unrenderable_annotation_is_one_line_and_nothing_is_lost(
    labelled: dict, fmt: str, bad: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`mal export` on a file with one broken annotation: exit 2, one line naming the file, the annotation id
    and the field, no traceback, and an earlier export at --out byte-for-byte as it was."""
    edit, message = BAD_ANNOTATIONS[bad]
    coco = json.loads(json.dumps(labelled))
    edit(next(a for a in coco["annotations"] if a["id"] == 201))
    src = tmp_path / "broken.json"
    src.write_text(json.dumps(coco))
    out = tmp_path / ("out" if fmt == "yolo-seg" else f"out.{fmt}")
    before = _earlier_export(labelled, fmt, out)
    assert mal_main(["export", "--labelled", str(src), "--format", fmt, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"error: {src}: {message}"]
    assert captured.out == "" and "Traceback" not in captured.err
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["broken.json", out.name])  # no temp files left


def test_no_output_file_is_created_for_a_bad_file(labelled: dict, tmp_path: Path) -> None:
    coco = json.loads(json.dumps(labelled))
    del coco["annotations"][0]["segmentation"]
    for fmt in FORMATS:
        with pytest.raises(ValueError, match=r"^my\.json: annotation id=100: missing field 'segmentation'$"):
            export(coco, fmt, tmp_path / fmt, source="my.json")
    assert list(tmp_path.iterdir()) == []


def test_one_line_per_kind_of_problem(labelled: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every annotation is looked at; each kind of problem is one line with its first id and a count."""
    coco = json.loads(json.dumps(labelled))
    anns = {a["id"]: a for a in coco["annotations"]}
    for aid in (100, 102, 300):
        del anns[aid]["segmentation"]
    anns[101]["image_id"] = 77
    anns[103]["category_id"] = 5
    anns[104]["segmentation"] = {"size": [64, 64], "counts": [1, 2]}
    anns[200]["segmentation"] = {"size": [64, 64], "counts": anns[201]["segmentation"]["counts"]}  # 96 x 160 image
    anns[202]["segmentation"] = [[1, 2, 3, 4]]
    anns[203]["score"] = "high"
    src = tmp_path / "broken.json"
    src.write_text(json.dumps(coco))
    assert mal_main(["export", "--labelled", str(src), "--format", "cvat", "--out", str(tmp_path / "x.xml")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {src}: {line}" for line in [
        "annotation id=100: missing field 'segmentation' (3 annotations like this: ids 100, 102, 300)",
        "annotation id=101: field 'image_id' = 77 is not an image id",
        "annotation id=103: field 'category_id' = 5 is not a category id",
        "annotation id=104: field 'segmentation': RLE counts cover 3 pixels, the image has 4096",
        "annotation id=200: field 'segmentation': RLE size [64, 64] does not match the image's [96, 160]",
        "annotation id=202: field 'segmentation': polygon 0 is 4 values, expected a flat list of >= 3 x, y pairs",
        "annotation id=203: field 'score' is str ('high'), expected a finite number",
    ]]  # fmt: skip
    assert not (tmp_path / "x.xml").exists()


def test_export_does_not_import_the_label_cli() -> None:
    """No cycle: export.py never imports mal.pseudo.cli (at any depth of its code), the three command
    modules share one help formatter, and each import order works in a fresh interpreter."""
    import ast
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / "mal" / "pseudo" / "export.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "mal.pseudo.cli" not in imported and "mal.common.cli_format" in imported
    for mod in ("mal/pseudo/cli.py", "mal/pseudo/export.py", "mal/review/cli.py"):
        classes = [n.name for n in ast.walk(ast.parse((root / mod).read_text())) if isinstance(n, ast.ClassDef)]
        assert not any("Formatter" in c for c in classes), mod
    mods = ["mal.pseudo.export", "mal.pseudo.cli", "mal.review.cli"]
    alone = "import sys, mal.pseudo.export as e; e.build_parser(); assert 'mal.pseudo.cli' not in sys.modules"
    for_each_order = ["import importlib\n" + "".join(f"importlib.import_module({m!r}).build_parser()\n" for m in order)
                      for order in (mods, mods[::-1])]
    for code in [alone, *for_each_order]:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
        assert res.returncode == 0, res.stderr
