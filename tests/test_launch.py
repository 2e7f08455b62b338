"""Launcher argv and device environment for paddle.distributed.launch and torchrun, one node and several."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from npuflow.launch import device_env, job_id, launch_argv
from npuflow.plan import PlanError, build_plan
from npuflow.recipe import load_recipe


def _device(kind: str = "npu", count: int = 4, nnodes: int = 1, node_rank: int = 0, master: str | None = None,
            rendezvous: str | None = None, ids: list[int] | None = None) -> dict:
    return {"kind": kind, "count": count, "ids": ids or list(range(count)), "nnodes": nnodes,
            "node_rank": node_rank, "master": master, "rendezvous": rendezvous}


TORCHRUN = ["python", "-m", "torch.distributed.run", "--nproc_per_node"]


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        pytest.param(_device("cpu", 2), [*TORCHRUN, "2", "--standalone"], id="single-node"),
        pytest.param(_device("npu", 8, nnodes=2, node_rank=1, master="10.0.0.1:29400"),
                     [*TORCHRUN, "8", "--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "10.0.0.1:29400",
                      "--rdzv-id", "job"], id="multi-node-c10d"),
        pytest.param(_device("gpu", 4, nnodes=2, node_rank=1, master="head:29500", rendezvous="static"),
                     [*TORCHRUN, "4", "--nnodes", "2", "--node-rank", "1", "--master-addr", "head",
                      "--master-port", "29500"], id="multi-node-static"),
    ],
)
def test_torchrun_argv(device: dict, expected: list[str]) -> None:
    assert launch_argv("torchrun", "python", [], device, None, "job") == expected


def test_torchrun_keeps_per_rank_logs_and_tees_them() -> None:
    argv = launch_argv("torchrun", "python", [], _device("cpu", 2), "/runs/x/train/log", "job")
    assert argv[-6:] == ["--log-dir", "/runs/x/train/log", "--redirects", "3", "--tee", "3"]


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        pytest.param(_device("cpu", 2), ["--nproc_per_node", "2"], id="cpu"),
        pytest.param(_device("npu", 4, ids=[4, 5, 6, 7]), ["--devices", "4,5,6,7"], id="npu"),
        pytest.param(_device("npu", 8, nnodes=2, node_rank=1, master="10.0.0.1:8090"),
                     ["--devices", "0,1,2,3,4,5,6,7", "--master", "10.0.0.1:8090", "--nnodes", "2", "--rank", "1"],
                     id="multi-node"),
    ],
)
def test_paddle_launch_argv(device: dict, expected: list[str]) -> None:
    assert launch_argv("paddle", "python", [], device, None) == ["python", "-m", "paddle.distributed.launch", *expected]


@pytest.mark.parametrize(
    ("launcher", "device", "expected"),
    [
        pytest.param("paddle", _device("npu", ids=[4, 5]), {"PADDLE_XCCL_BACKEND": "npu"}, id="paddle-npu"),
        pytest.param("paddle", _device("cpu"), {}, id="paddle-cpu"),
        pytest.param("torchrun", _device("npu", ids=[4, 5]), {"ASCEND_RT_VISIBLE_DEVICES": "4,5"}, id="torch-npu"),
        pytest.param("torchrun", _device("gpu", ids=[2, 3]),
                     {"CUDA_VISIBLE_DEVICES": "2,3", "TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}, id="torch-gpu"),
        pytest.param("torchrun", _device("cpu"), {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}, id="torch-cpu"),
    ],
)
def test_device_env(launcher: str, device: dict, expected: dict) -> None:
    assert device_env(launcher, device) == expected


def test_job_id_is_shared_by_nodes_and_safe() -> None:
    assert job_id("yolor_p6_coco", "scheduled__2026-11-23T01:00:00+00:00") == "yolor_p6_coco-scheduled__2026-11-23T01-00-00-00-00"


@pytest.fixture
def torchrun_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The PP-YOLOE+ recipe with its train stage started by torchrun instead (a recipe value, nothing else)."""
    recipe = load_recipe("ppyoloe_plus_crn_l_80e_coco")
    data = yaml.safe_load(recipe.path.read_text())
    data["stages"]["train"]["argv"][0] = {"launch": "torchrun"}
    (tmp_path / recipe.path.name).write_text(yaml.safe_dump(data))
    (tmp_path / "datasets").symlink_to(recipe.path.parent / "datasets")
    monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path))
    return recipe.dag_id


def test_plan_renders_torchrun_with_device_env(torchrun_recipe: str) -> None:
    plan = build_plan(load_recipe(torchrun_recipe), {"devices": "4,5,6,7", "nnodes": 2, "node_rank": 1,
                                                     "master": "10.1.1.1:29400"}, run_id="r1")
    train = plan.stage("train")
    assert train.argv[:12] == ["python", "-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "2",
                               "--rdzv-backend", "c10d", "--rdzv-endpoint", "10.1.1.1:29400", "--rdzv-id"]
    assert train.argv[12] == f"{torchrun_recipe}-r1"
    assert train.env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5,6,7"
    assert train.env["FLAGS_npu_jit_compile"] == "0"  # the recipe's env still applies on top


def test_rendezvous_is_refused_for_paddle() -> None:
    with pytest.raises(PlanError, match="rendezvous applies to torchrun"):
        build_plan(load_recipe("ppyoloe_plus_crn_l_80e_coco"), {"rendezvous": "static", "nnodes": 2,
                                                                 "master": "h:1"}, run_id="r1")


def test_cpu_share_gives_each_rank_its_cores_as_dist_train_sh_does() -> None:
    from npuflow.programs.cpu_share import share

    cores = list(range(192))  # a 910B server's Kunpeng cores, 8 cards: 24 each
    assert share(cores, 0, 8) == list(range(24)) and share(cores, 7, 8) == list(range(168, 192))
    assert share([2, 3, 5, 7], 1, 2) == [5, 7]  # a cpuset's cores in their order
    assert share([0, 1, 2], 1, 2) == [1]  # the remainder stays unused, as K = nproc / N leaves it
    assert share([0], 1, 2) == [0]  # fewer cores than ranks: all of them (taskset would refuse 0--1)
    with pytest.raises(ValueError, match="cpu_share applies to torchrun"):
        launch_argv("paddle", "python", [], _device("cpu", 2), None, cpu_share=True)


def test_torchrun_runs_each_rank_of_the_script_on_its_own_cores(tmp_path: Path) -> None:
    """Two real ranks under torchrun: each binds itself before the script runs as ``python <script>`` would
    (``__main__``, its folder first on sys.path, its argv), in the process torchrun started."""
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "tools" / "train.py"
    script.parent.mkdir()
    script.write_text("import json, os, sys\n"
                      "print('RANK' + json.dumps({'rank': os.environ['RANK'], 'cores': sorted(os.sched_getaffinity(0)),"
                      " 'name': __name__, 'path0': sys.path[0], 'argv': sys.argv}))\n")
    argv = launch_argv("torchrun", sys.executable, [], _device("cpu", 2), None, cpu_share=True)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*argv, "tools/train.py", "--epochs", "3"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ranks = {r["rank"]: r for r in (json.loads(line.split("RANK", 1)[1]) for line in proc.stdout.splitlines()
                                     if "RANK{" in line)}
    available = sorted(os.sched_getaffinity(0))
    assert [ranks[r]["cores"] for r in ("0", "1")] == [available[:len(available) // 2] or available,
                                                       available[len(available) // 2:2 * (len(available) // 2)]
                                                       or available]
    assert all(r["name"] == "__main__" and r["path0"] == str(script.parent) and r["argv"] == ["tools/train.py",
               "--epochs", "3"] for r in ranks.values())
    assert "cpu_share: local rank 1 of 2 on cores" in proc.stdout + proc.stderr
