"""promote: register the model a gate passed in MLflow and make it the champion only if it is at least as good.

The program is npuflow/registry.py. The stage carries the model assets (``model://<dag_id>/exported``), which
the gates carried before: a run whose model stays challenger ends this task skipped, so no asset event tells
a deployment to take it. With tracking off there is no registry: the gated model is announced as before.

With ``mode: approval`` (the run's ``promotion`` param) a model that would win is only proposed: the DAG
factory adds an ``approve_<stage>`` task after this one (operators/approval.py, the standard provider's
approval operator), which asks a person in Airflow, moves the alias on "Approve" and then carries the asset
event; "Reject" or no answer within ``approval_timeout_hours`` keeps the champion.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npuflow.kinds.base import Command, PlanContext, Result, Role, RunContext, StageKind, read_json
from npuflow.kinds.gate import GateResult
from npuflow.kinds.track import MlflowConnection, TrackResult


@dataclass
class PromoteResult(Result):
    promoted: bool
    why: str
    registry: bool = False
    registered_model: str = ""
    version: str = ""
    url: str = ""
    metric: str = ""
    value: float | None = None
    champion_before: dict[str, Any] | None = None
    awaiting_approval: bool = False
    tracking_uri: str = ""
    model_files: dict[str, str] = field(default_factory=dict)


class Promote(MlflowConnection, StageKind):
    name = "promote"
    in_container = False
    description = ("Register the gated model in MLflow (challenger) and promote it to champion only if it is at "
                   "least as good on the same validation set; its assets follow the champion.")
    produces = PromoteResult
    consumes = {"gate": Role(GateResult), "tracking": Role(TrackResult)}
    approval = True
    settings_schema = {
        "type": "object", "additionalProperties": False, "required": ["registered_model", "metric"],
        "properties": {
            "registered_model": {"type": "string", "description": "MLflow registered model, e.g. {dag_id}-int8"},
            "precision": {"type": "string", "enum": ["fp32", "int8"], "default": "fp32"},
            "metric": {"type": "string", "description": "The report's measured number that decides (higher wins), "
                                                        "e.g. benchmark_fp32.bbox_map"},
            "tolerance": {"type": ["number", "string"], "description": "How far below the champion a challenger "
                                                                      "may be and still replace it"},
            "mode": {"type": "string", "description": "auto, or approval: a person approves in Airflow"},
            "approval_timeout_hours": {"type": "number", "exclusiveMinimum": 0,
                                       "description": "How long the approval waits; then the champion stays"},
        },
    }
    ui_color = "#ffe8cc"

    def command(self, ctx: PlanContext) -> Command:
        gate, track = ctx.one("gate"), ctx.one("tracking")
        assert gate is not None and track is not None
        out = str(ctx.stage_dir / "promotion.json")
        return Command(argv=[ctx.var("interpreter"), "-m", "npuflow.registry", "--run-dir", ctx.plan.run_dir,
                             "--tracking", track.command.outputs["where"][0],
                             "--gate-result", str(Path(gate.command.stage_dir) / "result.json"),
                             "--name", ctx.setting("registered_model"), "--precision", ctx.setting("precision", "fp32"),
                             "--metric", ctx.setting("metric"), "--tolerance", str(ctx.setting("tolerance", 0)),
                             "--mode", ctx.setting("mode", "auto"), "--out", out],
                       cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"decision": [out]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> PromoteResult:
        gate = run.one("gate")
        data = read_json(Path(outputs["decision"]), f"stage {run.stage.name}")
        files = gate.result.model_files if gate and isinstance(gate.result, GateResult) else {}
        return PromoteResult.from_dict({**data, "model_files": files})  # type: ignore[return-value]

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, PromoteResult)
        if result.awaiting_approval:
            return f"proposed for champion, waiting for approval: {result.why}"
        return ("champion: " if result.promoted else "champion stays: ") + result.why

    def withheld(self, result: Result | None) -> str | None:
        assert isinstance(result, PromoteResult)
        if result.awaiting_approval:
            return f"the champion moves only once a person approves in the approval task after this one: {result.why}"
        return None if result.promoted else f"champion stays, no asset event: {result.why}"

    def announced(self, result: Result | None, outputs: dict[str, str]) -> dict[str, str]:
        assert isinstance(result, PromoteResult)
        return result.model_files or outputs

    def xcom(self, result: Result) -> dict[str, Any]:
        assert isinstance(result, PromoteResult)
        return {"promotion": result.to_dict()}
