"""test_checkpoint: the toolkit's own test script on the trained checkpoint (the YOLOR port's ``test.py``).

The port's training evaluates nothing (its per-epoch test is ``if False:``); its eight-card script runs
``test.py`` on ``last.pt`` afterwards, through a hard-coded ``python3 test.py --data data/coco.yaml --device npu``.
This stage runs that command from the recipe, with this run's values, on one card: ``{checkpoint}`` is the train
stage's declared checkpoint. The score is read from the log with the recipe's ``log_format`` parser (the port's own
mAP line, then pycocotools' table, which wins when printed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from npuflow.errors import StageRefused
from npuflow.kinds.base import PlanContext, Result, Role, RunContext, StageKind, TrainResult
from npuflow.kinds.onnx_export import checkpoint_path
from npuflow.logparse import parser_for


@dataclass
class CheckpointScore(Result):
    checkpoint: str
    bbox_map: float
    scores: dict[str, Any] = field(default_factory=dict)


class TestCheckpoint(StageKind):
    name = "test_checkpoint"
    description = "The toolkit's own test script on the trained checkpoint (COCO mAP as the toolkit computes it)."
    toolkit = True
    uses_card = True
    produces = CheckpointScore
    consumes: ClassVar[dict[str, Role]] = {"checkpoint": Role(TrainResult)}
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False,
        "properties": {"checkpoint": {"type": "string", "description": "Which declared output of the train stage. "
                                                                      "Default: checkpoint."}}}
    builtins: ClassVar[dict[str, str]] = {"checkpoint": "the train stage's checkpoint file this stage tests"}
    metrics = ("bbox_map",)
    ui_color = "#ffe3e3"

    def builtin_values(self, ctx: PlanContext) -> dict[str, str]:
        return {"checkpoint": checkpoint_path(ctx)}

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> CheckpointScore:
        parse = parser_for(run.log_format)
        scores: dict[str, Any] = {}
        for line in (run.stage_dir / "stage.log").read_text(errors="replace").splitlines():
            rec = parse(line)
            if rec and rec["type"] == "eval":
                scores.update({k: v for k, v in rec.items() if k != "type"})
        if "bbox_map" not in scores:
            raise StageRefused(f"stage {run.stage.name}: the test script printed no mAP the {run.log_format!r} "
                               f"parser recognises")
        return CheckpointScore(checkpoint=run.stage.builtins["checkpoint"], bbox_map=float(scores["bbox_map"]),
                               scores=scores)

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, CheckpointScore)
        return f"COCO bbox mAP {result.bbox_map:.4f} of {result.checkpoint}"

    def measured(self, result: Result) -> dict[str, float]:
        assert isinstance(result, CheckpointScore)
        return {"bbox_map": 100.0 * result.bbox_map}
