"""track: send the run folder to MLflow (npuflow/tracking.py) after the report and the gates, a failed night
included (as a FAILED MLflow run).

Its own stage, not the report's work: an MLflow outage then retries the sending alone (``retries`` in the
recipe) and never a report; whatever the server says, the run folder keeps everything, and ``npuflow track``
sends it later. With no tracking server configured it sends nothing and its summary says why.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npuflow import tracking
from npuflow.kinds.base import Command, PlanContext, ReportResult, Result, Role, RunContext, StageKind, read_json
from npuflow.kinds.gate import GateResult


@dataclass
class TrackResult(Result):
    tracked: bool
    why: str = ""
    url: str = ""
    tracking_uri: str = ""
    experiment_id: str = ""
    mlflow_run_id: str = ""
    status: str = ""


def mlflow_env(conn: Any) -> dict[str, str]:
    """The Airflow Connection's server and login in MLflow's own variables; a worker's MLFLOW_TRACKING_URI wins."""
    if os.environ.get(tracking.URI_ENV) or not conn.host:
        return {}
    host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
    env = {tracking.URI_ENV: host + (f":{conn.port}" if conn.port else "")}
    if conn.login:
        env.update({tracking.USER_ENV: conn.login, tracking.PASSWORD_ENV: conn.password or ""})
    return env


class MlflowConnection:
    """A kind whose process talks to MLflow: the Connection ``mlflow_default`` reaches it as MLflow's variables."""

    def connection(self, recipe_data: dict[str, Any], plan: Any) -> str | None:
        return tracking.CONNECTION_ID

    def connection_env(self, conn: Any) -> dict[str, str]:
        return mlflow_env(conn)


class Track(MlflowConnection, StageKind):
    name = "track"
    in_container = False
    description = "Send the run's params, step metrics, measured numbers, gates and report to MLflow."
    produces = TrackResult
    consumes = {"report": Role(ReportResult, required=False), "gates": Role(GateResult, required=False, many=True)}
    ui_color = "#d0ebff"
    runs_after_failures = True  # a failed night is tracked too, as a FAILED MLflow run

    def command(self, ctx: PlanContext) -> Command:
        out = str(ctx.stage_dir / "tracking.json")
        return Command(argv=[ctx.var("interpreter"), "-m", "npuflow.tracking", "--run-dir", ctx.plan.run_dir,
                             "--out", out],
                       cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"where": [out]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> TrackResult:
        return TrackResult.from_dict(read_json(Path(outputs["where"]), f"stage {run.stage.name}"))  # type: ignore[return-value]

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, TrackResult)
        return f"MLflow run {result.url}" if result.tracked else f"not tracked: {result.why}"

    def xcom(self, result: Result) -> dict[str, Any]:
        assert isinstance(result, TrackResult)
        return {"mlflow_run_url": result.url} if result.tracked else {}
