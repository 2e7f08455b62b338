"""infer: the toolkit's own deployment inference on the tutorial's demo image (PaddleSeg's deploy/python/infer.py).

The tutorial's last step, kept as its own stage: it shows the exported model runs under the deployment script on
the target device, and leaves the rendered prediction for a person to look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuflow.kinds.base import ModelResult, Result, Role, RunContext, StageKind


@dataclass
class InferResult(Result):
    model_stage: str
    predictions: dict[str, str]


class Infer(StageKind):
    name = "infer"
    description = "The toolkit's deployment inference script on a demo image; keeps the rendered prediction."
    toolkit = True
    produces = InferResult
    consumes = {"model": Role(ModelResult)}
    ui_color = "#ffe3e3"

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> InferResult:
        model = run.one("model")
        assert model is not None
        return InferResult(model_stage=model.name, predictions=outputs)

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, InferResult)
        return f"{result.model_stage}: " + ", ".join(Path(p).name for p in result.predictions.values())
