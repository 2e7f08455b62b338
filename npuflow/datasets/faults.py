"""The fault catalogue: ways a real dataset goes wrong, each injected into a clean generated set.

Each fault names the problem kind validation must report for it. The tests run every fault through
``npuflow validate-dataset``; a fault that validation stops naming is a regression.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Sizes of the clean sets the catalogue is injected into (small: the catalogue runs in seconds).
CLEAN = {
    "coco": {"spec": "coco2017", "source": {"kind": "synthetic", "images": {"train2017": 6, "val2017": 3},
                                            "categories": 3, "image_size": [96, 64], "seed": 1}},
    "cityscapes": {"spec": "cityscapes", "source": {"kind": "synthetic", "images": {"train": 4, "val": 2},
                                                    "image_size": [128, 64], "seed": 1}},
    "yolo": {"spec": "coco2017_yolo", "source": {"kind": "synthetic", "images": {"train2017": 6, "val2017": 3},
                                                 "categories": 3, "image_size": [96, 64], "seed": 1}},
}
SPLITS = {"coco": ["train2017", "val2017"], "cityscapes": ["train", "val"], "yolo": ["train2017", "val2017"]}


@dataclass(frozen=True)
class Fault:
    name: str
    format: str
    detected_as: str
    inject: Callable[[Path], None]


def _edit_json(path: Path, change: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def edit_instances(root: Path, split: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to a COCO set's ``instances_<split>.json`` in place."""
    _edit_json(root / "annotations" / f"instances_{split}.json", change)


def _coco(change: Callable[[dict[str, Any]], None], split: str = "train2017") -> Callable[[Path], None]:
    return lambda root: edit_instances(root, split, change)


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _truncate(path: Path, keep: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _resize_png(path: Path, size: tuple[int, int]) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.resize(size).save(path)


def _paint_label(path: Path, value: int) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img = img.copy()
    img.putpixel((0, 0), value)
    img.save(path)


def _label_rows(root: Path, text: str) -> None:
    _first(root, "labels/train2017/*.txt").write_text(text)


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.rename(dst)


CATALOGUE: list[Fault] = [
    # COCO instances + images
    Fault("coco_missing_image_file", "coco", "missing_image_file", lambda r: _first(r, "train2017/*.jpg").unlink()),
    Fault("coco_truncated_image", "coco", "unreadable_image", lambda r: _truncate(_first(r, "train2017/*.jpg"))),
    Fault("coco_size_mismatch", "coco", "image_size_mismatch", _coco(lambda d: d["images"][0].update(width=97))),
    Fault("coco_unknown_image", "coco", "annotation_unknown_image",
          _coco(lambda d: d["annotations"][0].update(image_id=999))),
    Fault("coco_unknown_category", "coco", "annotation_unknown_category",
          _coco(lambda d: d["annotations"][0].update(category_id=2))),
    Fault("coco_bbox_outside", "coco", "bbox_outside_image",
          _coco(lambda d: d["annotations"][0].update(bbox=[90, 0, 50, 10]))),
    Fault("coco_bbox_zero_width", "coco", "bbox_not_positive",
          _coco(lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]))),
    Fault("coco_bbox_nan", "coco", "bad_bbox", _coco(lambda d: d["annotations"][0].update(bbox=[1, 1, float("nan"), 5]))),
    Fault("coco_bbox_string", "coco", "bad_bbox", _coco(lambda d: d["annotations"][0].update(bbox=[1, 1, "w", 5]))),
    Fault("coco_duplicate_image_id", "coco", "duplicate_image_id",
          _coco(lambda d: d["images"].append(dict(d["images"][0])))),
    Fault("coco_duplicate_annotation_id", "coco", "duplicate_annotation_id",
          _coco(lambda d: d["annotations"].append(dict(d["annotations"][0])))),
    Fault("coco_bad_iscrowd", "coco", "bad_iscrowd", _coco(lambda d: d["annotations"][0].update(iscrowd=3))),
    Fault("coco_negative_area", "coco", "bad_area", _coco(lambda d: d["annotations"][0].update(area=-4.0))),
    Fault("coco_corrupt_json", "coco", "unreadable_json",
          lambda r: (r / "annotations" / "instances_train2017.json").write_text("{not json")),
    Fault("coco_missing_annotation_file", "coco", "missing_annotation_file",
          lambda r: (r / "annotations" / "instances_val2017.json").unlink()),
    Fault("coco_bad_structure", "coco", "bad_json_structure",
          lambda r: (r / "annotations" / "instances_train2017.json").write_text('{"images": 1}')),
    Fault("coco_category_dropped", "coco", "category_count_mismatch", _coco(lambda d: d["categories"].pop())),
    Fault("coco_category_id_out_of_range", "coco", "category_id_out_of_range",
          _coco(lambda d: d["categories"].append({"id": 91, "name": "hair brush", "supercategory": "indoor"}))),
    Fault("coco_image_record_dropped", "coco", "image_count_mismatch",
          _coco(lambda d: d.update(images=d["images"][1:],
                                   annotations=[a for a in d["annotations"] if a["image_id"] != d["images"][0]["id"]]))),
    # Cityscapes
    Fault("cityscapes_missing_label", "cityscapes", "missing_label",
          lambda r: _first(r, "gtFine/train/*/*_labelTrainIds.png").unlink()),
    Fault("cityscapes_orphan_label", "cityscapes", "label_without_image",
          lambda r: _first(r, "leftImg8bit/val/*/*_leftImg8bit.png").unlink()),
    Fault("cityscapes_label_size", "cityscapes", "label_size_mismatch",
          lambda r: _resize_png(_first(r, "gtFine/train/*/*_labelTrainIds.png"), (64, 32))),
    Fault("cityscapes_label_ids_not_train_ids", "cityscapes", "bad_label_value",
          lambda r: _paint_label(_first(r, "gtFine/train/*/*_labelTrainIds.png"), 33)),
    Fault("cityscapes_truncated_label", "cityscapes", "unreadable_label",
          lambda r: _truncate(_first(r, "gtFine/val/*/*_labelTrainIds.png"), 40)),
    Fault("cityscapes_wrong_city_folder", "cityscapes", "city_mismatch",
          lambda r: _move(p := _first(r, "leftImg8bit/train/aachen/*.png"), p.parent.parent / "bochum" / p.name)),
    Fault("cityscapes_bad_file_name", "cityscapes", "bad_file_name",
          lambda r: _move(p := _first(r, "leftImg8bit/train/aachen/*.png"), p.with_name("aachen_1_2_leftImg8bit.png"))),
    Fault("cityscapes_missing_split", "cityscapes", "missing_split_dir",
          lambda r: _move(r / "gtFine" / "val", r / "gtFine" / "val_old")),
    # YOLO
    Fault("yolo_missing_list", "yolo", "missing_list_file", lambda r: (r / "val2017.txt").unlink()),
    Fault("yolo_missing_label_file", "yolo", "missing_label_file",
          lambda r: _first(r, "labels/train2017/*.txt").unlink()),
    Fault("yolo_listed_image_missing", "yolo", "missing_image_file",
          lambda r: (r / "val2017.txt").write_text((r / "val2017.txt").read_text() + "./images/val2017/nope.jpg\n")),
    Fault("yolo_four_fields", "yolo", "bad_label_row", lambda r: _label_rows(r, "0 0.5 0.5 0.2\n")),
    Fault("yolo_class_out_of_range", "yolo", "class_out_of_range", lambda r: _label_rows(r, "3 0.5 0.5 0.2 0.2\n")),
    Fault("yolo_pixel_coords", "yolo", "coords_not_normalized", lambda r: _label_rows(r, "0 48 32 20 10\n")),
    Fault("yolo_zero_height", "yolo", "box_not_positive", lambda r: _label_rows(r, "1 0.5 0.5 0.2 0\n")),
    Fault("yolo_nc_mismatch", "yolo", "class_count_mismatch",
          lambda r: _edit_json(r / "coco.yaml", lambda d: d.update(nc=80))),
    Fault("yolo_truncated_image", "yolo", "unreadable_image", lambda r: _truncate(_first(r, "val2017/*.jpg"))),
]
