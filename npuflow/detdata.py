"""Detection data without a framework (numpy and PIL): the resized image every PyTorch-side program feeds, and
detections back to COCO results. The torch stand-ins, the export and QAT programs and the onnxruntime
benchmark share it, so the benchmark's preprocessing is the training's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def load_rgb(path: Path | str, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """RGB image resized (bilinear) to ``size`` (h, w) as float32 HWC in [0, 1], and its original (w, h)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        orig = rgb.size
        rgb = rgb.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(rgb, dtype=np.float32) / 255.0, orig


def to_coco(boxes: Any, scores: Any, labels: Any, image_id: int, scale: tuple[float, float],
            categories: list[int]) -> list[dict[str, Any]]:
    """Detections in input pixels (labels 1..K) -> COCO result dicts in the original image's pixels;
    ``scale`` is (original w / input w, original h / input h)."""
    sx, sy = scale
    out = []
    rows = np.asarray(boxes).reshape(-1, 4).tolist(), np.asarray(scores).tolist(), np.asarray(labels).tolist()
    if not len(rows[0]) == len(rows[1]) == len(rows[2]):
        raise ValueError(f"{len(rows[0])} boxes, {len(rows[1])} scores and {len(rows[2])} labels")
    # No zip(strict=True): the stage images' Python is 3.9 (tests/test_stage_python.py).
    for (x1, y1, x2, y2), score, lab in zip(*rows):  # noqa: B905
        if 1 <= int(lab) <= len(categories):
            out.append({"image_id": int(image_id), "category_id": categories[int(lab) - 1], "score": float(score),
                        "bbox": [x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy]})
    return out
