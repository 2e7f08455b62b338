"""The Airflow operator: one thin class over :func:`npuflow.execute.execute_stage`, for every stage kind.

The run's first task resolves the plan from the recipe, the DAG run's params and its run id (the commands
``npuflow plan`` prints) and pins it in the run folder; every task of the run, on any host and try, runs that
pinned plan (``npuflow.pinned``), so a recipe edited meanwhile applies to the next run. Each runs its stage and
pushes a small summary to XCom. What differs between kinds (credentials, cards, extra XCom) is asked of the stage's kind in
``npuflow.kinds``; everything else lives in plain modules that know nothing of Airflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from npuflow.operators.links import MlflowRunLink, ReportLink

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.fleet import HOSTS_ENV, HOSTS_KEY
from npuflow.history import run_provenance
from npuflow.kinds import kind
from npuflow.pinned import check_stage, pinned_plan
from npuflow.plan import Plan, PlanError, build_plan, check_params, device_claim_error
from npuflow.recipe import Recipe, load_recipe
from npuflow.rundir import run_dir_for

if TYPE_CHECKING:
    from airflow.sdk import Context

    from npuflow.kinds.base import StageKind
    from npuflow.proc import StageProcess


def connection_env(stage_kind: StageKind, conn_id: str | None, log: Any) -> dict[str, str]:
    """Connection ``conn_id`` in the variables ``stage_kind`` names (``connection_env``); none when it is not
    defined: a missing connection only matters if it is needed, and the stage then says so."""
    if not conn_id:
        return {}
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        log.info("connection %r not available (%s)", conn_id, type(exc).__name__)
        return {}
    return stage_kind.connection_env(conn)


class RecipeStageOperator(BaseOperator):
    """Run one stage of a recipe as a subprocess in its own process group.

    A failure a retry cannot fix (a bad param, a pool mismatch, missing outputs, no complete checkpoint, no
    disk, a corrupt dataset) raises ``AirflowFailException``, so no retry is scheduled; a crashed rank or a
    lost node raises as is and keeps its retries, which resume from the newest complete checkpoint.

    :param recipe_id: the recipe (and DAG) id, e.g. ``ppyoloe_plus_crn_l_80e_coco``.
    :param stage: the stage's name in the recipe.
    :param kill_grace_s: seconds between SIGTERM and SIGKILL of the stage's process group on kill.
    """

    template_fields: Sequence[str] = ()
    operator_extra_links = (ReportLink(), MlflowRunLink())  # empty except on the report and track stages

    def __init__(self, *, recipe_id: str, stage: str, stage_kind: str, kill_grace_s: float = 10.0,
                 node_rank: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recipe_id = recipe_id
        self.stage = stage
        self.stage_kind = stage_kind
        self.kill_grace_s = kill_grace_s
        self.node_rank = node_rank  # set (the map index) when the stage is one mapped task per node
        self.ui_color = self.kind.ui_color
        self._proc: StageProcess | None = None

    @cached_property
    def recipe(self) -> Recipe:
        return load_recipe(self.recipe_id)

    @cached_property
    def kind(self) -> StageKind:
        return kind(self.stage_kind)

    def plan_for(self, context: Context) -> tuple[Plan, dict[str, Any]]:
        """This task's node's plan as the run pinned it (pinning it if this is the run's first task)."""
        conf = context["dag_run"].conf or {}
        check_params(dict(conf))  # Airflow accepts unknown conf keys silently; a typo must not be ignored
        params = {k: context["params"][k] for k in context["params"]}
        nnodes = params.get("nnodes") or 1
        if self.node_rank is not None:
            hosts = (self.executor_config or {}).get(HOSTS_KEY, [])
            if self.node_rank >= nnodes:
                raise AirflowSkipException(f"node {self.node_rank} is not used by this run (nnodes={nnodes})")
            if nnodes > len(hosts):
                raise StageRefused(f"stage {self.stage}: nnodes={nnodes}, but this deployment has {len(hosts)} "
                                   f"host(s) ({HOSTS_ENV}={','.join(hosts)}): one train task runs per host")

        def build(node: int) -> Plan:
            return build_plan(self.recipe, {**params, "node_rank": node} if node else params, run_id=context["run_id"])

        return pinned_plan(run_dir_for(self.recipe_id, context["run_id"]), self.node_rank or 0, build,
                           recipe=self.recipe, params=params, nnodes=nnodes, log=self.log.info)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._execute(context)
        except (StageRefused, PlanError) as exc:
            raise AirflowFailException(str(exc)) from exc

    def _execute(self, context: Context) -> dict[str, Any]:
        plan, pin = self.plan_for(context)
        stage = check_stage(plan, pin, self.stage, set(self.upstream_task_ids))
        if not stage.enabled:
            raise AirflowSkipException(f"stage {self.stage} not selected by the 'stages' parameter")
        if self.kind.holds_cards:
            problem = device_claim_error(plan.device, self.pool, self.pool_slots)
            if problem:
                raise StageRefused(f"stage {self.stage}: {problem}")
        result = execute_stage(plan, stage, log=self.log.info, log_format=pin["log_format"],
                               on_start=self._started, secret_env=self.secret_env(plan),
                               attempt=context["ti"].try_number, resume=context["params"].get("resume"))
        self.log.info("stage results in %s", stage.stage_dir)
        for asset in self.outlets:  # what a deployment DAG scheduled on the asset needs to find the model
            context["outlet_events"][asset].extra = {
                "dag_id": plan.dag_id, "run_id": plan.run_id, "profile": plan.profile, "run_dir": plan.run_dir,
                "outputs": result.get("announced", {}),
                "provenance": run_provenance(Path(plan.run_dir), pin)}
        for key, value in result.get("xcom", {}).items():
            context["ti"].xcom_push(key=key, value=value)
        if result.get("withheld"):  # a skipped task emits no asset event: deployments keep the model they have
            raise AirflowSkipException(f"stage {self.stage}: {result['withheld']}")
        return {k: result[k] for k in ("ok", "summary", "outputs", "seconds", "metrics") if k in result}

    def secret_env(self, plan: Plan) -> dict[str, str]:
        """The Connection the kind names, in the variables the kind says, as environment of the stage's
        process only (never argv or the task log): a download's login (Cityscapes), MLflow's server."""
        return connection_env(self.kind, self.kind.connection(self.recipe.data, plan), self.log)

    def _started(self, proc: StageProcess) -> None:
        self._proc = proc

    def on_kill(self) -> None:
        if self._proc is not None:
            self.log.info("terminating the process group of stage %s", self.stage)
            self._proc.terminate(self.kill_grace_s)
