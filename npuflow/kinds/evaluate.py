"""evaluate: the toolkit's own evaluation of an upstream inference model (ACT's ``eval.py --config_path``).

Like compress (:class:`~npuflow.kinds.compress.ActConfigStage`), it writes ``{act_config}`` (the recipe's
``settings.config`` with ``Global.model_dir`` = the upstream model, the reader at this run's dataset) and runs
the toolkit's command on it; the score is read from the pycocotools table the toolkit prints.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from npuflow.errors import StageRefused
from npuflow.kinds.base import Result, RunContext, StageKind
from npuflow.kinds.compress import ActConfigStage

# pycocotools' first summary line: " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.284"
_COCO_AP = re.compile(r"Average Precision\s+\(AP\) @\[ IoU=0\.50:0\.95 \| area=\s*all \| maxDets=100 \] = (-?[0-9.]+)")


@dataclass
class EvalResult(Result):
    model_stage: str
    bbox_map: float


class Evaluate(ActConfigStage, StageKind):
    name = "evaluate"
    uses_card = True
    description = "The toolkit's own evaluation script on an upstream inference model."
    produces = EvalResult
    metrics = ("bbox_map",)
    ui_color = "#ffe3e3"

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> EvalResult:
        found = _COCO_AP.findall((run.stage_dir / "stage.log").read_text(errors="replace"))
        if not found:
            raise StageRefused(f"stage {run.stage.name}: the evaluation printed no COCO AP table")
        model = run.one("model")
        assert model is not None
        return EvalResult(model_stage=model.name, bbox_map=float(found[-1]))

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, EvalResult)
        return f"{result.model_stage}: COCO bbox mAP {result.bbox_map:.4f}"

    def measured(self, result: Result) -> dict[str, float]:
        assert isinstance(result, EvalResult)
        return {"bbox_map": 100.0 * result.bbox_map}
