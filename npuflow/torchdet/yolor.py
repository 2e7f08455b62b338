"""The adapter of the ModelZoo YOLOR port (see npuflow/torchdet/adapter.py): the port's own Darknet and loss.

Imported from the port's folder (the stage's cwd, on ``sys.path``), so ``models.models`` and ``utils.loss`` are the
checkout's. ``load`` rebuilds ``Darknet(cfg)`` from the ``opt.yaml`` the port writes two folders above its
checkpoints (``<project>/<name>/opt.yaml``: cfg, data, hyp, image sizes) and loads the checkpoint's ``model`` (the
EMA weights). The wrapper gives it torchvision's detection convention:

- train: ``compute_loss`` of the port on YOLO targets (image index, class, normalised centre and size);
- eval: the port's inference output (centre x, y, w, h in pixels, objectness, class probabilities), the score of a
  box is objectness x class probability as in the port's ``non_max_suppression``, class-wise NMS at the port's
  test thresholds. The decode is trace-safe for any model, trained or not: the top candidates go to NMS and the
  confidence threshold is applied after it (the same boxes: a box above the threshold is only ever suppressed by
  a higher-scoring one), so no Python branch depends on how many boxes pass.

The port's Darknet forward loops over its layers with routes and shortcuts and cannot be traced by FX: QAT
fake-quantizes its convolutions module by module (``quant_mode: modules``, npuflow/torchdet/qat.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torchvision.ops import batched_nms

from npuflow.torchdet.data import CocoBoxes

#: test.py's defaults in the eight-card script's evaluation: --conf 0.001 --iou 0.65.
CONF_THRES, IOU_THRES, MAX_DET, CANDIDATES = 0.001, 0.65, 300, 3000


def _opt(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint.resolve().parent.parent / "opt.yaml"
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise FileNotFoundError(f"{checkpoint}: the port's opt.yaml beside its weights/ folder is unreadable "
                                f"({path}: {exc})") from None


def _data(opt: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(Path(opt["data"]).read_text())


class YolorDetector(nn.Module):
    def __init__(self, darknet: nn.Module, nc: int, hyp: dict[str, Any]) -> None:
        super().__init__()
        self.darknet = darknet
        darknet.nc, darknet.hyp, darknet.gr = nc, hyp, 1.0  # what train.py attaches before compute_loss
        self.nc = nc

    def _yolo_layers(self) -> list[nn.Module]:
        return [m for m in self.darknet.modules() if hasattr(m, "create_grids")]

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        if self.training:
            assert targets is not None, "training needs targets"
            from utils.loss import compute_loss  # the port's

            loss, _ = compute_loss(self.darknet(x), yolo_targets(targets, x.shape[-2:]).to(x.device), self.darknet)
            return {"loss": loss}
        for layer in self._yolo_layers():
            if not hasattr(layer, "grid"):  # a train-mode forward sized the layer but made no grid
                layer.nx = 0
        io, _ = self.darknet(x)
        return [self.decode(d) for d in io]

    def decode(self, d: torch.Tensor) -> dict[str, torch.Tensor]:
        xy, wh = d[:, :2], d[:, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
        scores, cls = (d[:, 4:5] * d[:, 5:5 + self.nc]).max(1)
        top = torch.topk(scores, min(CANDIDATES, scores.shape[0])).indices
        boxes, scores, cls = boxes[top], scores[top], cls[top]
        keep = batched_nms(boxes, scores, cls, IOU_THRES)
        keep = keep[scores[keep] > CONF_THRES][:MAX_DET]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": cls[keep] + 1}


def yolo_targets(targets: list[dict], size: torch.Size) -> torch.Tensor:
    """torchvision targets (x1, y1, x2, y2 in pixels, labels 1..K) as the port's rows (image, class, xc, yc, w, h)."""
    h, w = float(size[0]), float(size[1])
    rows = []
    for i, t in enumerate(targets):
        b = t["boxes"].float()
        if not len(b):
            continue
        xc, yc = (b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h
        bw, bh = (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h
        rows.append(torch.stack([torch.full_like(xc, i), t["labels"].float() - 1, xc, yc, bw, bh], 1))
    return torch.cat(rows) if rows else torch.zeros(0, 6)


def load(checkpoint: str) -> tuple[nn.Module, dict[str, Any]]:
    # The port's train.py and test.py import torch_npu before their own modules: utils/loss.py calls Tensor.npu(),
    # which torch_npu adds (the real one on Ascend; toolkits/cpu_runtime's in the smoke profile).
    import torch_npu  # noqa: F401
    from models.models import Darknet  # the port's

    opt = _opt(Path(checkpoint))
    data = _data(opt)
    size = int(opt["img_size"][-1])  # [train, test]: the test size
    darknet = Darknet(opt["cfg"], (size, size))
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    darknet.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    hyp_file = Path(checkpoint).resolve().parent.parent / "hyp.yaml"  # the values train.py trained with
    hyp = yaml.safe_load(hyp_file.read_text())
    anno = Path(data["path"]) / "annotations" / "instances_val2017.json"  # where test.py reads the ground truth
    categories = sorted(c["id"] for c in json.loads(anno.read_text())["categories"])
    return YolorDetector(darknet, int(data["nc"]), hyp), {
        "img_size": [size, size], "categories": categories, "quant_target": "darknet", "quant_mode": "modules",
        "trace_safe": True, "data": opt["data"], "epoch": ckpt.get("epoch")}


def train_data(dataset_root: str, info: dict[str, Any]) -> CocoBoxes:
    return CocoBoxes.split(Path(dataset_root), "train2017", tuple(info["img_size"]))
