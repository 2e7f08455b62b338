"""prepare_dataset: make the recipe's dataset available (download + extract, read from disk, or generate)."""

from __future__ import annotations

from typing import Any

from npuflow.kinds.base import Command, DatasetResult, PlanContext, Result, RunContext, StageKind, read_json


class PrepareDataset(StageKind):
    name = "prepare_dataset"
    in_container = False
    description = "Make the dataset available: download and extract it, read it from disk, or generate it."
    produces = DatasetResult
    ui_color = "#fdf0d5"

    def command(self, ctx: PlanContext) -> Command:
        out = str(ctx.stage_dir / "dataset.json")
        return Command(
            argv=[ctx.var("interpreter"), "-m", "npuflow.datasets.prepare", "--spec", ctx.var("dataset_spec"),
                  "--root", ctx.var("dataset_dir"), "--source", ctx.var("dataset_source"), "--out", out],
            cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"dataset": [out]})

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        return {"root": ctx.var("dataset_dir")}

    def connection(self, recipe_data: dict[str, Any], plan: Any) -> str | None:
        from npuflow.recipe import load_dataset_spec

        login = load_dataset_spec(recipe_data["dataset"]["spec"]).get("download", {}).get("login")
        return login["connection"] if login and plan.dataset["source"]["kind"] == "download" else None

    def connection_env(self, conn: Any) -> dict[str, str]:
        from npuflow.datasets.prepare import PASSWORD_ENV, USER_ENV

        return {USER_ENV: conn.login or "", PASSWORD_ENV: conn.password or ""}

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> DatasetResult:
        data = read_json(run.stage_dir / "dataset.json", f"stage {run.stage.name}")
        return DatasetResult(root=data["root"], source=data["source"], format=data["format"],
                             details={k: v for k, v in data.items() if k not in ("root", "source", "format")})

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, DatasetResult)
        return f"{result.source} dataset at {result.root}"
