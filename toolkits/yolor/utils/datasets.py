"""YOLO-format data as YOLOR reads it: a list file of images; labels at images/ -> labels/, .jpg -> .txt."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from npuflow.torchdet.data import load_image


class YoloList(Dataset):
    """Items are (image CHW in [0, 1] at ``size`` (h, w), target): normalised ``cls xc yc w h`` rows become
    torchvision's ``boxes`` (x1, y1, x2, y2 in input pixels) and ``labels`` (cls + 1)."""

    def __init__(self, data_yaml: Path, split: str, size: tuple[int, int]) -> None:
        meta = json.loads(Path(data_yaml).read_text())  # derive writes JSON, which is YAML
        root = Path(data_yaml).parent
        self.files = [root / line.strip() for line in (root / meta[split]).read_text().splitlines() if line.strip()]
        self.nc = int(meta["nc"])
        self.size = (int(size[0]), int(size[1]))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        path = self.files[i]
        img, _ = load_image(path, self.size)
        label = Path(str(path).replace("/images/", "/labels/")).with_suffix(".txt")
        rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines() if ln.strip()] \
            if label.exists() else []
        h, w = self.size
        boxes = torch.tensor([[(xc - bw / 2) * w, (yc - bh / 2) * h, (xc + bw / 2) * w, (yc + bh / 2) * h]
                              for _, xc, yc, bw, bh in rows], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([int(r[0]) + 1 for r in rows], dtype=torch.int64)
        return img, {"boxes": boxes, "labels": labels}
