"""validate_dataset: check the dataset before any card is taken; names every kind of problem found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuflow.errors import StageRefused
from npuflow.kinds.base import (
    Command,
    DatasetResult,
    PlanContext,
    Result,
    Role,
    RunContext,
    StageKind,
    ValidationResult,
    read_json,
)


class ValidateDataset(StageKind):
    name = "validate_dataset"
    in_container = False
    description = "Check the dataset's layout, annotations and images against the spec's counts."
    produces = ValidationResult
    consumes = {"dataset": Role(DatasetResult)}
    ui_color = "#fdf0d5"

    def command(self, ctx: PlanContext) -> Command:
        report = str(ctx.stage_dir / "validation.json")
        splits = [a for split in ctx.plan.dataset["splits"] for a in ("--split", split)]
        return Command(
            argv=[ctx.var("interpreter"), "-m", "npuflow.datasets.validate", ctx.var("dataset_format"),
                  ctx.var("dataset_dir"), *splits, "--expect", ctx.var("dataset_expect"), "--report", report,
                  # the content digest's cache, per deployment: an unchanged dataset is not re-read next night
                  "--digest-cache", str(Path(ctx.plan.run_dir).parent.parent / ".cache" / "dataset-digest")],
            cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"report": [report]})

    def _read(self, run: RunContext) -> ValidationResult:
        report = read_json(run.stage_dir / "validation.json", f"stage {run.stage.name}")
        problems = "; ".join(f"{kind} x{e['count']} (e.g. {e['examples'][0]})" for kind, e in report["errors"].items())
        return ValidationResult(ok=bool(report["ok"]), counts=report["counts"], problems=problems,
                                warnings=sum(v["count"] for v in report["warnings"].values()),
                                content=report.get("content", {}))

    def collect_failure(self, run: RunContext, exit_code: int) -> None:
        if (run.stage_dir / "validation.json").is_file():  # the problems it found, not just its exit code
            self.collect(run, {}, None)

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ValidationResult:
        found = self._read(run)
        if not found.ok:
            raise StageRefused(f"stage {run.stage.name}: dataset problems: {found.problems}")
        return found

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ValidationResult)
        return f"counts {result.counts}, {result.warnings} warning(s)"
