"""The npuflow adapter of the YOLOR stand-in (see npuflow/torchdet/adapter.py): the model of a ``last.pt`` or
``epoch_NNN.pt`` for the ONNX export and QAT stages, and the YOLO-format training split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from models.tiny import load_checkpoint
from utils.datasets import YoloList


def load(checkpoint: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    model, ckpt = load_checkpoint(checkpoint)
    return model, {"img_size": list(ckpt["img_size"]), "categories": ckpt["categories"], "quant_target": "body"}


def train_data(dataset_root: str, info: dict[str, Any]) -> YoloList:
    return YoloList(Path(dataset_root) / "data.yaml", "train", tuple(info["img_size"]))
