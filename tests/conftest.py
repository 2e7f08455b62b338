"""Shared fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def scratch(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder of a module or session fixture, removed when the fixture ends: runs and checkpoints of a whole
    suite left in the temp dir would need tens of GB (pyproject sets the same for each test's ``tmp_path``)."""
    folder = factory.mktemp(name)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def embedded_airflow_env(home: Path, migrate: bool = True) -> dict[str, str]:
    """The environment of an embedded Airflow (SQLite, LocalExecutor) in ``home``, its database migrated."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "NPUFLOW_RUNS_DIR": str(home / "runs"),
        "PYTHONWARNINGS": "ignore",
    }
    if migrate:
        subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """An embedded Airflow (SQLite, LocalExecutor) in a temporary home, with a migrated database."""
    return embedded_airflow_env(tmp_path)


@pytest.fixture(scope="session")
def airflow_services(tmp_path_factory: pytest.TempPathFactory):
    """The real services (``npuflow airflow up --mlflow``: with MLflow's server) in a temporary home, shared by
    the REST and UI tests; the dags folder also holds the README's asset consumer. Stopped with ``npuflow
    airflow down`` at the end, which fails the session if anything they started is still alive."""
    from tests.airflow_services import start, stop

    with scratch(tmp_path_factory, "services") as home:
        services = start(home, extra_dags=(ROOT / "docs" / "examples" / "deploy_on_new_model.py",), mlflow=True)
        try:
            yield services
        finally:
            stop(services)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server, started as ``npuflow airflow up --mlflow`` starts it (``make mlflow``'s
    environment), its SQLite store and artifacts in a temporary folder; yields its URL. Per module: its
    uvicorn worker and job consumers must not load the machine under the next module's timing-sensitive
    rank-kill tests."""
    from npuflow.services import mlflow_server_argv, wait_mlflow

    with scratch(tmp_path_factory, "mlflow") as home:
        port, log = free_port(), home / "mlflow.log"
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{home / 'mlflow.db'}",
               "MLFLOW_ARTIFACTS_DESTINATION": str(home / "artifacts")}
        with open(log, "wb") as fh:
            proc = subprocess.Popen(mlflow_server_argv("127.0.0.1", port), env=env, cwd=home, stdout=fh,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_mlflow(url, proc.pid, log, timeout_s=120)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
