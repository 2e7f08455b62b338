"""The adapter of the ModelZoo SSD port (see npuflow/torchdet/adapter.py): the port's own MMDetection detector.

Imported from the port's folder (the stage's cwd, on ``sys.path``), so ``mmdet`` is the port's vendored
MMDetection 2.6 and ``mmcv`` the image's 1.2.7 with ops and the port's ``mmcv_need/``. ``load`` rebuilds the
detector from the config the port stores in every checkpoint's meta (``tools/train.py``: ``cfg.pretty_text``,
with the run's ``--cfg-options`` merged) and loads its ``state_dict``. The wrapper gives it torchvision's detection
convention:

- input: RGB images in [0, 1] at the test pipeline's size; normalised with the config's ``img_norm_cfg`` as the
  port's ``Normalize`` step does (the pipeline loads BGR and converts it, ``to_rgb``);
- train: the port's ``forward_train`` (its SSD head's loss), the box labels shifted to MMDetection's 0..K-1;
- eval: the port's backbone and head, its anchor generator's anchors (made once for the fixed input size) and its
  box coder's ``decode``, softmax scores without the background column (the last, in MMDetection 2.x), then
  class-wise NMS at the config's ``test_cfg``. The port's own post-processing calls ``torch_npu.npu_batch_nms``;
  this one is trace-safe on any device: the top (box, class) candidates go to NMS and the score threshold is
  applied after it (the same detections: a candidate above the threshold is only ever suppressed by a higher one).

The port's training loss runs on Ascend only (measured on torch 2.1, CPU): it hands ``F.cross_entropy`` int32
labels, and encodes its targets with ``torch_npu.npu_bounding_box_encode``. QAT with it runs where torch_npu does;
on a CPU the training step refuses at once, saying so.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import batched_nms

from npuflow.torchdet.adapter import AdapterError
from npuflow.torchdet.data import CocoBoxes

CPU_LOSS = ("the SSD port's training loss runs on Ascend cards only: its SSDHead.loss_single passes int32 labels "
            "to F.cross_entropy (mmdet/models/dense_heads/ssd_head.py: labels.int(); a CPU's kernel takes int64) and "
            "its DeltaXYWHBBoxCoder.encode calls torch_npu.npu_bounding_box_encode")
#: How many (box, class) candidates go to NMS: MMDetection's SSD test_cfg keeps at most 200 per image.
CANDIDATES = 3000


class MmdetSSD(nn.Module):
    def __init__(self, detector: nn.Module, cfg: Any, img_size: tuple[int, int]) -> None:
        super().__init__()
        self.detector = detector
        norm = cfg.img_norm_cfg
        self.register_buffer("mean", torch.tensor(norm["mean"], dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(norm["std"], dtype=torch.float32).view(3, 1, 1))
        self.img_size = img_size
        self.num_classes = int(detector.bbox_head.num_classes)
        test = cfg.test_cfg
        self.iou, self.score_thr = float(test["nms"]["iou_threshold"]), float(test["score_thr"])
        self.max_per_img = int(test["max_per_img"])
        with torch.no_grad():  # the anchors of the fixed input size, from the port's generator
            was = detector.training
            detector.eval()
            feats = detector.extract_feat(torch.zeros(1, 3, *img_size))
            cls_scores, _ = detector.bbox_head(feats)
            detector.train(was)
            sizes = [c.shape[-2:] for c in cls_scores]
            anchors = detector.bbox_head.anchor_generator.grid_anchors(sizes, device="cpu")
        self.register_buffer("anchors", torch.cat(anchors))

    def _normalize(self, images: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        return (x * 255.0 - self.mean) / self.std

    def forward(self, images: list[torch.Tensor] | torch.Tensor, targets: list[dict] | None = None):
        x = self._normalize(images)
        if self.training:
            assert targets is not None, "training needs targets"
            if x.device.type == "cpu":
                raise AdapterError(CPU_LOSS)
            shape = (int(x.shape[-2]), int(x.shape[-1]), 3)
            metas = [{"img_shape": shape, "pad_shape": shape, "ori_shape": shape, "scale_factor": 1.0,
                      "flip": False, "batch_input_shape": shape[:2]} for _ in targets]
            losses = self.detector.forward_train(x, metas, [t["boxes"].float() for t in targets],
                                                 [t["labels"] - 1 for t in targets])
            return {"loss": sum(_total(v) for k, v in losses.items() if "loss" in k)}
        cls_scores, bbox_preds = self.detector.bbox_head(self.detector.extract_feat(x))
        k = self.num_classes
        out = []
        for i in range(x.shape[0]):
            cls = torch.cat([c[i].permute(1, 2, 0).reshape(-1, k + 1) for c in cls_scores])
            deltas = torch.cat([b[i].permute(1, 2, 0).reshape(-1, 4) for b in bbox_preds])
            boxes = self.detector.bbox_head.bbox_coder.decode(self.anchors, deltas, max_shape=self.img_size)
            out.append(self.decode(boxes, cls.softmax(-1)[:, :k]))
        return out

    def decode(self, boxes: torch.Tensor, scores: torch.Tensor) -> dict[str, torch.Tensor]:
        k = scores.shape[1]
        flat = scores.reshape(-1)
        top = torch.topk(flat, min(CANDIDATES, flat.shape[0]))
        box, cls = boxes[top.indices // k], top.indices % k
        keep = batched_nms(box, top.values, cls, self.iou)
        keep = keep[top.values[keep] > self.score_thr][:self.max_per_img]
        return {"boxes": box[keep], "scores": top.values[keep], "labels": cls[keep] + 1}


def _total(value: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    return value.sum() if isinstance(value, torch.Tensor) else sum(v.sum() for v in value)


def categories(ann_file: str | Path, classes: list[str]) -> list[int]:
    """The COCO ids of the detector's labels, as the port's CocoDataset maps them (``get_cat_ids(cat_names=
    CLASSES)``: the annotation file's categories named in CLASSES, in the file's order)."""
    cats, named = json.loads(Path(ann_file).read_text())["categories"], set(classes)
    ids = [c["id"] for c in cats if c["name"] in named]
    if len(ids) != len(classes):
        raise AdapterError(f"{ann_file} names {len(ids)} of the checkpoint's {len(classes)} classes: the model "
                           f"was trained with other categories than this annotation file's")
    return ids


def load(checkpoint: str) -> tuple[nn.Module, dict[str, Any]]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = ckpt.get("meta") or {} if isinstance(ckpt, dict) else {}
    if "config" not in meta or "CLASSES" not in meta or "state_dict" not in ckpt:
        raise AdapterError(f"{checkpoint}: no state_dict, or no config and CLASSES in its meta: not a checkpoint "
                           f"that the SSD port's tools/train.py writes")
    # The port's modules import torch_npu at import time (the real one on Ascend; toolkits/cpu_runtime's on a CPU).
    from mmcv import Config
    from mmdet.models import build_detector  # the port's
    with tempfile.TemporaryDirectory() as tmp:  # mmcv 1.2.7 reads a config from a file only
        text = Path(tmp) / "config.py"
        text.write_text(meta["config"])
        cfg = Config.fromfile(str(text))
    cfg.model.pretrained = None  # the weights come from the checkpoint: nothing is fetched
    detector = build_detector(cfg.model, train_cfg=cfg.get("train_cfg"), test_cfg=cfg.get("test_cfg"))
    detector.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
    flip_aug = next(s for s in cfg.data.test.pipeline if s["type"] == "MultiScaleFlipAug")
    w, h = flip_aug["img_scale"]  # MMDetection's (w, h)
    info = {"img_size": [int(h), int(w)], "categories": categories(cfg.data.val.ann_file, list(meta["CLASSES"])),
            "quant_target": "detector.backbone", "trace_safe": True, "epoch": meta.get("epoch")}
    return MmdetSSD(detector, cfg, (int(h), int(w))), info


def train_data(dataset_root: str, info: dict[str, Any]) -> CocoBoxes:
    data = CocoBoxes.split(Path(dataset_root), "train2017", tuple(info["img_size"]))
    if data.categories != info["categories"]:
        raise AdapterError(f"{data.ann_file}: categories {data.categories} are not the model's {info['categories']}")
    return data
