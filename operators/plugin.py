"""The Airflow plugin: the report task's "HTML report" and the track task's "MLflow run" links, and the
api-server route that serves the report.

Registered through the ``airflow.plugins`` entry point (pyproject.toml), so every Airflow component of an
installation with npuflow has it, whatever its plugins folder. The route serves only ``report.html``,
``report.md``, ``report.json`` and the report's plots from a run folder under ``NPUFLOW_RUNS_DIR``, to whoever
may read that DAG's runs: the api-server's own authentication (a bearer token, else the UI's session cookie) and
its auth manager's decision for ``GET`` on the DAG's runs. A fleet's api-server listens on the network, and a
report names the run's paths, hosts and numbers.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin
from npuflow.operators.links import SERVED, URL_PREFIX, MlflowRunLink, ReportLink

from npuflow.rundir import run_dir_for, runs_root


def reports_app() -> Any:
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import FileResponse

    app = FastAPI(title="npuflow reports", description="A run's report files, for the report task's link.")

    # No credential: 401; a user the auth manager does not let read this DAG's runs: 403 (before any file lookup,
    # so a refused user learns nothing about which runs exist).
    @app.get("/reports/{dag_id}/{run_id}/{name:path}",
             dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
    def report_file(dag_id: str, run_id: str, name: str) -> FileResponse:
        root = runs_root().resolve()
        run_dir = run_dir_for(dag_id, run_id).resolve()
        path = (run_dir / name).resolve()
        allowed = name in SERVED or (name.startswith("plots/") and name.endswith(".png"))
        if not allowed or root not in run_dir.parents or run_dir not in path.parents or not path.is_file():
            raise HTTPException(status_code=404, detail=f"no report file {name!r} for {dag_id} run {run_id}")
        return FileResponse(path)

    return app


class NpuflowPlugin(AirflowPlugin):
    name = "npuflow"
    operator_extra_links = [ReportLink(), MlflowRunLink()]
    fastapi_apps = [{"app": reports_app(), "url_prefix": URL_PREFIX, "name": "npuflow reports"}]
