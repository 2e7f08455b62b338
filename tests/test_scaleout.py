"""The scale-out deployment on loopback: CeleryExecutor on PostgreSQL and Redis (Debian's servers, started by
``npuflow airflow up --executor celery``), a scheduler host with worker ``node0`` and a second "host" joining
with ``--role worker`` as worker ``node1``. SSD's smoke training (torchrun) with nnodes=2, triggered once over REST, runs
as one mapped train task per node, each on its own worker; killing a worker mid-run fails the try cleanly and
the retry resumes from the checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from npuflow.proc import job_processes
from npuflow.services import ServiceConfig, _read_state
from tests.airflow_services import Services, npuflow_airflow
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.services

SSD = "ssd300_coco"  # torchrun ranks on a CPU (the YOLOR port trains as one process there)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("fleet")
    (root / "dags").mkdir()
    (root / "dags" / f"{SSD}.py").write_text((ROOT / "dags" / f"{SSD}.py").read_text())
    port, pg, redis, mlflow = free_port(), free_port(), free_port(), free_port()
    base = {**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"), "NPUFLOW_RUNS_DIR": str(root / "runs"),
            "NPUFLOW_DEFAULT_PROFILE": "smoke", "PYTHONWARNINGS": "ignore"}
    base.pop("NPUFLOW_SERVICES", None)
    server_env = {**base, "AIRFLOW_HOME": str(root / "airflow")}
    worker_env = {**base, "AIRFLOW_HOME": str(root / "host1")}
    server = npuflow_airflow(server_env, "up", "--executor", "celery", "--workers", "node0", "--hosts", "node0,node1",
                             "--port", str(port), "--pg-port", str(pg), "--redis-port", str(redis),
                             "--concurrency", "3", "--heartbeat-timeout", "20", "--mlflow", "--mlflow-port", str(mlflow))
    started = [server_env]
    try:
        assert server.returncode == 0, server.stdout + server.stderr
        join = root / "airflow" / "services" / "celery.env"
        assert join.stat().st_mode & 0o077 == 0  # it holds the DB and broker passwords
        worker_args = ["up", "--executor", "celery", "--role", "worker", "--workers", "node1", "--join", str(join),
                       "--concurrency", "2"]
        worker = npuflow_airflow(worker_env, *worker_args)
        started.append(worker_env)
        assert worker.returncode == 0, worker.stdout + worker.stderr
        services = Services(root=root, port=port, env=server_env)  # REST against the scheduler host
        yield {"services": services, "root": root, "worker_env": worker_env, "worker_args": worker_args,
               "server_out": server.stdout, "mlflow": f"http://127.0.0.1:{mlflow}"}
    finally:
        for env in reversed(started):
            npuflow_airflow(env, "down")
        cluster = root / "airflow" / "services" / "pg"  # under root a link to the cluster in the temp dir
        if cluster.is_symlink():
            shutil.rmtree(cluster.resolve(), ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)  # the runs' checkpoints (conftest.scratch says why)


def _ti(services: Services, run_id: str) -> dict[tuple[str, int], dict[str, Any]]:
    body = services.ok("GET", f"{services.run_path(SSD, run_id)}/taskInstances?limit=100")
    return {(ti["task_id"], ti["map_index"]): ti for ti in body["task_instances"]}


def _digests(text: str) -> dict[str, str]:
    return dict(re.findall(r"rank (\d+): params sha256 ([0-9a-f]+)", text))


def _describe(pids: list[int]) -> list[str]:
    import psutil

    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out.append(f"{pid} (parent {proc.ppid()}, {proc.status()}): {' '.join(proc.cmdline())[:200]}")
        except psutil.Error:
            out.append(f"{pid} (gone)")
    return out


def _epoch(stage_log: Path) -> int:
    """The newest epoch SSD's rank 0 logged (``Epoch [e][i/n]...``), -1 before the first."""
    found = re.findall(r"Epoch \[(\d+)\]", stage_log.read_text(errors="replace")) if stage_log.is_file() else []
    return int(found[-1]) if found else -1


def _run_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / SSD / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)


def test_the_server_runs_postgres_redis_and_the_scheduler_side(fleet: dict[str, Any]) -> None:
    state = _read_state(ServiceConfig(home=fleet["root"] / "airflow"))
    assert {"postgres", "redis", "api-server", "scheduler", "dag-processor", "triggerer", "worker-node0", "mlflow"} \
        <= set(state["components"])
    assert not (fleet["root"] / "airflow" / "services" / "mlflow.db").exists()  # MLflow's store: the PostgreSQL
    assert state["executor"] == "celery"
    health = fleet["services"].ok("GET", "/api/v2/monitor/health")
    assert health["metadatabase"]["status"] == "healthy" and health["scheduler"]["status"] == "healthy"


def test_two_node_training_triggered_once_runs_one_task_per_worker(fleet: dict[str, Any]) -> None:
    services: Services = fleet["services"]
    services.unpause(SSD)
    master = f"127.0.0.1:{free_port()}"
    conf = {"profile": "smoke", "nnodes": 2, "master": master, "rendezvous": "static",
            "stages": ["prepare_dataset", "validate_dataset", "train", "report", "track"]}
    run_id = services.trigger(SSD, conf)
    assert services.wait_run(SSD, run_id, timeout=400) == "success"
    tis = _ti(services, run_id)
    assert tis[("train", 0)]["queue"] == "node0" and tis[("train", 1)]["queue"] == "node1"
    assert tis[("prepare_dataset", -1)]["queue"] == "default"
    # Each node's task (and so its torchrun) ran in the worker of its queue: the task logs say where.
    root = fleet["root"]
    log0 = (root / "airflow" / "services" / "worker-node0.log").read_text(errors="replace")
    log1 = (root / "host1" / "services" / "worker-node1.log").read_text(errors="replace")
    assert "task_id=train/map_index=0/" in log0 and "task_id=train/map_index=1/" not in log0
    assert "task_id=train/map_index=1/" in log1 and "task_id=train/map_index=0/" not in log1
    run_dir = _run_dir(root, run_id)
    node0 = (run_dir / "train" / "stage.log").read_text()
    node1 = (run_dir / "train" / "node1" / "stage.log").read_text()
    digests = {**_digests(node0), **_digests(node1)}
    assert sorted(digests) == ["0", "1", "2", "3"] and len(set(digests.values())) == 1, digests
    assert set(_digests(node1)) == {"2", "3"}  # static ranks: node 1 holds global ranks 2 and 3
    # tracked in the MLflow server `up --mlflow` started, on the deployment's PostgreSQL
    mlflow_run = services.xcom(SSD, run_id, "track", key="mlflow_run_url").rsplit("/", 1)[1]
    with urllib.request.urlopen(f"{fleet['mlflow']}/api/2.0/mlflow/runs/get?run_id={mlflow_run}", timeout=30) as resp:
        tags = {t["key"]: t["value"] for t in json.loads(resp.read())["run"]["data"]["tags"]}
    assert tags["airflow_run_id"] == run_id and tags["npuflow.profile"] == "smoke"
    result1 = json.loads((run_dir / "train" / "node1" / "result.json").read_text())
    assert result1["ok"] and "--node-rank" in result1["argv"] and result1["argv"][result1["argv"].index("--node-rank") + 1] == "1"


def test_a_worker_killed_mid_training_fails_the_try_and_the_retry_resumes(fleet: dict[str, Any]) -> None:
    services: Services = fleet["services"]
    services.unpause(SSD)
    root = fleet["root"]
    conf = {"profile": "smoke", "nnodes": 2, "master": f"127.0.0.1:{free_port()}", "rendezvous": "static",
            "epochs": 12, "stages": ["prepare_dataset", "validate_dataset", "train"]}
    run_id = services.trigger(SSD, conf)
    run_dir = _run_dir(root, run_id)
    stage_log = run_dir / "train" / "stage.log"
    deadline = time.monotonic() + 300
    while _epoch(stage_log) < 3:  # a few checkpoints to resume from, and most of the 12 epochs still to go
        assert time.monotonic() < deadline, "training did not reach epoch 3 in 300 s"
        time.sleep(0.2)
    worker_cfg = ServiceConfig(home=root / "host1")
    worker = _read_state(worker_cfg)["components"]["worker-node1"]
    job1 = f"{SSD}/{run_id}/train/node1"
    assert job_processes(job1), "node 1's training is not running"
    # The host is gone: its worker and everything under it (Airflow runs each task in a process group of its
    # own, so the worker's group alone would leave the task and its job running) die at once.
    import psutil

    tree = [psutil.Process(worker["pid"]), *psutil.Process(worker["pid"]).children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
    killed_at_epoch = _epoch(stage_log)
    assert killed_at_epoch < 12, killed_at_epoch  # killed mid-training
    deadline = time.monotonic() + 30
    while job_processes(job1):
        assert time.monotonic() < deadline, f"node 1's job outlived its worker: {_describe(job_processes(job1))}"
        time.sleep(0.2)
    # Node 0 stops with it and its try fails; the lost worker's try fails when its heartbeat times out.
    deadline = time.monotonic() + 240
    while True:
        tis = _ti(services, run_id)
        states = {k: tis[("train", k)]["state"] for k in (0, 1)}
        if all(tis[("train", k)]["try_number"] >= 2 or states[k] in ("up_for_retry", "failed") for k in (0, 1)):
            break
        assert time.monotonic() < deadline, f"the try did not fail: {states}"
        time.sleep(2)
    again = npuflow_airflow(fleet["worker_env"], *fleet["worker_args"])  # the host is back
    assert again.returncode == 0, again.stdout + again.stderr
    assert services.wait_run(SSD, run_id, timeout=500) == "success"
    tis = _ti(services, run_id)
    assert tis[("train", 0)]["try_number"] == 2 and tis[("train", 1)]["try_number"] == 2
    result0 = json.loads((run_dir / "train" / "result.json").read_text())
    assert result0["attempt"] == 2 and "--resume-from" in result0["argv"], result0["argv"]
    resumed_from = result0["argv"][result0["argv"].index("--resume-from") + 1]
    assert 0 <= int(re.search(r"epoch_(\d+)\.pth", resumed_from).group(1)) <= killed_at_epoch + 1
    first_try = (run_dir / "train" / "nodes").glob("try1-node*.failed")
    assert any(json.loads(p.read_text())["node"] == 0 for p in first_try)  # node 0 failed its try with node 1
    assert not job_processes(f"{SSD}/{run_id}/")
