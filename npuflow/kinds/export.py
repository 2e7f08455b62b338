"""export: the toolkit's exporter turns the trained checkpoint into an inference model (the FP32 baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuflow.kinds.base import (
    ModelResult,
    PlanContext,
    Result,
    Role,
    RunContext,
    StageKind,
    TrainResult,
    files_mb,
    model_dir_provided,
)


class Export(StageKind):
    name = "export"
    description = "Export the trained checkpoint with the toolkit's exporter; outputs must name the model's params."
    toolkit = True
    produces = ModelResult
    consumes = {"checkpoint": Role(TrainResult)}
    ui_color = "#e5dbff"

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        return model_dir_provided(outputs, cwd)

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ModelResult:
        return ModelResult(model_dir=str(Path(outputs["params"]).parent), files=outputs, precision="fp32",
                           size_mb=files_mb([outputs["params"]]))

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ModelResult)
        names = ", ".join(sorted(Path(p).name for p in result.files.values()))
        return f"exported {names} (weights {result.size_mb} MB)"
