"""The stand-in's model: a tiny single-scale YOLO-style detector in torchvision's detection convention.

``model(images, targets)`` (train) returns the YOLO losses (box L1, objectness BCE, class CE; each box assigned
to the cell holding its centre); ``model(images)`` (eval) decodes every cell (centre offset, size, objectness x
class probability), keeps scores above ``conf_thres`` and applies class-wise NMS, as YOLOR's
``non_max_suppression`` does, returning boxes in input pixels and labels 1..K.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms


class TinyYolo(nn.Module):
    def __init__(self, nc: int, conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 100) -> None:
        super().__init__()
        chans = [3, 16, 32, 64, 64, 128]
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b),
                                                  nn.SiLU()) for a, b in itertools.pairwise(chans)])
        self.head = nn.Conv2d(chans[-1], 5 + nc, 1)
        self.nc, self.conf_thres, self.iou_thres, self.max_det = nc, conf_thres, iou_thres, max_det

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        pred = self.head(self.body(x))
        if self.training:
            assert targets is not None, "training needs targets"
            return self.loss(pred, targets, x.shape[-2:])
        return self.decode(pred, x.shape[-2:])

    def loss(self, pred: torch.Tensor, targets: list[dict], size: torch.Size) -> dict[str, torch.Tensor]:
        n, _, gh, gw = pred.shape
        h, w = float(size[0]), float(size[1])
        obj_t = torch.zeros(n, gh, gw)
        box_l, cls_l, boxes = pred.new_zeros(()), pred.new_zeros(()), 0
        for b, t in enumerate(targets):
            for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist(), strict=True):
                xc, yc, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
                gx, gy = min(int(xc * gw), gw - 1), min(int(yc * gh), gh - 1)
                obj_t[b, gy, gx] = 1.0
                p = pred[b, :, gy, gx]
                box_t = torch.tensor([xc * gw - gx, yc * gh - gy, bw, bh])
                box_l = box_l + F.l1_loss(torch.sigmoid(p[:4]), box_t, reduction="sum")
                cls_l = cls_l + F.cross_entropy(p[5:].unsqueeze(0), torch.tensor([(int(label) - 1) % self.nc]))
                boxes += 1
        boxes = max(boxes, 1)
        return {"box": box_l / boxes, "obj": F.binary_cross_entropy_with_logits(pred[:, 4], obj_t),
                "cls": cls_l / boxes}

    def decode(self, pred: torch.Tensor, size: torch.Size) -> list[dict[str, torch.Tensor]]:
        n, c, gh, gw = pred.shape
        h, w = size[0], size[1]
        p = pred.permute(0, 2, 3, 1).reshape(n, gh * gw, c)
        gy, gx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        gx, gy = gx.reshape(-1).to(p.dtype), gy.reshape(-1).to(p.dtype)
        s = torch.sigmoid(p[..., :5])
        xc, yc = (gx + s[..., 0]) / gw * w, (gy + s[..., 1]) / gh * h
        bw, bh = s[..., 2] * w, s[..., 3] * h
        boxes = torch.stack([xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2], -1)
        scores, cls = (s[..., 4:5] * torch.softmax(p[..., 5:], -1)).max(-1)
        out = []
        for b in range(n):
            keep = torch.where(scores[b] > self.conf_thres)[0]
            kb, ks, kc = boxes[b, keep], scores[b, keep], cls[b, keep]
            best = batched_nms(kb, ks, kc, self.iou_thres)[: self.max_det]
            out.append({"boxes": kb[best], "scores": ks[best], "labels": kc[best] + 1})
        return out


def load_checkpoint(weights: str) -> tuple[TinyYolo, dict]:
    """The model of a ``last.pt``/``epoch_NNN.pt`` and the checkpoint (nc, img_size, categories, epoch)."""
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = TinyYolo(int(ckpt["nc"]))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
