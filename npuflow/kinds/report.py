"""report: the run's report (JSON + Markdown) against the tutorial's published numbers; the DAG's fan-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuflow.kinds.base import Command, PlanContext, ReportResult, Result, Role, RunContext, StageKind, read_json


class Report(StageKind):
    name = "report"
    description = "Report every stage's numbers next to the tutorial's published ones (report.json, report.md)."
    produces = ReportResult
    consumes = {"stages": Role(Result, required=False, many=True)}
    ui_color = "#f1f3f5"
    runs_after_failures = True

    def command(self, ctx: PlanContext) -> Command:
        run_dir = Path(ctx.plan.run_dir)
        return Command(
            argv=[ctx.var("interpreter"), "-m", "npuflow.report", "--run-dir", str(run_dir),
                  "--recipe", ctx.var("recipe_file")],
            cwd=str(run_dir), env={"PYTHONPATH": ctx.var("project_root")},
            outputs={"json": [str(run_dir / "report.json")], "markdown": [str(run_dir / "report.md")]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ReportResult:
        return ReportResult(json=outputs["json"], markdown=outputs["markdown"])

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ReportResult)
        return f"report at {result.markdown}"

    def xcom(self, result: Result) -> dict[str, Any]:
        # The whole report for REST clients: .../taskInstances/report/xcomEntries/report
        assert isinstance(result, ReportResult)
        return {"report": read_json(Path(result.json), "report")}
