"""Shared fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def airflow_env(tmp_path: Path) -> dict[str, str]:
    """An embedded Airflow (SQLite, LocalExecutor) in a temporary home, with a migrated database."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "NPUFLOW_RUNS_DIR": str(tmp_path / "runs"),
        "PYTHONWARNINGS": "ignore",
    }
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env
