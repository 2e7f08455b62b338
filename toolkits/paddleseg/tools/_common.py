"""Shared start-up of the stand-in PaddleSeg tools, and the two workarounds paddleseg 2.8.0 needs on paddle 2.6.2.

paddle 2.6 returns 0-D tensors from reductions, which paddleseg 2.8.0 (written for paddle 2.5) indexes as 1-D:
- ``core/train.py`` logs ``l[0]`` of each loss's numpy value (IndexError on a 0-D array): the losses are
  reshaped to ``[1]`` where they are computed (:func:`_losses_1d` wraps ``paddleseg.core.train.loss_computation``);
- ``utils/metrics.calculate_area`` ``paddle.concat``s per-class 0-D sums (concat needs >= 1-D): replaced by the
  same computation that stacks them (:func:`_calculate_area`).
And one in paddle 2.6.2 itself with the protobuf 7 of this stack: fleet's ``get_msg_dict`` (``fleet.init``, which
paddleseg calls for more than one rank) reads ``FieldDescriptor.label``, which protobuf 7 removed; it is replaced
by the same walk over ``is_repeated`` (:func:`_msg_dict`).
All are patched here, at run time, in this process only; site-packages are never edited.
"""

from __future__ import annotations

import importlib
import os
import sys

# paddle 2.6.2 bundles its own zlib: cv2 must be imported before paddle or PNG decoding breaks (FACTS).
import cv2  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle

# The modules, not the functions of the same names that paddleseg.core re-exports.
seg_train = importlib.import_module("paddleseg.core.train")
seg_metrics = importlib.import_module("paddleseg.utils.metrics")

_loss_computation = seg_train.loss_computation


def _losses_1d(*args, **kwargs):
    return [loss.reshape([1]) for loss in _loss_computation(*args, **kwargs)]


def _calculate_area(pred, label, num_classes, ignore_index=255):
    if len(pred.shape) == 4:
        pred = paddle.squeeze(pred, axis=1)
    if len(label.shape) == 4:
        label = paddle.squeeze(label, axis=1)
    if not pred.shape == label.shape:
        raise ValueError(f"Shape of `pred` and `label should be equal, but there are {pred.shape} and {label.shape}.")
    mask = label != ignore_index
    pred_area, label_area, intersect_area = [], [], []
    for i in range(num_classes):
        pred_i = paddle.logical_and(pred == i, mask)
        label_i = label == i
        pred_area.append(paddle.sum(paddle.cast(pred_i, "int64")))
        label_area.append(paddle.sum(paddle.cast(label_i, "int64")))
        intersect_area.append(paddle.sum(paddle.cast(paddle.logical_and(pred_i, label_i), "int64")))
    return paddle.stack(intersect_area), paddle.stack(pred_area), paddle.stack(label_area)


def _msg_dict(msg):
    out = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.is_repeated:
            value = list(value) if f.type != f.TYPE_MESSAGE else [_msg_dict(v) for v in value]
        out[f.name] = value
    return out


seg_train.loss_computation = _losses_1d
seg_metrics.calculate_area = _calculate_area
_strategy = importlib.import_module("paddle.distributed.fleet.base.distributed_strategy")
if not hasattr(importlib.import_module("google.protobuf.descriptor").FieldDescriptor, "label"):
    _strategy.get_msg_dict = _msg_dict


def set_device(device: str) -> None:
    """As upstream: the requested device, else the CPU (PaddleSeg says which in its log: ``Set device: x``)."""
    from paddleseg.utils import logger

    place = device if device == "cpu" or paddle.is_compiled_with_custom_device(device) or (
        device == "gpu" and paddle.is_compiled_with_cuda()) else "cpu"
    logger.info(f"Set device: {place}")
    paddle.set_device(place)
