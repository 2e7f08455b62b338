"""The report and track tasks' operator extra links (light: DAG files import them through the operator at parse time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

URL_PREFIX = "/npuflow"
SERVED = ("report.html", "report.md", "report.json")


def report_url(dag_id: str, run_id: str, name: str = "report.html") -> str:
    return f"{URL_PREFIX}/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}/{name}"


class ReportLink(BaseOperatorLink):
    """On the report stage's task: its run's report.html (computed on the worker, stored as XCom)."""

    name = "HTML report"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if getattr(operator, "stage_kind", None) != "report":
            return ""
        return report_url(ti_key.dag_id, ti_key.run_id)


class MlflowRunLink(BaseOperatorLink):
    """On the track stage's task: the MLflow run it sent (its URL, pushed to XCom by the task)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        if getattr(operator, "stage_kind", None) != "track":
            return ""
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key="mlflow_run_url") or ""
