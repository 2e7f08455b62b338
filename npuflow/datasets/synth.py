"""Tiny but format-faithful generators: COCO (real JPEGs, real ``instances_<split>.json``) and Cityscapes.

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


def make_coco(root: Path, images_per_split: dict[str, int], size: tuple[int, int], seed: int = 0,
              categories: int = 3) -> dict[str, int]:
    """Generate a COCO-layout dataset under ``root``; returns image counts per split."""
    if not 1 <= categories <= len(COCO_CATEGORIES):
        raise ValueError(f"categories must be 1..{len(COCO_CATEGORIES)}, got {categories}")
    rng = random.Random(seed)
    chosen = COCO_CATEGORIES[:categories]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    first_id = 1
    for split, count in images_per_split.items():
        instances = make_coco_split(root, split, count, chosen, size, rng, first_image_id=first_id)
        first_id += count
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
    return dict(images_per_split)


# Cityscapes: (label name as in cityscapesscripts' labels.py, colour in the generated photo).
_CITYSCAPES_CLASSES = [("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
                       ("vegetation", (107, 142, 35)), ("sky", (70, 130, 180)), ("car", (0, 0, 142)),
                       ("person", (220, 20, 60)), ("pole", (153, 153, 153))]
CITYSCAPES_CITIES = {"train": ["aachen", "bochum"], "val": ["frankfurt"], "test": ["berlin"]}


def _scene(rng: random.Random, width: int, height: int) -> list[tuple[str, list[tuple[int, int]]]]:
    """Polygons of a street scene: sky, buildings, vegetation, road, sidewalk, then cars/people/poles on top."""
    horizon = rng.randint(height // 3, height // 2)
    objects = [("sky", [(0, 0), (width, 0), (width, horizon), (0, horizon)]),
               ("building", [(0, horizon // 2), (width // 2, horizon // 3), (width // 2, horizon + 4),
                             (0, horizon + 4)]),
               ("vegetation", [(width // 2, horizon // 2), (width, horizon // 2), (width, horizon + 4),
                               (width // 2, horizon + 4)]),
               ("sidewalk", [(0, horizon), (width, horizon), (width, height), (0, height)]),
               ("road", [(width // 5, horizon), (4 * width // 5, horizon), (width, height), (0, height)])]
    for _ in range(rng.randint(1, 3)):
        label = rng.choice(["car", "person", "pole"])
        w = rng.randint(width // 10, width // 4)
        h = rng.randint(height // 10, height // 3)
        x = rng.randint(0, width - w - 1)
        y = rng.randint(horizon, height - h - 1) if height - h - 1 > horizon else horizon
        objects.append((label, [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]))
    return objects


def make_cityscapes(root: Path, images_per_split: dict[str, int], size: tuple[int, int], seed: int = 0,
                    **_: Any) -> dict[str, int]:
    """Write what the two Cityscapes packages hold: ``leftImg8bit`` PNGs and ``gtFine`` polygon JSONs.

    The ``labelTrainIds`` PNGs are not written here: they are derived with cityscapesscripts, as for the real set.
    """
    from PIL import Image, ImageDraw

    colours = dict(_CITYSCAPES_CLASSES)
    rng = random.Random(seed)
    width, height = size
    for split, count in images_per_split.items():
        cities = CITYSCAPES_CITIES.get(split, [split])
        for index in range(count):
            city = cities[index % len(cities)]
            stem = f"{city}_{index // len(cities):06d}_{19 + index:06d}"
            img_dir = root / "leftImg8bit" / split / city
            gt_dir = root / "gtFine" / split / city
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            objects = _scene(rng, width, height)
            img = Image.new("RGB", (width, height))
            draw = ImageDraw.Draw(img)
            for label, polygon in objects:
                draw.polygon(polygon, fill=colours[label])
            img = Image.blend(img, Image.effect_noise((width, height), 30).convert("RGB"), 0.15)
            img.save(img_dir / f"{stem}_leftImg8bit.png")
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps({
                "imgHeight": height, "imgWidth": width,
                "objects": [{"label": label, "polygon": [list(p) for p in polygon]} for label, polygon in objects],
            }))
    return dict(images_per_split)


#: Generators of the formats a dataset is downloaded in (a YOLO set is derived from a generated COCO set).
GENERATORS = {"coco": make_coco, "cityscapes": make_cityscapes}
