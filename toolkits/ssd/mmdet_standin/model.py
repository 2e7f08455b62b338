"""The detector a config's ``model`` builds: torchvision's SSD, untrained (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def build_detector(model_cfg: dict[str, Any]) -> nn.Module:
    from torchvision.models.detection import ssd300_vgg16, ssdlite320_mobilenet_v3_large

    builders = {"SSDLite320MobileNetV3": ssdlite320_mobilenet_v3_large, "SSD300VGG16": ssd300_vgg16}
    kind = model_cfg["type"]
    if kind not in builders:
        raise SystemExit(f"error: model.type {kind!r}: the stand-in builds {sorted(builders)}")
    torch.manual_seed(0)  # every rank starts from the same weights
    model = builders[kind](weights=None, weights_backbone=None, num_classes=int(model_cfg["num_classes"]) + 1)
    size = int(model_cfg["img_size"])
    model.transform.min_size, model.transform.max_size, model.transform.fixed_size = (size,), size, (size, size)
    momentum = model_cfg.get("bn_momentum")
    if momentum is not None:  # torchvision's 0.03 leaves eval-mode statistics stale on a short run (FACTS)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = float(momentum)
    model.score_thresh = float(model_cfg.get("score_thr", 0.01))
    return model
