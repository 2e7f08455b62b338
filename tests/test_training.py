"""Distributed training with real launchers and 2 CPU ranks: a rank killed mid-epoch, resume on retry, the task
killed, two nodes on loopback. Each job runs through :func:`execute_stage`, the code the train operator runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from npuflow.errors import StageFailed, StageRefused
from npuflow.execute import execute_stage, job_marker
from npuflow.kinds import registry
from npuflow.kinds.base import RunContext
from npuflow.plan import Plan, build_plan
from npuflow.proc import JOB_ENV, StageProcess, job_processes
from npuflow.recipe import load_recipe, load_recipe_file
from tests.conftest import ROOT, VENV_BIN, free_port

SSD = "ssd300_coco"
PPYOLOE = "ppyoloe_plus_crn_l_80e_coco"

pytestmark = pytest.mark.e2e


def _plan(tmp_path: Path, dag_id: str, params: dict[str, Any], node: str = "n0") -> Plan:
    return build_plan(load_recipe(dag_id), {"profile": "smoke", **params}, run_id="t1", runs_root=tmp_path / node)


def _run(plan: Plan, name: str, log=lambda line: None, **kwargs: Any) -> dict[str, Any]:
    recipe = load_recipe(plan.dag_id)
    return execute_stage(plan, plan.stage(name), log=log, log_format=recipe.log_format, **kwargs)


def _prepared(plan: Plan) -> Plan:
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    return plan


def _rank_of(proc: psutil.Process) -> str | None:
    env = proc.environ()
    return env.get("RANK", env.get("PADDLE_TRAINER_ID"))


def _rank_pid(proc: StageProcess, rank: str) -> int:
    """The worker of ``rank``: the topmost process carrying that rank in its environment."""
    for child in psutil.Process(proc.proc.pid).children(recursive=True):
        if _rank_of(child) == rank and _rank_of(psutil.Process(child.ppid())) != rank:
            return child.pid
    raise AssertionError(f"no process of rank {rank}")


def _kill_rank_when(marker: str, rank: str = "1"):
    """A log callback that SIGKILLs ``rank`` the first time a line contains ``marker``, and the on_start hook."""
    state: dict[str, Any] = {"lines": []}

    def on_start(proc: StageProcess) -> None:
        state["proc"] = proc

    def log(line: str) -> None:
        state["lines"].append(line)
        if marker in line and "killed" not in state:
            state["killed"] = _rank_pid(state["proc"], rank)
            os.kill(state["killed"], signal.SIGKILL)

    return state, log, on_start


def _epochs(lines: list[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for line in lines for m in [re.search(pattern, line)] if m})


def test_ssd_rank_killed_mid_epoch_resumes_from_the_work_dirs_epoch_n_pth_and_follows_the_new_log_json(
        tmp_path: Path) -> None:
    plan = _prepared(_plan(tmp_path, SSD, {"epochs": 6}))
    _state, log, on_start = _kill_rank_when("Epoch [3][1/")
    with pytest.raises(StageFailed) as failed:
        _run(plan, "train", log=log, on_start=on_start, attempt=1)
    assert "failing rank 1 (local rank 1) killed by SIGKILL [torchrun's root cause]" in str(failed.value)
    work_dir = Path(plan.variables["work_dir"])
    assert (work_dir / "latest.pth").resolve().name == "epoch_2.pth"
    first_logs = set(work_dir.glob("*.log.json"))

    time.sleep(1.1)  # MMDetection names its log.json by the second it starts
    lines: list[str] = []
    result = _run(plan, "train", log=lines.append, attempt=2)
    assert result["ok"] and result["argv"][-2:] == ["--resume-from", str(work_dir / "epoch_2.pth")]
    assert any("resumed epoch 2" in line for line in lines)
    assert _epochs(lines, r"Epoch \[(\d+)\]") == [3, 4, 5, 6]  # nothing up to the checkpoint is trained again
    (new_log,) = set(work_dir.glob("*.log.json")) - first_logs
    steps = [json.loads(line) for line in new_log.read_text().splitlines()[1:]]
    train_steps = [s for s in steps if s["mode"] == "train"]
    assert {s["epoch"] for s in train_steps} == {3, 4, 5, 6}
    assert result["metrics"]["train_steps"] == len(train_steps)  # the new log.json was the one followed
    assert (work_dir / "latest.pth").resolve().name == "epoch_6.pth"


def test_paddle_rank_killed_mid_epoch_is_named_and_ppdet_resumes_with_r(tmp_path: Path) -> None:
    plan = _prepared(_plan(tmp_path, PPYOLOE, {"epochs": 4}))
    # paddle's launcher relays rank 0's log with a lag, so the kill lands in epoch 1 or a little later.
    state, log, on_start = _kill_rank_when("Epoch: [1] [0/")
    with pytest.raises(StageFailed) as failed:
        _run(plan, "train", log=log, on_start=on_start, attempt=1)
    message = str(failed.value)
    # paddle's launcher blames rank 0 (which then fails in gloo); the rank watcher saw rank 1 go first.
    assert "failing rank 1 (local rank 1)" in message and f"pid {state['killed']}" in message
    assert "workerlog.1" in message

    lines: list[str] = []
    result = _run(plan, "train", log=lines.append, attempt=2)
    checkpoint = Path(result["argv"][result["argv"].index("-r") + 1])
    resumed_after = int(checkpoint.name)  # ppdet names each snapshot by its epoch
    assert resumed_after < 3 and checkpoint.with_suffix(".pdopt").is_file()
    assert _epochs(lines, r"Epoch: \[(\d+)\]") == list(range(resumed_after + 1, 4))
    assert Path(result["outputs"]["best_model"]).is_file()


def test_an_incomplete_newest_checkpoint_is_skipped_for_the_previous_one(tmp_path: Path) -> None:
    plan = _prepared(_plan(tmp_path, SSD, {"epochs": 2}))
    _run(plan, "train", attempt=1)
    work_dir = Path(plan.variables["work_dir"])
    newest = work_dir / "epoch_2.pth"
    newest.write_bytes(newest.read_bytes()[:-100])  # a node died while writing it
    plan2 = _plan(tmp_path, SSD, {"epochs": 3})
    lines: list[str] = []
    result = _run(plan2, "train", log=lines.append, attempt=2)
    assert any("skipping incomplete checkpoint" in line and "epoch_2.pth" in line for line in lines)
    assert result["argv"][-2:] == ["--resume-from", str(work_dir / "epoch_1.pth")]
    assert _epochs(lines, r"Epoch \[(\d+)\]") == [2, 3]


def _two_nodes(plans: list[Plan], log_format: str) -> list[list[str]]:
    """Run each plan's train stage at once, as two nodes would; return each node's task log lines."""
    logs: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def node(i: int) -> None:
        try:
            execute_stage(plans[i], plans[i].stage("train"), log=logs[i].append, log_format=log_format)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=node, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors
    return logs


def _digests(lines: list[str]) -> dict[str, str]:
    return {m.group(1): m.group(2) for line in lines for m in [re.search(r"rank (\d+): params sha256 (\w+)", line)] if m}


def test_two_torchrun_nodes_on_loopback_c10d_end_with_the_same_parameters(tmp_path: Path) -> None:
    master = f"127.0.0.1:{free_port()}"
    plans = [_prepared(_plan(tmp_path, SSD, {"epochs": 2, "nnodes": 2, "node_rank": r, "master": master,
                                             "rendezvous": "c10d"}, node=f"n{r}")) for r in (0, 1)]
    assert "--rdzv-endpoint" in plans[1].stage("train").argv
    logs = _two_nodes(plans, "mmdet_json")
    digests = {**_digests(logs[0]), **_digests(logs[1])}
    assert sorted(digests) == ["0", "1", "2", "3"]  # world size 4: two ranks on each node
    # only the node that got global rank 0 writes latest.pth; the other says so instead of failing on it
    written = [Path(p.stage("train").outputs["checkpoint"][0]).is_file() for p in plans]
    assert sorted(written) == [False, True], written
    assert any("global rank 0 ran on another" in line for line in logs[written.index(False)])
    assert len(set(digests.values())) == 1, digests


def _ddp_recipe(tmp_path: Path) -> Path:
    """A one-stage recipe whose train stage runs tests/trainers/paddle_ddp.py under paddle's launcher."""
    recipe = {
        "dag_id": "paddle_ddp_test", "title": "t", "tutorial": "t", "schedule": None,
        "toolkit": {"name": "t", "repository": "t", "ref": "t"},
        "dataset": {"spec": "coco2017", "root": "{run_dir}/dataset"},
        "log_format": "ppdet", "published": {}, "default_profile": "smoke", "vars": {"python": "{interpreter}"},
        "profiles": {"smoke": {"description": "t", "device": {"kind": "cpu", "count": 2},
                               "dataset_source": {"kind": "local"}, "env": {"OMP_NUM_THREADS": "1"},
                               "vars": {"launch_log_dir": "{run_dir}/train/log"}}},
        "stages": {"train": {"kind": "train", "cwd": "{run_dir}",
                             "argv": [{"launch": "paddle", "python_args": ["-u"]},
                                      "{project_root}/tests/trainers/paddle_ddp.py", "30"]}},
    }
    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "datasets").symlink_to(ROOT / "recipes" / "datasets")
    path = folder / "paddle_ddp_test.yaml"
    path.write_text(json.dumps(recipe))
    return path


def test_two_paddle_nodes_on_loopback_with_a_master_end_with_the_same_parameters(tmp_path: Path, monkeypatch) -> None:
    path = _ddp_recipe(tmp_path)
    monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(path.parent))
    recipe = load_recipe_file(path)
    master = f"127.0.0.1:{free_port()}"
    plans = []
    for r in (0, 1):
        plan = build_plan(recipe, {"nnodes": 2, "node_rank": r, "master": master}, run_id="t1",
                          runs_root=tmp_path / f"n{r}")
        Path(plan.run_dir).mkdir(parents=True)
        plans.append(plan)
    assert plans[1].stage("train").argv[4:12] == ["--nproc_per_node", "2", "--master", master, "--nnodes", "2",
                                                   "--rank", "1"]
    logs = _two_nodes(plans, "ppdet")
    # paddle's console shows each node's local rank 0; the other ranks are in the node's workerlog files.
    lines = logs[0] + logs[1]
    for plan in plans:
        for worker in (Path(plan.run_dir) / "train" / "log").glob("workerlog.*"):
            lines += worker.read_text().splitlines()
    digests = _digests(lines)
    assert sorted(digests) == ["0", "1", "2", "3"]
    assert len(set(digests.values())) == 1, digests


def _job_pids(prefix: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(JOB_ENV, "").startswith(prefix) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _wait_for(predicate, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def test_killing_the_airflow_task_leaves_no_process_of_the_job(airflow_env: dict) -> None:
    """SIGTERM to the task process is what Airflow sends on "mark failed" and on a timeout (it calls on_kill)."""
    conf = {"profile": "smoke", "epochs": 500}
    dags = subprocess.Popen([str(VENV_BIN / "airflow"), "dags", "test", SSD, "-c", json.dumps(conf)],
                            env=airflow_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        runs = Path(airflow_env["NPUFLOW_RUNS_DIR"]) / SSD
        assert _wait_for(lambda: any("Epoch [" in p.read_text(errors="replace")
                                     for p in runs.glob("*/train/stage.log")), 240), "training never started"
        pids = _job_pids(f"{SSD}/")
        assert len(pids) >= 3  # torchrun and its two ranks
        launcher = min(pids, key=lambda pid: psutil.Process(pid).create_time())
        task_process = psutil.Process(launcher).ppid()
        killed_at = time.monotonic()
        os.kill(task_process, signal.SIGTERM)
        assert _wait_for(lambda: not _job_pids(f"{SSD}/"), 10), _job_pids(f"{SSD}/")
        assert time.monotonic() - killed_at < 10
    finally:
        os.killpg(dags.pid, signal.SIGKILL)
        dags.wait(30)


def test_a_sigkilled_task_process_takes_its_launcher_and_ranks_with_it(tmp_path: Path) -> None:
    """No on_kill runs when the task process is SIGKILLed (a lost heartbeat); PDEATHSIG still stops the job."""
    plan = _prepared(_plan(tmp_path, SSD, {"epochs": 500}))
    job = job_marker(plan, plan.stage("train"))
    script = (
        "import sys\n"
        "from npuflow.plan import build_plan\n"
        "from npuflow.recipe import load_recipe\n"
        "from npuflow.execute import execute_stage\n"
        f"plan = build_plan(load_recipe('{SSD}'), {{'profile': 'smoke', 'epochs': 500}}, "
        f"run_id='t1', runs_root=__import__('pathlib').Path('{tmp_path / 'n0'}'))\n"
        "execute_stage(plan, plan.stage('train'), log=print, log_format='mmdet_json')\n"
    )
    task = subprocess.Popen([str(VENV_BIN / "python"), "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        for line in task.stdout:
            if "Epoch [" in line:
                break
        assert len(job_processes(job)) >= 3
        task.kill()
        assert _wait_for(lambda: not job_processes(job), 10), job_processes(job)
    finally:
        task.kill()
        task.wait(30)


def test_a_retry_that_resumes_from_the_last_checkpoint_succeeds_with_nothing_to_train(tmp_path: Path) -> None:
    """Try 1 trained every epoch and then died (in the final evaluation, say): try 2 resumes from the last
    checkpoint, logs no step line, and is a success with the model on disk, not a failure for a silent log."""
    plan = _prepared(_plan(tmp_path, SSD, {"epochs": 2}))
    first = _run(plan, "train", attempt=1)
    assert first["metrics"]["train_steps"] > 0
    lines: list[str] = []
    second = _run(plan, "train", log=lines.append, attempt=2)
    assert second["ok"] and "--resume-from" in second["argv"]
    assert second["metrics"]["train_steps"] == 0 and second["result"]["metrics"]["resumed_finished"]
    assert "the training had already finished" in "\n".join(lines)
    # The same silent log from a try that trained from scratch is refused: the parser must read its steps.
    run = RunContext(plan=plan, stage=plan.stage("train"), inputs={}, log=lines.append)
    with pytest.raises(StageRefused, match="no step lines the parser recognises"):
        registry()["train"].collect(run, second["outputs"], dict(second["metrics"]))
