"""COCO instances as torchvision detection samples, and a model's detections over a split as COCO results."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from npuflow.detdata import load_rgb, to_coco


def load_image(path: Path, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
    """RGB image resized to ``size`` (h, w), CHW float in [0, 1]; and its original (w, h)."""
    rgb, orig = load_rgb(path, size)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), orig


class CocoBoxes(Dataset):
    """One split of a COCO layout (``annotations/instances_<split>.json`` + ``<split>/``), images resized to
    a fixed (h, w); label k is the k-th smallest category id (the same order ppdet and YOLO labels use)."""

    def __init__(self, ann_file: Path | str, img_dir: Path | str, size: tuple[int, int]) -> None:
        self.ann_file, self.img_dir, self.size = Path(ann_file), Path(img_dir), (int(size[0]), int(size[1]))
        ann = json.loads(self.ann_file.read_text())
        self.categories = sorted(c["id"] for c in ann["categories"])
        label = {cid: i + 1 for i, cid in enumerate(self.categories)}
        self.images = sorted(ann["images"], key=lambda im: im["id"])
        self.boxes: dict[int, list[tuple[list[float], int]]] = defaultdict(list)
        for a in ann["annotations"]:
            if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0:
                self.boxes[a["image_id"]].append((a["bbox"], label[a["category_id"]]))

    @classmethod
    def split(cls, root: Path | str, split: str, size: tuple[int, int]) -> CocoBoxes:
        root = Path(root)
        return cls(root / "annotations" / f"instances_{split}.json", root / split, size)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        im = self.images[i]
        img, (w0, h0) = load_image(self.img_dir / im["file_name"], self.size)
        sx, sy = self.size[1] / w0, self.size[0] / h0
        rows = self.boxes.get(im["id"], [])
        boxes = torch.tensor([[x * sx, y * sy, (x + w) * sx, (y + h) * sy] for (x, y, w, h), _ in rows],
                             dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([lab for _, lab in rows], dtype=torch.int64)
        return img, {"boxes": boxes, "labels": labels, "image_id": torch.tensor(im["id"]),
                     "orig_size": torch.tensor([h0, w0])}


def collate(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    return [b[0] for b in batch], [b[1] for b in batch]


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: CocoBoxes, batch_size: int = 4) -> list[dict[str, Any]]:
    """The model's detections over ``data`` as COCO results (eval mode; the caller restores train mode)."""
    model.eval()
    results: list[dict[str, Any]] = []
    for start in range(0, len(data), batch_size):
        samples = [data[i] for i in range(start, min(start + batch_size, len(data)))]
        detections = model([s[0] for s in samples])
        assert len(detections) == len(samples)
        for (img, target), det in zip(samples, detections):  # noqa: B905 - Python 3.9 in the stage images
            h0, w0 = target["orig_size"].tolist()
            results += to_coco(det["boxes"], det["scores"], det["labels"], int(target["image_id"]),
                               (w0 / img.shape[2], h0 / img.shape[1]), data.categories)
    return results
