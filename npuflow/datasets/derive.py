"""Files derived from a downloaded (or generated) dataset, as the toolkits need them.

- ``cityscapes_train_ids``: ``*_gtFine_labelTrainIds.png`` from the gtFine polygons, drawn by the official
  cityscapesscripts (``json2labelImg(..., "trainIds")``, what ``csCreateTrainIdLabelImgs`` runs).
- ``coco_to_yolo``: YOLO labels, list files and ``coco.yaml`` from COCO's instances JSON (80-class index in
  category-id order, normalised ``cls xc yc w h``, crowd boxes skipped), so no third-party label archive is needed.
  The YOLOR port's ``test.py`` maps class indexes to COCO ids only for a data file named ``coco.yaml`` and reads
  the ground truth from ``<path>/annotations/instances_val2017.json``; it opens the list files from its own
  folder, so every path in ``coco.yaml`` is absolute.

Each step writes atomically and skips what is already done, so a rerun after a crash finishes the rest. ``home``
is where the folder will live when it is built elsewhere first (the generated sets).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

Log = Callable[[str], None]


def _train_ids_one(polygons: str) -> str:
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    dst = polygons.replace("_polygons.json", "_labelTrainIds.png")
    tmp = dst[:-4] + ".partial.png"
    json2labelImg(polygons, tmp, "trainIds")
    os.replace(tmp, dst)
    return dst


def cityscapes_train_ids(root: Path, splits: list[str], log: Log = print, home: Path | None = None) -> dict[str, Any]:
    todo = []
    for split in splits:
        for polygons in sorted((root / "gtFine" / split).glob("*/*_gtFine_polygons.json")):
            dst = polygons.with_name(polygons.name.replace("_polygons.json", "_labelTrainIds.png"))
            if not dst.exists() or dst.stat().st_mtime < polygons.stat().st_mtime:
                todo.append(str(polygons))
    if len(todo) > 64:
        with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(_train_ids_one, todo, chunksize=32))
    else:
        for polygons in todo:
            _train_ids_one(polygons)
    log(f"cityscapes_train_ids: {len(todo)} labelTrainIds PNG(s) drawn with cityscapesscripts")
    return {"drawn": len(todo)}


def _yolo_rows(anns: list[dict[str, Any]], width: int, height: int, index: dict[int, int]) -> list[str]:
    rows = []
    for ann in anns:
        if ann.get("iscrowd", 0):
            continue
        x, y, w, h = ann["bbox"]
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 <= x0 or y1 <= y0:
            continue
        rows.append(f"{index[ann['category_id']]} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                    f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return rows


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


#: The YOLO data file, named as the port's own data/coco.yaml (see the module docstring).
DATA_FILE = "coco.yaml"


def coco_to_yolo(root: Path, splits: list[str], log: Log = print, home: Path | None = None) -> dict[str, Any]:
    """``home``: where ``root`` will live once moved into place (a generated set is built beside it), for the
    absolute paths of ``coco.yaml``."""
    done: dict[str, Any] = {}
    names: list[str] = []
    for split in splits:
        instances = root / "annotations" / f"instances_{split}.json"
        data = json.loads(instances.read_text())
        cats = sorted(data["categories"], key=lambda c: c["id"])
        index = {c["id"]: i for i, c in enumerate(cats)}
        names = [c["name"] for c in cats]
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        labels = root / "labels" / split
        partial = root / "labels" / f".{split}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        lines, boxes = [], 0
        for img in data["images"]:
            rows = _yolo_rows(by_image.get(img["id"], []), img["width"], img["height"], index)
            boxes += len(rows)
            (partial / (Path(img["file_name"]).stem + ".txt")).write_text("".join(r + "\n" for r in rows))
            lines.append(f"./images/{split}/{img['file_name']}\n")
        if labels.exists():
            shutil.rmtree(labels)
        os.replace(partial, labels)
        images = root / "images" / split
        if not images.exists():
            images.parent.mkdir(parents=True, exist_ok=True)
            images.symlink_to(Path("..") / split, target_is_directory=True)  # the COCO images, not a copy
        _write_text(root / f"{split}.txt", "".join(lines))
        done[split] = {"images": len(lines), "boxes": boxes}
    where = (home or root).absolute()
    _write_text(root / DATA_FILE, json.dumps({
        "path": str(where), "train": str(where / f"{splits[0]}.txt"), "val": str(where / f"{splits[-1]}.txt"),
        "nc": len(names), "names": names}, indent=1) + "\n")  # JSON is YAML: YOLOR's yaml.load reads it
    log(f"coco_to_yolo: {json.dumps(done)}")
    return done


STEPS: dict[str, Callable[..., dict[str, Any]]] = {
    "cityscapes_train_ids": cityscapes_train_ids,
    "coco_to_yolo": coco_to_yolo,
}
