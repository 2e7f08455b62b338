"""A person's approval of a new champion: the standard provider's ApprovalOperator after a promote stage.

The promote stage (npuflow/kinds/promote.py, npuflow/registry.py) registers the model and decides; with the
run's ``promotion`` param at ``approval`` it only proposes. This task then asks in Airflow (the UI's "Required
actions", or ``PATCH .../taskInstances/approve_<stage>/-1/hitlDetails`` over REST) with the comparison in its
body. "Approve" moves the MLflow alias (:func:`npuflow.registry.crown`) and emits the model's asset event;
"Reject", or no answer within the recipe's ``approval_timeout_hours`` (the default answer is "Reject"), ends the
task skipped and the champion stays. With nothing to approve (automatic promotion, or a model that lost) the
task skips at once.

Airflow 3.3.2 can fail the try an answer resumes: when the answer arrives before the scheduler has taken in
the exit of the worker that parked the task (about one scheduler loop; a program answering as soon as it sees
``awaiting_input`` does, about one answer in two measured), the scheduler queues the resumed task, then reads
that exit as "finished with state success, but the task instance's state attribute is queued" and fails it
(``SchedulerJobRunner._process_executor_events`` exempts a resumed task only while it is still scheduled).
Nothing has moved then. The task retries (``RETRIES``): its request opens again (the same request, Airflow
clears the answer it did not deliver; a task may not read it back: the supervisor does not serve
``GetHITLDetailResponse`` to tasks) and waits for an answer as before. A retry after the registry was
unreachable on Approve asks again too.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowSkipException

if TYPE_CHECKING:
    from airflow.sdk import Context


class PromotionApproval(ApprovalOperator):
    """:param promote_task: the promote stage's task, whose ``promotion`` XCom is the proposal."""

    #: Tries after a failed one (an answer Airflow did not deliver, the registry unreachable), and how soon.
    RETRIES, RETRY_DELAY = 2, timedelta(seconds=5)

    def __init__(self, *, promote_task: str, timeout_hours: float, **kwargs: Any) -> None:
        super().__init__(subject=f"Promote the model of {promote_task} to champion?", defaults=[self.REJECT],
                         response_timeout=timedelta(hours=timeout_hours), retries=self.RETRIES,
                         retry_delay=self.RETRY_DELAY, **kwargs)
        self.promote_task = promote_task

    def _proposal(self, context: Context) -> dict[str, Any]:
        return context["ti"].xcom_pull(task_ids=self.promote_task, key="promotion") or {}

    def execute(self, context: Context) -> Any:
        proposal = self._proposal(context)
        if not proposal.get("awaiting_approval"):
            raise AirflowSkipException(f"nothing to approve: {proposal.get('why') or self.promote_task + ' ran no proposal'}")
        before = proposal.get("champion_before") or {}
        self.subject = (f"Make {proposal['registered_model']} version {proposal['version']} the champion "
                        f"(replacing version {before.get('version', '-')})?")
        self.body = "\n".join([
            f"**{proposal['metric']}**: {proposal['value']:.4g} (champion: "
            f"{before.get('value') if before.get('value') is not None else '-'})", "",
            proposal["why"], "", f"[The version in MLflow]({proposal.get('url', '')})", "",
            "Approve: it becomes the champion and its asset event goes out. Reject, or no answer in time: the "
            "champion stays."])
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        answer = super().execute_complete(context=context, event=event)
        if answer["chosen_options"] != [self.APPROVE]:
            raise AirflowSkipException(f"{answer['chosen_options']}: the champion stays")
        from npuflow.operators.stage import connection_env

        from npuflow.kinds import kind
        from npuflow.registry import crown
        from npuflow.tracking import CONNECTION_ID

        proposal = self._proposal(context)
        crowned = crown(proposal, {**os.environ, **connection_env(kind("promote"), CONNECTION_ID, self.log)})
        self.log.info("approved by %s: %s", answer.get("responded_by_user"), crowned["why"])
        from npuflow.history import run_provenance
        from npuflow.rundir import run_dir_for

        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        run_dir = run_dir_for(dag_id, run_id)
        for asset in self.outlets:  # what the promote stage's event would have said, and the registry version
            context["outlet_events"][asset].extra = {
                "dag_id": dag_id, "run_id": run_id, "run_dir": str(run_dir), "outputs": proposal.get("model_files", {}),
                "provenance": run_provenance(run_dir, {}), "registered_model": proposal["registered_model"],
                "version": proposal["version"]}
        return crowned
