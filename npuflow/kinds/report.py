"""report: the run's report (JSON, Markdown, HTML) against the tutorial's published numbers and the gates; the fan-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuflow.errors import StageRefused
from npuflow.kinds.base import Command, PlanContext, ReportResult, Result, Role, RunContext, StageKind, read_json


class Report(StageKind):
    name = "report"
    in_container = False
    description = "Report every stage's numbers next to the tutorial's and the gates (report.json, .md, .html)."
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
            outputs={"json": [str(run_dir / "report.json")], "markdown": [str(run_dir / "report.md")],
                     "html": [str(run_dir / "report.html")]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ReportResult:
        # Written either way; a night where a selected stage failed (or never ran because one did) must not end
        # green because its report did.
        done = read_json(Path(outputs["json"]), f"stage {run.stage.name}")["stages"]
        ancestors, todo = set(), list(run.stage.needs)
        while todo:
            name = todo.pop()
            if name not in ancestors:
                ancestors.add(name)
                todo += run.plan.stage(name).needs
        upstream = [s.name for s in run.plan.stages if s.enabled and s.name in ancestors]
        failed = [n for n in upstream if not done.get(n, {}).get("ok")]
        if failed:
            raise StageRefused(f"stage {run.stage.name}: the report is written ({outputs['markdown']}), but stage(s) "
                               f"{', '.join(failed)} did not succeed: "
                               + "; ".join(f"{n}: {done[n]['summary']}" if n in done else f"{n}: not run"
                                           for n in failed))
        return ReportResult(json=outputs["json"], markdown=outputs["markdown"])

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ReportResult)
        return f"report at {result.markdown}"

    def xcom(self, result: Result) -> dict[str, Any]:
        # The whole report for REST clients: .../taskInstances/report/xcomEntries/report
        assert isinstance(result, ReportResult)
        return {"report": read_json(Path(result.json), "report")}
