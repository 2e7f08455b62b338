"""Shared fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """The real services (``npuflow airflow up``) in a temporary home, shared by the REST and UI tests; the
    dags folder also holds the README's asset consumer. Stopped with ``npuflow airflow down`` at the end,
    which fails the session if anything they started is still alive."""
    from tests.airflow_services import start, stop

    services = start(tmp_path_factory.mktemp("services"),
                     extra_dags=(ROOT / "docs" / "examples" / "deploy_on_new_model.py",))
    try:
        yield services
    finally:
        stop(services)
