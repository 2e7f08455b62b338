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
