"""The services' plain parts, without starting Airflow: passwords, health verdicts, the environment."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from npuflow.services import USERS, ServiceConfig, ServiceError, ensure_passwords, unhealthy


def test_passwords_are_created_private_and_kept_across_starts(tmp_path: Path) -> None:
    path = tmp_path / "services" / "passwords.json"
    said: list[str] = []
    first = ensure_passwords(path, said.append)
    assert set(first) == set(USERS) and all(len(p) >= 16 for p in first.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any(p in line for p in first.values() for line in said)  # named, never printed
    assert ensure_passwords(path, said.append) == first


def test_a_hand_written_file_is_kept_completed_and_tightened(tmp_path: Path) -> None:
    path = tmp_path / "passwords.json"
    path.write_text(json.dumps({"admin": "mine"}))
    path.chmod(0o644)
    said: list[str] = []
    passwords = ensure_passwords(path, said.append)
    assert passwords["admin"] == "mine" and set(passwords) == set(USERS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert any("readable by others" in line for line in said)


def test_a_corrupt_passwords_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "passwords.json"
    path.write_text("{not json")
    with pytest.raises(ServiceError, match=r"passwords\.json is not valid JSON"):
        ensure_passwords(path, print)


@pytest.mark.parametrize(("doc", "bad"), [
    pytest.param(None, ["api-server"], id="no-answer"),
    pytest.param({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "unhealthy"},
                  "triggerer": {"status": "healthy"}, "dag_processor": {"status": None}},
                 ["scheduler", "dag_processor"], id="scheduler-and-processor-down"),
    pytest.param({"metadatabase": {"status": "healthy"}, "scheduler": {"status": "healthy"}}, [], id="healthy"),
])
def test_health_verdict(doc: dict | None, bad: list[str]) -> None:
    assert unhealthy(doc) == bad


def test_the_environment_keeps_everything_on_loopback_and_marks_the_processes(tmp_path: Path) -> None:
    env = ServiceConfig(home=tmp_path, port=18080, default_profile="production", base_env={}).env()
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18080/"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,operator:op,viewer:viewer"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(tmp_path / "services" / "passwords.json")
    assert env["NPUFLOW_DEFAULT_PROFILE"] == "production"
    assert env["NPUFLOW_SERVICES"] == str(tmp_path / "services")


def test_the_celery_deployment_runs_postgres_redis_and_a_worker_per_queue(tmp_path: Path) -> None:
    cfg = ServiceConfig(home=tmp_path, port=18080, base_env={}, executor="celery", workers=["node0", "node1"],
                        pg_port=15432, redis_port=16379, heartbeat_timeout_s=20)
    env = cfg.env()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:15432/airflow")
    assert env["AIRFLOW__CELERY__BROKER_URL"].endswith("@127.0.0.1:16379/0")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+" + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["NPUFLOW_HOSTS"] == "node0,node1"
    assert env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == "20"
    secrets = tmp_path / "services" / "datastores.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600  # the generated passwords
    assert cfg.env() == env  # kept across starts
    components = cfg.components()
    assert list(components)[:2] == ["postgres", "redis"]  # started first, stopped last
    assert components["worker-node0"][components["worker-node0"].index("--queues") + 1] == "node0,default"
    assert components["worker-node1"][components["worker-node1"].index("--queues") + 1] == "node1"
    redis_conf = Path(components["redis"][-1]).read_text()
    assert "port 16379" in redis_conf and "requirepass " in redis_conf and "bind 127.0.0.1" in redis_conf


def test_a_worker_host_takes_the_fleet_and_the_urls_from_the_join_file(tmp_path: Path) -> None:
    join = {"AIRFLOW__CELERY__BROKER_URL": "redis://:pw@10.0.0.1:6379/0", "NPUFLOW_HOSTS": "node0,node1",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "http://10.0.0.1:8080/execution/"}
    cfg = ServiceConfig(home=tmp_path, base_env={}, executor="celery", role="worker", workers=["node1"], join_env=join)
    env = cfg.env()
    assert env["NPUFLOW_HOSTS"] == "node0,node1"  # every host parses the same DAG: one train task per node
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://10.0.0.1:8080/execution/"
    assert list(cfg.components()) == ["worker-node1"]  # no datastores, no scheduler on a worker host
