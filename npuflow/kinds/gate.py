"""gate: hold the run to the recipe's quality gates after the report is written; a miss fails the run.

The report evaluates every gate (npuflow/gates.py) and shows them; a gate stage decides on the ones it names
(``settings.gates``), so the report exists whatever the verdict. A miss is not something a retry fixes. The
model assets hang on the gate stages (``assets:``), not on the export: a deployment scheduled on
``model://<dag_id>/exported`` never sees a model that missed its gate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npuflow.kinds.base import (
    Command,
    ModelResult,
    PlanContext,
    ReportResult,
    Result,
    Role,
    RunContext,
    StageKind,
    read_json,
)


@dataclass
class GateResult(Result):
    passed: bool
    gates: list[dict[str, Any]] = field(default_factory=list)
    model_stage: str | None = None  # the model the gate vouches for, which its assets announce
    model_files: dict[str, str] = field(default_factory=dict)


class Gate(StageKind):
    name = "gate"
    in_container = False
    description = "Fail the run when a measured number misses the recipe's quality gate (after the report)."
    produces = GateResult
    consumes = {"report": Role(ReportResult), "model": Role(ModelResult, required=False)}
    settings_schema = {
        "type": "object", "additionalProperties": False, "required": ["gates"],
        "properties": {"gates": {"type": "array", "minItems": 1, "items": {"type": "string"},
                                 "description": "Names of the recipe's gates this stage holds the run to."}},
    }
    ui_color = "#c3fae8"

    def command(self, ctx: PlanContext) -> Command:
        report = ctx.one("report")
        assert report is not None
        out = str(ctx.stage_dir / "gate.json")
        return Command(argv=[ctx.var("interpreter"), "-m", "npuflow.gates", "--report",
                             report.command.outputs["json"][0], "--gates", ",".join(ctx.settings["gates"]),
                             "--out", out],
                       cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"verdict": [out]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> GateResult:
        verdict = read_json(Path(outputs["verdict"]), f"stage {run.stage.name}")
        model = run.one("model")
        return GateResult(passed=verdict["passed"], gates=verdict["gates"], model_stage=model.name if model else None,
                          model_files=model.result.files if model and isinstance(model.result, ModelResult) else {})

    def announced(self, result: Result | None, outputs: dict[str, str]) -> dict[str, str]:
        assert isinstance(result, GateResult)
        return result.model_files or outputs

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, GateResult)
        return "; ".join(("passed " if g["passed"] else "MISSED ") + g["gate"] for g in result.gates)
