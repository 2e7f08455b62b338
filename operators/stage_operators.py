"""Airflow operators: one thin class per stage kind over :mod:`operators.stages.execute`.

Each operator rebuilds the run's plan from the recipe, the DAG run's params and its run id (the plan is
deterministic, so every task sees the same commands ``npuflow plan`` prints), runs its stage, and pushes a small
summary to XCom. Everything else lives in plain modules that know nothing of Airflow.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from operators.plan import Plan, build_plan, check_params, device_claim_error
from operators.recipe import Recipe, load_recipe
from operators.rundir import write_json
from operators.stages.execute import StageFailed, execute_stage

if TYPE_CHECKING:
    from airflow.sdk import Context

    from operators.proc import StageProcess


class RecipeStageOperator(BaseOperator):
    """Run one stage of a recipe as a subprocess in its own process group.

    :param recipe_id: the recipe (and DAG) id, e.g. ``ppyoloe_plus_crn_l_80e_coco``.
    :param stage: the stage's name in the recipe.
    :param kill_grace_s: seconds between SIGTERM and SIGKILL of the stage's process group on kill.
    """

    template_fields: Sequence[str] = ()
    stage_kind: ClassVar[str] = ""
    ui_color = "#e8f0fe"

    def __init__(self, *, recipe_id: str, stage: str, kill_grace_s: float = 10.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipe_id = recipe_id
        self.stage = stage
        self.kill_grace_s = kill_grace_s
        self._proc: StageProcess | None = None

    @cached_property
    def recipe(self) -> Recipe:
        return load_recipe(self.recipe_id)

    def plan_for(self, context: Context) -> Plan:
        conf = context["dag_run"].conf or {}
        check_params(dict(conf))  # Airflow accepts unknown conf keys silently; a typo must not be ignored
        params = {k: context["params"][k] for k in context["params"]}
        return build_plan(self.recipe, params, run_id=context["run_id"])

    def execute(self, context: Context) -> dict[str, Any]:
        plan = self.plan_for(context)
        stage = plan.stage(self.stage)
        if not stage.enabled:
            raise AirflowSkipException(f"stage {self.stage} not selected by the 'stages' parameter")
        write_json(Path(plan.run_dir) / "plan.json", plan.to_dict())
        self.check_claim(plan)
        result = execute_stage(plan, stage, log=self.log.info, log_format=self.recipe.data["log_format"],
                               on_start=self._started, secret_env=self.secret_env(plan),
                               **self.stage_options(context))
        self.log.info("stage results in %s", stage.stage_dir)
        for asset in self.outlets:  # what a deployment DAG scheduled on the asset needs to find the model
            context["outlet_events"][asset].extra = {
                "dag_id": plan.dag_id, "run_id": plan.run_id, "profile": plan.profile, "run_dir": plan.run_dir,
                "outputs": result.get("outputs", {})}
        return {k: result[k] for k in ("ok", "summary", "outputs", "seconds", "metrics") if k in result}

    def check_claim(self, plan: Plan) -> None:
        """Stages that take no cards have nothing to check."""

    def stage_options(self, context: Context) -> dict[str, Any]:
        """Extra arguments of execute_stage for this stage kind."""
        return {}

    def secret_env(self, plan: Plan) -> dict[str, str]:
        """Credentials the stage's process needs; only the dataset download has any."""
        return {}

    def _started(self, proc: StageProcess) -> None:
        self._proc = proc

    def on_kill(self) -> None:
        if self._proc is not None:
            self.log.info("terminating the process group of stage %s", self.stage)
            self._proc.terminate(self.kill_grace_s)


class PrepareDatasetOperator(RecipeStageOperator):
    """Make the recipe's dataset available: download and extract it, read it from disk, or generate it.

    A download behind a login (Cityscapes) takes the user and password from the Airflow Connection the dataset
    spec names; they reach the download process through its environment, never its argv or the task log.
    """

    stage_kind = "prepare_dataset"
    ui_color = "#fdf0d5"

    def secret_env(self, plan: Plan) -> dict[str, str]:
        login = self.recipe.dataset.get("download", {}).get("login")
        if plan.dataset["source"]["kind"] != "download" or not login:
            return {}
        from airflow.sdk import BaseHook

        from operators.datasets.prepare import PASSWORD_ENV, USER_ENV  # not at DAG parse time

        try:
            conn = BaseHook.get_connection(login["connection"])
        except Exception as exc:  # a missing connection only matters if a login is needed; the stage says so
            self.log.warning("connection %r not available (%s)", login["connection"], type(exc).__name__)
            return {}
        return {USER_ENV: conn.login or "", PASSWORD_ENV: conn.password or ""}


class ValidateDatasetOperator(RecipeStageOperator):
    """Check the dataset before any card is taken; fails naming every kind of problem found."""

    stage_kind = "validate_dataset"
    ui_color = "#fdf0d5"


class DistributedTrainOperator(RecipeStageOperator):
    """Start the recipe's launcher (``paddle.distributed.launch``, ``torchrun`` or the toolkit's own script),
    parse its log into metrics.jsonl, and on a retry resume from the newest complete checkpoint."""

    stage_kind = "train"
    ui_color = "#d3f9d8"

    def stage_options(self, context: Context) -> dict[str, Any]:
        return {"attempt": context["ti"].try_number, "resume": context["params"].get("resume")}

    def check_claim(self, plan: Plan) -> None:
        problem = device_claim_error(plan.device, self.pool, self.pool_slots)
        if problem:
            raise StageFailed(f"stage {self.stage}: {problem}")


class ExportModelOperator(RecipeStageOperator):
    """Export the best checkpoint with the toolkit's own exporter and check the files it must write."""

    stage_kind = "export"
    ui_color = "#e5dbff"


class InferenceBenchmarkOperator(RecipeStageOperator):
    """Latency percentiles, throughput and accuracy of the exported model."""

    stage_kind = "benchmark"
    ui_color = "#ffe3e3"


class RunReportOperator(RecipeStageOperator):
    """Write report.json / report.md for the run, next to the tutorial's published numbers."""

    stage_kind = "report"
    ui_color = "#f1f3f5"

    def execute(self, context: Context) -> dict[str, Any]:
        result = super().execute(context)
        outputs = result.get("outputs", {})
        self.log.info("report: %s", outputs.get("markdown"))
        if outputs.get("json"):  # the whole report, for REST clients: .../taskInstances/report/xcomEntries/report
            context["ti"].xcom_push(key="report", value=json.loads(Path(outputs["json"]).read_text()))
        return result


OPERATOR_FOR_KIND: dict[str, type[RecipeStageOperator]] = {
    cls.stage_kind: cls
    for cls in (PrepareDatasetOperator, ValidateDatasetOperator, DistributedTrainOperator, ExportModelOperator,
                InferenceBenchmarkOperator, RunReportOperator)
}
