"""Real Airflow services for tests: started and stopped with ``npuflow airflow up|down`` in a temporary home,
and a small REST client over them. Nothing is mocked; nothing is left running (``stop`` checks)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npuflow.proc import marked_processes
from npuflow.services import SERVICES_ENV, ServiceConfig, api, process_start_time, read_password, service_processes
from tests.conftest import ROOT, VENV_BIN, free_port

FINISHED = {"success", "failed"}


def quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass
class Services:
    """One running set of services and what a REST user does with it."""

    root: Path
    port: int
    env: dict[str, str]
    up_output: str = ""
    mlflow_url: str | None = None  # `up --mlflow`: MLflow's tracking server beside Airflow
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def cfg(self) -> ServiceConfig:
        return ServiceConfig(home=self.root / "airflow", port=self.port)

    @property
    def url(self) -> str:
        return self.cfg.url

    @property
    def dags_folder(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"])

    @property
    def runs_dir(self) -> Path:
        return Path(self.env["NPUFLOW_RUNS_DIR"])

    def password(self, user: str) -> str:
        return read_password(self.cfg, user)

    def token(self, user: str) -> str:
        if user not in self._tokens:
            status, body = api(self.cfg, "POST", "/auth/token", {"username": user, "password": self.password(user)})
            assert status in (200, 201), (status, body)
            self._tokens[user] = body["access_token"]
        return self._tokens[user]

    def call(self, method: str, path: str, body: Any = None, *, user: str | None = "operator") -> tuple[int, Any]:
        return api(self.cfg, method, path, body, token=self.token(user) if user else None)

    def ok(self, method: str, path: str, body: Any = None, *, user: str = "operator") -> Any:
        status, out = self.call(method, path, body, user=user)
        assert status in (200, 201), f"{method} {path}: HTTP {status} {out}"
        return out

    def wait_dag(self, dag_id: str, timeout: float = 120.0) -> float:
        """Seconds until the api-server knows ``dag_id`` (the dag-processor parsed its file)."""
        start = time.monotonic()
        while self.call("GET", f"/api/v2/dags/{dag_id}")[0] != 200:
            assert time.monotonic() - start < timeout, f"{dag_id} not parsed after {timeout:.0f} s"
            time.sleep(0.5)
        return time.monotonic() - start

    def unpause(self, dag_id: str) -> None:
        self.wait_dag(dag_id)
        assert self.ok("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})["is_paused"] is False

    def trigger(self, dag_id: str, conf: dict[str, Any], *, user: str = "operator") -> str:
        return self.ok("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf},
                       user=user)["dag_run_id"]

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}"

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600.0) -> str:
        """Poll the run until it finishes; returns its state. A timeout fails naming every task's state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.ok("GET", self.run_path(dag_id, run_id))["state"]
            if state in FINISHED:
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} {run_id} still {state} after {timeout:.0f} s: "
                                     f"{ {k: v['state'] for k, v in self.task_instances(dag_id, run_id).items()} }")
            time.sleep(2.0)

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        body = self.ok("GET", f"{self.run_path(dag_id, run_id)}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The task log as the UI shows it: each record's message, and the exception a failure raised."""
        body = self.ok("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/logs/{try_number}")
        lines = []
        for entry in body["content"]:
            if not isinstance(entry, dict):
                lines.append(str(entry))
                continue
            lines.append(str(entry.get("event", "")))
            lines += [f"{e.get('exc_type')}: {e.get('exc_value')}" for e in entry.get("error_detail") or []]
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        return self.ok("GET", f"{self.run_path(dag_id, run_id)}/taskInstances/{task_id}/xcomEntries/{key}")["value"]


def token_without_a_role(env: dict[str, str]) -> str:
    """A JWT the api-server accepts (signed by its auth manager, from the services' config in ``env``) for a
    signed-in user with no role: the auth manager lets it read nothing."""
    script = ("from airflow.api_fastapi.app import create_auth_manager\n"
              "from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser\n"
              "print(create_auth_manager().generate_jwt(SimpleAuthManagerUser(username='outsider', role=None)))")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def npuflow_airflow(env: dict[str, str], *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "npuflow"), "airflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def start(root: Path, *, extra_dags: tuple[Path, ...] = (), parallelism: int = 4,
          project_dags: tuple[str, ...] | None = None, mlflow: bool = False) -> Services:
    """``npuflow airflow up`` in ``root`` with a dags folder holding the project's DAG files (all, or the ids in
    ``project_dags``) and ``extra_dags``, with MLflow's server beside it if ``mlflow``. Also used by
    bench/trigger_latency.py."""
    dags = root / "dags"
    dags.mkdir(parents=True)
    project = sorted((ROOT / "dags").glob("*.py")) if project_dags is None else \
        [ROOT / "dags" / f"{dag_id}.py" for dag_id in project_dags]
    for src in [*project, *extra_dags]:
        shutil.copy(src, dags / src.name)
    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "NPUFLOW_RUNS_DIR": str(root / "runs"), "NPUFLOW_DEFAULT_PROFILE": "smoke", "PYTHONWARNINGS": "ignore"}
    env.pop(SERVICES_ENV, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_port = free_port() if mlflow else None
    proc = npuflow_airflow(env, "up", "--port", str(port), "--parallelism", str(parallelism),
                           *(["--mlflow", "--mlflow-port", str(mlflow_port)] if mlflow_port else []))
    services = Services(root=root, port=port, env=env, up_output=proc.stdout + proc.stderr,
                        mlflow_url=f"http://127.0.0.1:{mlflow_port}" if mlflow_port else None)
    if proc.returncode != 0:
        stop(services)
        raise AssertionError(f"npuflow airflow up failed ({proc.returncode}):\n{services.up_output}")
    return services


def stop(services: Services) -> str:
    """``npuflow airflow down``; fails if any process the services started is still alive afterwards."""
    before = service_processes(services.cfg)
    proc = npuflow_airflow(services.env, "down")
    left = marked_processes(SERVICES_ENV, str(services.cfg.state_dir))
    left += [pid for pid, started in before.items() if process_start_time(pid) == started]
    assert proc.returncode == 0 and not left, f"down: rc {proc.returncode}, left {left}\n{proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr
