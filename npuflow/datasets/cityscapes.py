"""Cityscapes checks, for PaddleSeg: it globs ``*_gtFine_labelTrainIds.png`` and pairs by sort order, so a
missing or extra label silently mis-pairs every image after it. Here each ``leftImg8bit`` image must have its
own label (same city, sequence and frame) and vice versa, the same size, and only train ids 0..18 or 255.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from npuflow.datasets.findings import Findings, check_count, header_or_problem, parallel_map

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
_STEM = re.compile(r"^([a-z_]+)_(\d{6})_(\d{6})$")
NUM_TRAIN_IDS = 19
IGNORE = 255


def _index(folder: Path, suffix: str, split: str, found: Findings) -> dict[str, Path]:
    """stem (city_seq_frame) -> file, checking names and that each file sits in its city's folder."""
    out: dict[str, Path] = {}
    for path in sorted(folder.glob(f"*/*{suffix}")):
        stem = path.name[: -len(suffix)]
        match = _STEM.match(stem)
        if not match:
            found.error("bad_file_name", f"{split}: {path} (expected <city>_<seq:6>_<frame:6>{suffix})")
        elif match.group(1) != path.parent.name:
            found.error("city_mismatch", f"{split}: {path} is in folder {path.parent.name!r}")
        else:
            out[stem] = path
    return out


def label_values(path: Path) -> tuple[str, str] | set[int]:
    """The set of pixel values of a label PNG (a 256-bin histogram, no numpy), or a problem."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                return "bad_label_mode", f"{path}: mode {img.mode}, expected 8-bit single channel (L)"
            histogram = img.histogram()
    except (OSError, ValueError) as exc:
        return "unreadable_label", f"{path}: {exc}"
    return {value for value, n in enumerate(histogram) if n}


def _check_pair(pair: tuple[Path, Path]) -> list[tuple[str, str]]:
    image, label = pair
    problems = []
    image_header, label_header = header_or_problem(image), header_or_problem(label)
    if isinstance(image_header[0], str):
        problems.append(image_header)
    if isinstance(label_header[0], str):
        problems.append(("unreadable_label", label_header[1]))
        return problems  # type: ignore[return-value]
    if not isinstance(image_header[0], str) and image_header != label_header:
        problems.append(("label_size_mismatch", f"{label}: {label_header[0]}x{label_header[1]}, image "
                                                f"{image_header[0]}x{image_header[1]}"))
    values = label_values(label)
    if isinstance(values, tuple):
        problems.append(values)
    else:
        bad = sorted(v for v in values if v >= NUM_TRAIN_IDS and v != IGNORE)
        if bad:
            problems.append(("bad_label_value", f"{label}: values {bad[:8]} (train ids are 0..18, 255 = ignore)"))
    return problems  # type: ignore[return-value]


def validate_cityscapes(root: Path, split: str, found: Findings, expect: dict[str, Any] | None = None) -> None:
    image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            found.error("missing_split_dir", str(folder))
    if found.errors.get("missing_split_dir"):
        return
    images = _index(image_dir, IMAGE_SUFFIX, split, found)
    labels = _index(label_dir, LABEL_SUFFIX, split, found)
    for stem in sorted(images.keys() - labels.keys()):
        found.error("missing_label", f"{split}: {images[stem]} has no {stem}{LABEL_SUFFIX}")
    for stem in sorted(labels.keys() - images.keys()):
        found.error("label_without_image", f"{split}: {labels[stem]} has no {stem}{IMAGE_SUFFIX}")
    pairs = [(images[s], labels[s]) for s in sorted(images.keys() & labels.keys())]
    for problems in parallel_map(_check_pair, pairs):
        for kind, example in problems:
            found.error(kind, example)
    check_count(found, "image", split, len(images), (expect or {}).get("images", {}).get(split))
    found.counts[split] = {"images": len(images), "labels": len(labels)}
