"""Stages in containers on a real Docker engine (tests/engine.py starts it): the PP-YOLOE+ smoke DAG with
``runner: docker`` in the image built from docker/paddle-npu.Dockerfile, fake Ascend device nodes seen inside
the container, a killed task leaving no container and no process, a crashed rank named as on the host."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from npuflow.container import JOB_LABEL
from npuflow.execute import StageFailed, execute_stage, job_marker
from npuflow.plan import Plan, build_plan
from npuflow.proc import job_processes
from npuflow.recipe import load_recipe
from tests.conftest import ROOT, VENV_BIN
from tests.engine import STAGE_IMAGES, Engine, running_engine

pytestmark = [pytest.mark.engine, pytest.mark.e2e]

PPYOLOE = "ppyoloe_plus_crn_l_80e_coco"
IMAGE = "npuflow/paddle-npu:smoke"
DOCKER = {"runner": "docker", "image": IMAGE}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with running_engine({IMAGE: STAGE_IMAGES[IMAGE]}) as eng:
        old = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = eng.host  # the supervisor (npuflow.container) reads it
        try:
            yield eng
        finally:
            if old is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = old


@pytest.fixture(scope="module")
def fake_cards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two character devices standing in for /dev/davinci0..1 (the null device's numbers, 1:3)."""
    folder = tmp_path_factory.mktemp("dev")
    for i in range(2):
        os.mknod(folder / f"davinci{i}", 0o666 | 0o020000, os.makedev(1, 3))
    return folder


def _wait_for(predicate: Any, timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return predicate()


def _containers(engine: Engine, job_prefix: str = "") -> list[Any]:
    return [c for c in engine.client().containers.list(all=True)
            if c.labels.get(JOB_LABEL, "").startswith(job_prefix)]


def _plan(tmp_path: Path, params: dict[str, Any]) -> Plan:
    return build_plan(load_recipe(PPYOLOE), {"profile": "smoke", **DOCKER, **params}, run_id="t1",
                      runs_root=tmp_path / "runs")


def _run(plan: Plan, name: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("log", lambda line: None)
    return execute_stage(plan, plan.stage(name), log_format="ppdet", **kwargs)


def test_the_images_build_from_docker_with_the_project_programs(engine: Engine, tmp_path: Path) -> None:
    from npuflow.toolkits import toolkit

    image = engine.client().images.get(IMAGE)
    # the offline build: refs empty (no clone), the pinned commits as npuflow/toolkits/ has them
    assert image.labels["npuflow.toolkits"] == (
        f"PaddleDetection@:{toolkit('PaddleDetection').commit('release_2_7_npu')} "
        f"PaddleSeg@:{toolkit('PaddleSeg').commit('npu_cann8.0')}")
    # Every stage command goes through the entrypoint, which sources CANN's set_env.sh where the base has it.
    set_env = tmp_path / "set_env.sh"
    set_env.write_text("export ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest\n")
    out = engine.client().containers.run(
        IMAGE, ["sh", "-c", "echo $PYTHONPATH; echo $ASCEND_TOOLKIT_HOME; ls /opt/npuflow/npuflow/programs"],
        remove=True, network_mode="none",
        volumes={str(set_env): {"bind": "/usr/local/Ascend/ascend-toolkit/set_env.sh", "mode": "ro"}}).decode()
    lines = out.splitlines()
    assert lines[0] == "/opt/npuflow:/opt/PaddleDetection:/opt/PaddleSeg"
    assert lines[1] == "/usr/local/Ascend/ascend-toolkit/latest" and "paddleseg_act.py" in out


def test_smoke_dag_runs_its_stages_in_containers_with_the_cards_mapped(engine: Engine, fake_cards: Path,
                                                                      airflow_env: dict, tmp_path: Path) -> None:
    """``airflow dags test`` with runner=docker: every toolkit stage runs in the image, the fake cards are
    devices inside the train container, the report is complete, and no container is left."""
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes)
    path = recipes / f"{PPYOLOE}.yaml"
    data = yaml.safe_load(path.read_text())
    data["profiles"]["smoke"]["container"]["devices"] = [f"{fake_cards}/davinci{i}:/dev/davinci{i}" for i in range(2)]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {**airflow_env, "NPUFLOW_RECIPES_DIR": str(recipes), "DOCKER_HOST": engine.host}
    stages = ["prepare_dataset", "validate_dataset", "train", "export", "benchmark_fp32", "report", "gate_fp32"]
    conf = {"profile": "smoke", **DOCKER, "stages": stages, "epochs": 2}  # containers, not learning: 2 epochs
    dags = subprocess.Popen([str(VENV_BIN / "airflow"), "dags", "test", PPYOLOE, "-c", json.dumps(conf)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(dags.stdout), daemon=True)
    reader.start()
    try:
        train = _wait_for(lambda: [c for c in _containers(engine, f"{PPYOLOE}/")
                                   if "/train/" in c.labels[JOB_LABEL] and c.status == "running"], 300)
        assert train, "no running train container appeared"
        probe = train[0].exec_run(["sh", "-c", "stat -c '%n %F %t:%T' /dev/davinci0 /dev/davinci1; id -u"])
        assert probe.exit_code == 0, probe.output
        lines = probe.output.decode().splitlines()
        assert lines[:2] == ["/dev/davinci0 character special file 1:3", "/dev/davinci1 character special file 1:3"]
        assert lines[2] == str(os.getuid())  # the invoking user, not the image's root
        assert dags.wait(900) == 0, "".join(output[-80:])
    finally:
        if dags.poll() is None:
            os.killpg(dags.pid, signal.SIGKILL)
        dags.wait(30)
    run_dir = next((Path(airflow_env["NPUFLOW_RUNS_DIR"]) / PPYOLOE).iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert all(report["stages"][s]["ok"] for s in stages if s in report["stages"])
    for name in ("train", "export", "benchmark_fp32"):
        spec = json.loads((run_dir / name / "container.json").read_text())
        assert spec["image"] == IMAGE and spec["argv"] == json.loads((run_dir / name / "result.json").read_text())["argv"]
    assert not (run_dir / "prepare_dataset" / "container.json").exists()  # the project's own stages stay on the host
    # provenance: the image each container stage ran, by the engine's content id (a tag can move), in the report
    image_id = engine.client().images.get(IMAGE).id
    envs = report["provenance"]["environments"]
    assert {n: envs[n]["image_id"] for n in ("train", "export", "benchmark_fp32")} == dict.fromkeys(
        ("train", "export", "benchmark_fp32"), image_id)
    assert "python" in envs["prepare_dataset"]  # a host stage: its interpreter's own probe
    assert f"| ran in image train, export, benchmark_fp32 | {IMAGE} = {image_id}" in (run_dir / "report.md").read_text()
    metrics = (run_dir / "train" / "metrics.jsonl").read_text().splitlines()
    assert any(json.loads(m)["type"] == "train" for m in metrics)  # the training log was parsed as on the host
    assert not _containers(engine, f"{PPYOLOE}/")


def _rank_in_container(job: str, rank: str) -> int | None:
    for pid in job_processes(job):
        with_rank = psutil.Process(pid)
        try:
            env = with_rank.environ()
            parent = psutil.Process(with_rank.ppid()).environ()
        except psutil.Error:
            continue
        if env.get("PADDLE_TRAINER_ID") == rank and parent.get("PADDLE_TRAINER_ID") != rank:
            return pid
    return None


def test_a_rank_killed_in_the_container_is_named_and_the_retry_resumes(engine: Engine, tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"epochs": 4})
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    job = job_marker(plan, plan.stage("train"))
    killed: list[int] = []

    def log(line: str) -> None:
        if "Epoch: [1] [0/" in line and not killed:
            pid = _rank_in_container(job, "1")
            assert pid is not None, "no rank 1 among the job's processes"
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(StageFailed) as failed:
        _run(plan, "train", log=log, attempt=1)
    message = str(failed.value)
    assert killed and "failing rank 1 (local rank 1)" in message and "workerlog.1" in message, message
    assert not _containers(engine, job)
    result = _run(plan, "train", attempt=2)
    assert "-r" in result["argv"] and Path(result["outputs"]["best_model"]).is_file()
    assert not _containers(engine, job)


def test_a_sigkilled_task_leaves_no_container_and_no_process_within_10_s(engine: Engine, tmp_path: Path) -> None:
    """No on_kill runs for a SIGKILLed task (a lost heartbeat): PDEATHSIG reaches the supervisor, which stops and
    removes the container."""
    plan = _plan(tmp_path, {"epochs": 500})
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    job = job_marker(plan, plan.stage("train"))
    script = (
        "from pathlib import Path\n"
        "from npuflow.plan import build_plan\n"
        "from npuflow.recipe import load_recipe\n"
        "from npuflow.execute import execute_stage\n"
        f"plan = build_plan(load_recipe('{PPYOLOE}'), {json.dumps({'profile': 'smoke', **DOCKER, 'epochs': 500})}, "
        f"run_id='t1', runs_root=Path('{tmp_path / 'runs'}'))\n"
        "execute_stage(plan, plan.stage('train'), log=lambda line: None, log_format='ppdet')\n"
    )
    task = subprocess.Popen([str(VENV_BIN / "python"), "-c", script], cwd=ROOT, env={**os.environ})
    stage_log = Path(plan.stage("train").stage_dir) / "stage.log"
    try:
        assert _wait_for(lambda: stage_log.is_file() and "Epoch: [" in stage_log.read_text(errors="replace"), 240), \
            "training never started"
        assert [c.status for c in _containers(engine, job)] == ["running"]
        assert len(job_processes(job)) >= 3  # the supervisor, the launcher and its ranks (inside the container)
        task.kill()
        killed_at = time.monotonic()
        assert _wait_for(lambda: not _containers(engine, job) and not job_processes(job), 10), \
            (_containers(engine, job), job_processes(job))
        assert time.monotonic() - killed_at < 10
    finally:
        task.kill()
        task.wait(30)


def test_a_missing_image_is_refused_naming_it(engine: Engine, tmp_path: Path) -> None:
    spec = {"image": "npuflow/nope:1", "user": None, "group_add": [], "mounts": [], "devices": [], "env": {},
            "network_mode": "host", "ipc_mode": "host", "shm_gib": 1, "argv": ["true"], "cwd": "/", "job": "t/x/y/node0",
            "home": str(tmp_path), "pass_env": [], "log_path": str(tmp_path / "stage.log")}
    path = tmp_path / "container.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run([str(VENV_BIN / "python"), "-m", "npuflow.container", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 78  # no retry: a retry does not build the image
    assert "error: image 'npuflow/nope:1' is not on this host's engine" in done.stderr
