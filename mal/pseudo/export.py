"""`python -m mal export`: convert a labelled COCO file (RLE masks) to COCO polygons, YOLO-seg, Label Studio or CVAT.

Example::

    python -m mal export --labelled my_masks.json --format yolo-seg --out yolo/
    python -m mal export --labelled my_masks.json --format labelstudio --out tasks.json \\
        --image-prefix /data/local-files/?d=my_images/

The COCO RLE file ``python -m mal label`` writes is the lossless source; every other format is converted
from it (``label --format F`` runs the same converters). What each format keeps:

* ``coco-rle``: as written by ``label`` (segmentations normalised to RLE with string counts).
* ``coco-poly``: outer contours of each mask as COCO polygons. COCO unions an annotation's polygons, so
  **holes are filled** (use coco-rle for masks with holes). A mask with no foreground keeps
  ``segmentation: []`` and is counted.
* ``yolo-seg``: ``labels/<image>.txt`` with one ``class x1 y1 x2 y2 ...`` line per mask (normalised
  coordinates; class = index of the category id in sorted order) plus ``data.yaml`` and ``classes.txt``.
  A YOLO line holds one polygon, so the parts of a multi-part mask are **joined** by zero-width bridges
  between their nearest vertices (as Ultralytics' own COCO converter does): nothing is lost, whereas keeping
  the largest part would drop the others. Holes are filled. Empty masks get no line (counted).
* ``labelstudio``: a JSON list of tasks, one per image, ``data.image`` = ``--image-prefix`` + file_name,
  one prediction per task (``model_version``, ``score`` = mean annotation score) whose results are
  ``polygonlabels`` in percent of the image size, one region per mask part, each with the annotation's
  ``score``. Polygons, not brush RLE: ``label-studio-converter`` (the package with ``brush.mask2rle``) pulls
  pandas, nltk, requests and label-studio-tools into the runtime, and re-implementing its bit-packed format
  here would be a converter no one else maintains. Holes are filled.
* ``cvat``: CVAT for images 1.1 XML with one ``<mask>`` per annotation (CVAT's own row-major RLE inside the
  mask's box; lossless, holes and parts kept) and a ``score`` attribute; ``<meta>`` declares the labels
  (type mask) and the ``score`` attribute so a task created from it keeps the scores.

Every annotation is checked before anything is written (:mod:`mal.common.render_check`): one that cannot be
converted (no ``segmentation``, an RLE that does not decode at its image's size, an unknown ``image_id`` or
``category_id``, a non-numeric ``score``) stops the export with one line per kind of problem naming the file,
the annotation id and the field. Every file is written atomically (:mod:`mal.common.files`), so an earlier
export at ``--out`` is never lost.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mal.common.cli_format import HelpFormatter
from mal.common.coco_io import read_coco_json
from mal.common.files import atomic_path, write_json_atomic, write_text_atomic
from mal.common.masks import decode_segmentation, rle_area, segmentation_to_rle
from mal.common.render_check import check_renderable
from mal.pseudo.polygons import DEFAULT_EPSILON, cvat_rle, join_polygons, mask_polygons


@dataclass
class ExportOptions:
    epsilon: float = DEFAULT_EPSILON
    image_prefix: str = ""  # labelstudio: data.image = prefix + file_name
    from_name: str = "label"  # labelstudio: the <PolygonLabels name=...> of the labelling config
    to_name: str = "image"  # labelstudio: the <Image name=...>
    model_version: str = ""  # labelstudio: default "mal-<version>"


@dataclass
class ExportReport:
    format: str
    path: str
    images: int = 0
    annotations_in: int = 0
    annotations_out: int = 0
    empty_masks: list[int] = field(default_factory=list)  # annotation ids with no foreground
    dropped_polygons: int = 0  # contours with < 3 vertices after simplification

    def line(self) -> str:
        return (
            f"{self.format}: {self.path}  images {self.images}  annotations in {self.annotations_in}  "
            f"out {self.annotations_out}  empty masks {len(self.empty_masks)}  dropped polygons {self.dropped_polygons}"
        )


def _score(ann: dict[str, Any]) -> float | None:
    """``score``, else ``mal.score`` (both checked to be numbers by :func:`export`)."""
    s = ann.get("score", (ann.get("mal") or {}).get("score"))
    return None if s is None else float(s)


def _images_and_anns(coco: dict[str, Any]) -> tuple[list[dict], dict[int, list[dict]]]:
    by_image: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        by_image[a["image_id"]].append(a)
    return coco["images"], by_image


def _mask(ann: dict[str, Any], im: dict[str, Any]) -> np.ndarray:
    return decode_segmentation(ann["segmentation"], int(im["height"]), int(im["width"]))


def _polygons(ann: dict[str, Any], im: dict[str, Any], opts: ExportOptions, rep: ExportReport) -> list[np.ndarray]:
    """The annotation's mask as polygons; the polygons dropped and a mask left empty are counted in ``rep``."""
    polys, dropped = mask_polygons(_mask(ann, im), opts.epsilon)
    rep.dropped_polygons += dropped
    if not polys:
        rep.empty_masks.append(ann["id"])
    return polys


# --------------------------------------------------------------------------------------------- formats
def _export_coco(coco: dict[str, Any], out: Path, fmt: str,
                 segmentation: Callable[[dict[str, Any], dict[str, Any], ExportReport], Any]) -> ExportReport:
    """A copy of ``coco`` with each annotation's segmentation replaced by ``segmentation(ann, image, rep)``."""
    res = copy.deepcopy(coco)
    images = {im["id"]: im for im in res["images"]}
    rep = ExportReport(fmt, str(out), len(images), len(res["annotations"]))
    for a in res["annotations"]:
        a["segmentation"] = segmentation(a, images[a["image_id"]], rep)
    rep.annotations_out = len(res["annotations"])
    write_json_atomic(out, res)
    return rep


def export_coco_rle(coco: dict[str, Any], out: Path, opts: ExportOptions) -> ExportReport:
    """COCO JSON with every segmentation as RLE (string counts)."""

    def as_rle(a: dict[str, Any], im: dict[str, Any], rep: ExportReport) -> dict[str, Any]:
        rle = segmentation_to_rle(a["segmentation"], int(im["height"]), int(im["width"]), f"annotation id={a['id']}")
        if rle_area(rle) == 0:  # counted from the RLE: no need to decode the mask
            rep.empty_masks.append(a["id"])
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}

    return _export_coco(coco, out, "coco-rle", as_rle)


def export_coco_poly(coco: dict[str, Any], out: Path, opts: ExportOptions) -> ExportReport:
    """COCO JSON with polygon segmentations (outer contours; holes filled, see the module docstring)."""

    def as_polygons(a: dict[str, Any], im: dict[str, Any], rep: ExportReport) -> list[list[float]]:
        return [[round(float(v), 2) for v in p.ravel()] for p in _polygons(a, im, opts, rep)]

    return _export_coco(coco, out, "coco-poly", as_polygons)


def _label_path(file_name: str) -> PurePosixPath:
    """labels/<file_name with .txt>, kept inside the export folder (absolute or '..' names flattened)."""
    p = PurePosixPath(str(file_name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        p = PurePosixPath(p.name)
    return PurePosixPath("labels") / p.with_suffix(".txt")


YOLO_ENTRIES = {"labels", "data.yaml", "classes.txt"}


@contextmanager
def _atomic_dir(path: Path) -> Iterator[Path]:
    """Build a folder beside ``path``, then swap it in: no label file of an earlier export survives, and a
    failed export leaves the old folder as it was. Refuses a ``path`` holding anything but such an export."""
    if path.exists() and (not path.is_dir() or {p.name for p in path.iterdir()} - YOLO_ENTRIES):
        raise ValueError(f"{path}: exists and is not a yolo-seg export folder; choose a new or empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_yolo_seg(coco: dict[str, Any], out: Path, opts: ExportOptions) -> ExportReport:
    """Ultralytics YOLO-seg folder: labels/*.txt, data.yaml, classes.txt (``out`` is a directory, replaced whole)."""
    with _atomic_dir(out) as tmp:
        return _write_yolo(coco, out, tmp, opts)


def _write_yolo(coco: dict[str, Any], out: Path, tmp: Path, opts: ExportOptions) -> ExportReport:
    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    cls = {c["id"]: i for i, c in enumerate(cats)}
    images, by_image = _images_and_anns(coco)
    rep = ExportReport("yolo-seg", str(out), len(images), len(coco["annotations"]))
    files: dict[PurePosixPath, str] = {}
    for im in images:
        h, w = int(im["height"]), int(im["width"])
        lines = []
        for a in by_image[im["id"]]:
            polys = _polygons(a, im, opts, rep)
            if not polys:
                continue
            xy = join_polygons(polys) / (w, h)
            lines.append(f"{cls[a['category_id']]} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
        path = _label_path(im["file_name"])
        if path in files:
            raise ValueError(f"yolo-seg: images {files[path]!r} and {im['file_name']!r} share the label file {path}")
        files[path] = im["file_name"]
        write_text_atomic(tmp / path, "".join(line + "\n" for line in lines))
        rep.annotations_out += len(lines)
    names = "\n".join(f"  {i}: {_yaml_str(c['name'])}" for i, c in enumerate(cats))
    write_text_atomic(
        tmp / "data.yaml",
        "# Ultralytics dataset file written by `mal export`; set train/val to your image folders\n"
        f"path: .\ntrain: images\nval: images\nnc: {len(cats)}\nnames:\n{names}\n",
    )
    write_text_atomic(tmp / "classes.txt", "".join(f"{c['name']}\n" for c in cats))
    return rep


def _yaml_str(s: str) -> str:
    return json.dumps(str(s))  # a JSON string is a valid YAML scalar, whatever the name holds


def export_labelstudio(coco: dict[str, Any], out: Path, opts: ExportOptions) -> ExportReport:
    """Label Studio import JSON: one task per image, polygonlabels predictions with scores."""
    from mal import __version__

    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    images, by_image = _images_and_anns(coco)
    rep = ExportReport("labelstudio", str(out), len(images), len(coco["annotations"]))
    tasks = []
    for im in images:
        h, w = int(im["height"]), int(im["width"])
        results, scores = [], []
        for a in by_image[im["id"]]:
            polys = _polygons(a, im, opts, rep)
            if not polys:
                continue
            rep.annotations_out += 1
            score = _score(a)
            if score is not None:
                scores.append(score)
            for k, p in enumerate(polys):
                pct = p / (w, h) * 100.0
                r: dict[str, Any] = {
                    "id": f"mal{a['id']}" + (f"_{k}" if k else ""),
                    "type": "polygonlabels",
                    "from_name": opts.from_name,
                    "to_name": opts.to_name,
                    "original_width": w,
                    "original_height": h,
                    "image_rotation": 0,
                    "value": {
                        "points": [[round(float(x), 4), round(float(y), 4)] for x, y in pct],
                        "closed": True,
                        "polygonlabels": [names[a["category_id"]]],
                    },
                }
                if score is not None:
                    r["score"] = score
                results.append(r)
        pred: dict[str, Any] = {"model_version": opts.model_version or f"mal-{__version__}", "result": results}
        if scores:
            pred["score"] = float(np.mean(scores))
        data = {"image": f"{opts.image_prefix}{im['file_name']}", "mal_image_id": im["id"]}
        tasks.append({"data": data, "predictions": [pred]})
    write_json_atomic(out, tasks, indent=1)
    return rep


def _cvat_meta(root: ET.Element, coco: dict[str, Any]) -> None:
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = "mal"
    ET.SubElement(task, "size").text = str(len(coco["images"]))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for c in sorted(coco.get("categories", []), key=lambda c: c["id"]):
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = str(c["name"])
        ET.SubElement(label, "type").text = "mask"
        attr = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
        for k, v in (("name", "score"), ("mutable", "False"), ("input_type", "number"),
                     ("default_value", "0"), ("values", "0\n1\n0.001")):  # fmt: skip
            ET.SubElement(attr, k).text = v


def export_cvat(coco: dict[str, Any], out: Path, opts: ExportOptions) -> ExportReport:
    """CVAT for images 1.1 XML with one <mask> (RLE) per annotation and a ``score`` attribute."""
    names = {c["id"]: str(c["name"]) for c in coco.get("categories", [])}
    images, by_image = _images_and_anns(coco)
    rep = ExportReport("cvat", str(out), len(images), len(coco["annotations"]))
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    _cvat_meta(root, coco)
    for frame, im in enumerate(images):
        attrs = {"id": str(frame), "name": str(im["file_name"]), "width": str(im["width"]), "height": str(im["height"])}
        el = ET.SubElement(root, "image", attrs)
        for a in by_image[im["id"]]:
            enc = cvat_rle(_mask(a, im))
            if enc is None:
                rep.empty_masks.append(a["id"])
                continue
            counts, (left, top, width, height) = enc
            m = ET.SubElement(el, "mask", {
                "label": names[a["category_id"]], "source": "auto", "occluded": "0",
                "rle": ", ".join(map(str, counts)), "left": str(left), "top": str(top),
                "width": str(width), "height": str(height), "z_order": "0",
            })  # fmt: skip
            score = _score(a)
            if score is not None:
                ET.SubElement(m, "attribute", {"name": "score"}).text = f"{score:.6g}"
            rep.annotations_out += 1
    ET.indent(root)
    with atomic_path(out) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    return rep


Exporter = Callable[[dict[str, Any], Path, ExportOptions], ExportReport]
# name -> (converter, what --out / the default export path is: a file suffix or, for folders, a name suffix)
EXPORTERS: dict[str, tuple[Exporter, str]] = {
    "coco-rle": (export_coco_rle, ".json"),
    "coco-poly": (export_coco_poly, ".poly.json"),
    "yolo-seg": (export_yolo_seg, "_yolo"),
    "labelstudio": (export_labelstudio, ".labelstudio.json"),
    "cvat": (export_cvat, ".cvat.xml"),
}
FORMATS = list(EXPORTERS)


def export(coco: dict[str, Any], fmt: str, out: str | Path, opts: ExportOptions | None = None,
           source: str | Path = "<labelled>") -> ExportReport:
    """Write ``coco`` (a labelled COCO dict read from ``source``) as ``fmt`` at ``out`` (a folder for yolo-seg).

    Every annotation is checked first (:func:`~mal.common.render_check.check_renderable`: known image and
    category, a segmentation that decodes at its image's size, numeric scores), so a file that cannot be
    converted raises ``CocoFormatError`` naming ``source``, the annotation id and the field, and nothing is
    written; an earlier export at ``out`` stays as it was.
    """
    if fmt not in EXPORTERS:
        raise ValueError(f"unknown export format {fmt!r} (one of {', '.join(FORMATS)})")
    check_renderable(coco, source)
    return EXPORTERS[fmt][0](coco, Path(out), opts or ExportOptions())


def default_export_path(fmt: str, labelled: str | Path, export_dir: str | Path | None = None) -> Path:
    """Where ``label --format F`` puts the export: ``<export-dir or out's folder>/<out stem><suffix>``."""
    labelled = Path(labelled)
    return Path(export_dir or labelled.parent) / f"{labelled.stem}{EXPORTERS[fmt][1]}"


def add_export_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``mal export`` and ``mal label``."""
    p.add_argument("--format", choices=FORMATS, default="coco-rle", help="output format (see `python -m mal export --help`)")
    p.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON, help="polygon simplification tolerance (px)")
    p.add_argument(
        "--image-prefix",
        default="",
        help="labelstudio: data.image = this prefix + file_name (default: none, the file_name as is)",
    )
    p.add_argument("--ls-from-name", default="label", help="labelstudio: name of the PolygonLabels control")
    p.add_argument("--ls-to-name", default="image", help="labelstudio: name of the Image object")
    p.add_argument("--model-version", default="", help="labelstudio: prediction model_version (default: mal-<version>)")


def options_from_args(args: argparse.Namespace) -> ExportOptions:
    return ExportOptions(args.epsilon, args.image_prefix, args.ls_from_name, args.ls_to_name, args.model_version)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mal export", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--labelled", required=True, help="COCO JSON with masks (e.g. from `python -m mal label`)")
    p.add_argument("--out", required=True, help="output file (a folder for yolo-seg)")
    add_export_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        coco = read_coco_json(args.labelled, "labelled COCO file")
        rep = export(coco, args.format, args.out, options_from_args(args), source=args.labelled)
    except (OSError, ValueError) as e:  # CocoFormatError is a ValueError: one line per problem, no traceback
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    print(rep.line())
    return 0


__all__ = ["EXPORTERS", "FORMATS", "ExportOptions", "ExportReport", "export", "default_export_path"]

if __name__ == "__main__":
    sys.exit(main())
