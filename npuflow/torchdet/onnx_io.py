"""ONNX export of a torchvision-convention detector: the whole model, pre- and post-processing (NMS) included.

The legacy (TorchScript) exporter is used: the dynamo exporter fails on torchvision's NMS (FACTS). The graph
takes one image ``images`` [1, 3, h, w] (RGB, [0, 1]) and returns ``boxes`` [N, 4] (x1, y1, x2, y2 in input
pixels), ``scores`` [N] and ``labels`` [N]; what a benchmark needs to feed and read it is stored in the model's
metadata (``npuflow.img_size``, ``npuflow.categories``), so the ONNX file describes itself.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17


class Exportable(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        det = self.model([images[0]])[0]
        return det["boxes"], det["scores"], det["labels"]


def export(model: nn.Module, info: dict[str, Any], example: torch.Tensor, out: Path, opset: int = OPSET) -> None:
    """Trace ``model`` on ``example`` ([3, h, w]; it must yield at least one detection, or the traced graph
    keeps no detection branch) and write ``out`` with the metadata."""
    import onnx

    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    # torch >= 2.5 takes `dynamo` (and 2.9 defaults it to True); the stage images' torch 2.1 has only the legacy one.
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python control flow
        torch.onnx.export(Exportable(model), (example[None],), str(out), opset_version=opset,
                          input_names=["images"], output_names=["boxes", "scores", "labels"], **legacy)
    graph = onnx.load(str(out))
    for key, value in (("npuflow.img_size", list(info["img_size"])), ("npuflow.categories", info["categories"])):
        graph.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(graph, str(out))

