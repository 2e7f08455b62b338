"""Dataset validation: structural checks that must pass before a night of NPU time is spent.

Problems are collected, not raised one by one, so a report names every kind of fault at once. Errors fail the
stage (exit 1); warnings (an image without annotations, say) are reported and let the run go on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operators.datasets.imageheader import ImageHeaderError, image_size

MAX_EXAMPLES = 5


@dataclass
class Findings:
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    warnings: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, Any] = field(default_factory=dict)

    def error(self, kind: str, example: str) -> None:
        self.errors[kind].append(example)

    def warn(self, kind: str, example: str) -> None:
        self.warnings[kind].append(example)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        def summary(found: dict[str, list[str]]) -> dict[str, Any]:
            return {k: {"count": len(v), "examples": v[:MAX_EXAMPLES]} for k, v in sorted(found.items())}

        return {"ok": self.ok, "counts": self.counts, "errors": summary(self.errors),
                "warnings": summary(self.warnings)}

    def describe(self) -> str:
        if self.ok:
            return "clean"
        return "; ".join(f"{k} x{len(v)} (e.g. {v[0]})" for k, v in sorted(self.errors.items()))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def validate_coco_instances(root: Path, split: str, found: Findings, bbox_tolerance: float = 1.0) -> None:
    """Check ``annotations/instances_<split>.json`` against ``<split>/`` images (headers only)."""
    ann_path = root / "annotations" / f"instances_{split}.json"
    image_dir = root / split
    if not ann_path.is_file():
        found.error("missing_annotation_file", str(ann_path))
        return
    if not image_dir.is_dir():
        found.error("missing_image_dir", str(image_dir))
    try:
        data = json.loads(ann_path.read_text())
    except (OSError, ValueError) as exc:
        found.error("unreadable_json", f"{ann_path}: {exc}")
        return
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        found.error("bad_json_structure", f"{ann_path}: needs lists 'images', 'annotations', 'categories'")
        return

    categories = {}
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int) or not isinstance(cat.get("name"), str):
            found.error("bad_category", f"{split}: {cat!r:.80}")
        elif cat["id"] in categories:
            found.error("duplicate_category_id", f"{split}: category id {cat['id']}")
        else:
            categories[cat["id"]] = cat["name"]

    images: dict[int, dict[str, Any]] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) \
                or not isinstance(img.get("file_name"), str) \
                or not all(isinstance(img.get(k), int) and img[k] > 0 for k in ("width", "height")):
            found.error("bad_image_record", f"{split}: {img!r:.100}")
            continue
        if img["id"] in images:
            found.error("duplicate_image_id", f"{split}: image id {img['id']}")
            continue
        images[img["id"]] = img

    annotated: set[int] = set()
    ann_ids: set[int] = set()
    for ann in data["annotations"]:
        where = f"{split}: annotation {ann.get('id') if isinstance(ann, dict) else ann!r:.40}"
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            found.error("bad_annotation_record", where)
            continue
        if ann["id"] in ann_ids:
            found.error("duplicate_annotation_id", where)
        ann_ids.add(ann["id"])
        img = images.get(ann.get("image_id"))
        if img is None:
            found.error("annotation_unknown_image", f"{where} -> image_id {ann.get('image_id')}")
        if ann.get("category_id") not in categories:
            found.error("annotation_unknown_category", f"{where} -> category_id {ann.get('category_id')}")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_number, bbox))):
            found.error("bad_bbox", f"{where}: bbox {bbox!r:.60}")
        elif bbox[2] <= 0 or bbox[3] <= 0:
            found.error("bbox_not_positive", f"{where}: bbox {bbox}")
        elif img is not None and (bbox[0] < -bbox_tolerance or bbox[1] < -bbox_tolerance
                                  or bbox[0] + bbox[2] > img["width"] + bbox_tolerance
                                  or bbox[1] + bbox[3] > img["height"] + bbox_tolerance):
            found.error("bbox_outside_image", f"{where}: bbox {bbox} in {img['width']}x{img['height']}")
        if ann.get("iscrowd", 0) not in (0, 1):
            found.error("bad_iscrowd", f"{where}: iscrowd {ann.get('iscrowd')!r}")
        if "area" in ann and not (_is_number(ann["area"]) and ann["area"] >= 0):
            found.error("bad_area", f"{where}: area {ann['area']!r}")
        if img is not None:
            annotated.add(img["id"])

    for img in images.values():
        path = image_dir / img["file_name"]
        try:
            width, height = image_size(path)
        except FileNotFoundError:
            found.error("missing_image_file", str(path))
            continue
        except (OSError, ImageHeaderError) as exc:
            found.error("unreadable_image", f"{path}: {exc}")
            continue
        if (width, height) != (img["width"], img["height"]):
            found.error("image_size_mismatch",
                        f"{path}: file is {width}x{height}, JSON says {img['width']}x{img['height']}")
        if img["id"] not in annotated:
            found.warn("image_without_annotations", str(path))

    found.counts[split] = {"images": len(images), "annotations": len(data["annotations"]),
                           "categories": len(categories)}


VALIDATORS = {"coco": validate_coco_instances}


def validate(fmt: str, root: Path, splits: list[str]) -> Findings:
    found = Findings()
    if not root.is_dir():
        found.error("missing_dataset_root", str(root))
        return found
    for split in splits:
        VALIDATORS[fmt](root, split, found)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("format", choices=sorted(VALIDATORS))
    p.add_argument("root", type=Path)
    p.add_argument("--split", action="append", required=True, help="split to check (repeatable)")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    args = p.parse_args(argv)
    started = time.time()
    found = validate(args.format, args.root, args.split)
    report = {**found.to_dict(), "format": args.format, "root": str(args.root), "splits": args.split,
              "seconds": round(time.time() - started, 3)}
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.format} dataset {args.root}: counts {json.dumps(found.counts)}")
    for kind, info in report["warnings"].items():
        print(f"warning: {kind} x{info['count']}, e.g. {info['examples'][0]}")
    if not found.ok:
        print(f"dataset is not usable: {found.describe()}", file=sys.stderr)
        return 1
    print("dataset is clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
