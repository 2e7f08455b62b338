"""Tiny but format-faithful COCO generator: real JPEG files and a real ``instances_<split>.json``.

Each category is drawn as its own shape and colour on a noisy background, so a detector has something to learn.
Category ids are taken from COCO's own non-contiguous id space to exercise the id -> class mapping.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

# (COCO id, name, supercategory): a spread of real, non-contiguous ids.
COCO_CATEGORIES = [
    (1, "person", "person"), (3, "car", "vehicle"), (18, "dog", "animal"), (44, "bottle", "kitchen"),
    (62, "chair", "furniture"), (72, "tv", "electronic"), (85, "clock", "indoor"), (90, "toothbrush", "indoor"),
]
_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 230), (230, 200, 30), (200, 40, 200), (30, 200, 200),
            (250, 140, 20), (120, 120, 250)]


def _draw_object(draw: Any, cls: int, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    colour = _COLOURS[cls % len(_COLOURS)]
    if cls % 3 == 0:
        draw.rectangle(box, fill=colour)
    elif cls % 3 == 1:
        draw.ellipse(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def make_coco_split(root: Path, split: str, n_images: int, categories: list[tuple[int, str, str]],
                    size: tuple[int, int], rng: random.Random, first_image_id: int = 1) -> dict[str, Any]:
    """Write ``root/<split>/*.jpg`` and return the instances dict for them."""
    from PIL import Image, ImageDraw

    width, height = size
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for offset in range(n_images):
        image_id = first_image_id + offset
        file_name = f"{image_id:012d}.jpg"
        base = tuple(rng.randint(60, 140) for _ in range(3))
        img = Image.new("RGB", (width, height), base)
        img = Image.blend(img, Image.effect_noise((width, height), 40).convert("RGB"), 0.25)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 3)):
            cls = rng.randrange(len(categories))
            w = rng.randint(width // 5, width // 2)
            h = rng.randint(height // 5, height // 2)
            x = rng.randint(0, width - w - 1)
            y = rng.randint(0, height - h - 1)
            _draw_object(draw, cls, (x, y, x + w, y + h))
            annotations.append({
                "id": len(annotations) + 1 + first_image_id * 100,
                "image_id": image_id,
                "category_id": categories[cls][0],
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(w * h),
                "iscrowd": 0,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
            })
        img.save(root / split / file_name, "JPEG", quality=90)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    return {
        "info": {"description": "npuflow synthetic COCO", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": sup} for cid, name, sup in categories],
    }


def make_coco(root: Path, images_per_split: dict[str, int], n_categories: int, size: tuple[int, int],
              seed: int = 0) -> dict[str, int]:
    """Generate a COCO-layout dataset under ``root``; returns image counts per split."""
    if not 1 <= n_categories <= len(COCO_CATEGORIES):
        raise ValueError(f"categories must be 1..{len(COCO_CATEGORIES)}, got {n_categories}")
    rng = random.Random(seed)
    categories = COCO_CATEGORIES[:n_categories]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    first_id = 1
    for split, count in images_per_split.items():
        instances = make_coco_split(root, split, count, categories, size, rng, first_image_id=first_id)
        first_id += count
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return dict(images_per_split)
