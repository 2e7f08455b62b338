"""The npuflow adapter of the MMDetection-port stand-in (see npuflow/torchdet/adapter.py): rebuilds the detector
of an ``epoch_N.pth`` from the config stored in its meta, for the ONNX export and QAT stages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from mmdet_standin.model import build_detector

from npuflow.torchdet.data import CocoBoxes


def load(checkpoint: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    cfg = ckpt["meta"]["config"]
    model = build_detector(cfg["model"])
    model.load_state_dict(ckpt["state_dict"])
    size = int(cfg["model"]["img_size"])
    return model, {"img_size": [size, size], "categories": ckpt["meta"]["categories"], "quant_target": "backbone",
                   "config": cfg}


def train_data(dataset_root: str, info: dict[str, Any]) -> CocoBoxes:
    return CocoBoxes.split(Path(dataset_root), "train2017", tuple(info["img_size"]))
