"""YOLO-format checks, as YOLOR reads a dataset: ``<split>.txt`` lists images (``./`` lines relative to the
list's folder); each image's label is the path with ``/images/`` replaced by ``/labels/`` and a ``.txt``
suffix; each row is ``cls xc yc w h`` with a class index below ``nc`` and coordinates normalised to [0, 1].
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from npuflow.datasets.derive import DATA_FILE
from npuflow.datasets.findings import Findings, check_count, header_or_problem

#: Findings that are reported but let the run go on (a background image has an empty label file).
WARNINGS = {"image_without_labels"}


def label_path(image: Path) -> Path:
    """YOLOR's img2label_paths: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``."""
    text = str(image)
    sep_images, sep_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, found, tail = text.rpartition(sep_images)
    return Path((head + sep_labels + tail) if found else text).with_suffix(".txt")


def check_rows(text: str, where: str, nc: int | None) -> list[tuple[str, str]]:
    problems = []
    for number, row in enumerate(text.splitlines(), 1):
        if not row.strip():
            continue
        at = f"{where}:{number}"
        fields = row.split()
        if len(fields) != 5:
            problems.append(("bad_label_row", f"{at}: {len(fields)} fields, expected 5 (cls xc yc w h)"))
            continue
        try:
            cls_f, xc, yc, w, h = map(float, fields)
        except ValueError:
            problems.append(("bad_label_row", f"{at}: not numbers: {row.strip()[:60]}"))
            continue
        if not (math.isfinite(cls_f) and cls_f == int(cls_f)):
            problems.append(("class_out_of_range", f"{at}: class {fields[0]} is not an integer"))
        elif cls_f < 0 or (nc is not None and cls_f >= nc):
            problems.append(("class_out_of_range", f"{at}: class {int(cls_f)} not in 0..{(nc or 1) - 1}"))
        if not all(0.0 <= v <= 1.0 for v in (xc, yc, w, h)):
            problems.append(("coords_not_normalized", f"{at}: {xc} {yc} {w} {h} not all in [0, 1]"))
        elif not (w > 0 and h > 0):
            problems.append(("box_not_positive", f"{at}: width {w} height {h}"))
    return problems


def _check_image(item: tuple[Path, int | None]) -> list[tuple[str, str]]:
    image, nc = item
    header = header_or_problem(image)
    if isinstance(header[0], str):
        return [header]  # type: ignore[list-item]
    label = label_path(image)
    try:
        text = label.read_text()
    except FileNotFoundError:
        return [("missing_label_file", f"{image} has no {label}")]
    except (OSError, UnicodeDecodeError) as exc:
        return [("unreadable_label", f"{label}: {exc}")]
    if not text.strip():
        return [("image_without_labels", str(label))]
    return check_rows(text, str(label), nc)


def _classes(root: Path, found: Findings, expect: dict[str, Any]) -> int | None:
    data_yaml = root / DATA_FILE
    nc = expect.get("categories")
    if not data_yaml.is_file():
        found.warn("missing_data_yaml", f"{data_yaml} (the class count comes from the spec: {nc})")
        return nc
    import yaml

    try:
        declared = yaml.safe_load(data_yaml.read_text())["nc"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        found.error("bad_data_yaml", f"{data_yaml}: {exc!r:.120}")
        return nc
    if nc is not None and declared != nc:
        found.error("class_count_mismatch", f"{data_yaml}: nc {declared}, the spec expects {nc}")
    return declared if isinstance(declared, int) else nc


def validate_yolo(root: Path, split: str, found: Findings, expect: dict[str, Any] | None = None) -> None:
    expect = expect or {}
    list_file = root / f"{split}.txt"
    if not list_file.is_file():
        found.error("missing_list_file", str(list_file))
        return
    nc = _classes(root, found, expect)
    entries, seen = [], set()
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        path = Path(line) if os.path.isabs(line) else list_file.parent / line
        if path in seen:
            found.warn("duplicate_list_entry", f"{list_file}:{number}: {line}")
            continue
        seen.add(path)
        entries.append(path)
    for problems in map(_check_image, [(p, nc) for p in entries]):
        for kind, example in problems:
            (found.warn if kind in WARNINGS else found.error)(kind, example)
    check_count(found, "image", split, len(entries), expect.get("images", {}).get(split))
    found.counts[split] = {"images": len(entries), "classes": nc}
