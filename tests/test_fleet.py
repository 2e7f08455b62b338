"""More than one host: which queue runs which node, how a failed node is heard of, and the per-node DAG shape."""

from __future__ import annotations

import subprocess
from pathlib import Path

from npuflow.fleet import HOSTS_KEY, failed_siblings, mark_failed, node_queue
from npuflow.plan import build_plan
from npuflow.recipe import load_recipe
from tests.conftest import ROOT, VENV_BIN


def test_node_k_goes_to_host_k_and_a_run_may_rename_the_hosts() -> None:
    config = {HOSTS_KEY: ["node0", "node1"]}
    assert [node_queue(config, None, k) for k in (0, 1)] == ["node0", "node1"]
    assert node_queue(config, {"hosts": ["npu-a", "npu-b"]}, 1) == "npu-b"
    assert node_queue(config, None, -1) is None  # not a mapped task instance
    assert node_queue({}, {"hosts": ["x"]}, 0) is None  # not a per-node task: left alone
    assert node_queue(config, None, 2) is None


def test_a_failed_node_is_seen_by_the_others_of_the_same_try_only(tmp_path: Path) -> None:
    mark_failed(str(tmp_path), "train", 1, 1, "stage train: rank 3 killed by SIGKILL")
    assert failed_siblings(str(tmp_path), "train", 1, 0) == [{"node": 1, "cause": "stage train: rank 3 killed by SIGKILL"}]
    assert failed_siblings(str(tmp_path), "train", 1, 1) == []  # its own marker
    assert failed_siblings(str(tmp_path), "train", 2, 0) == []  # the retry starts clean


def test_a_second_node_writes_its_own_stage_folder(tmp_path: Path) -> None:
    params = {"profile": "smoke", "nnodes": 2, "master": "127.0.0.1:29500", "node_rank": 1}
    plan = build_plan(load_recipe("yolor_p6_coco"), params, run_id="r", runs_root=tmp_path)
    assert plan.stage("train").stage_dir == str(Path(plan.run_dir) / "train" / "node1")
    assert plan.stage("export").stage_dir == str(Path(plan.run_dir) / "export")  # not a per-node stage


def test_with_a_fleet_the_train_stage_is_one_mapped_task_per_host(tmp_path: Path) -> None:
    script = ("import sys; sys.path.insert(0, 'dags'); import yolor_p6_coco as m; t = m.dag.get_task('train');"
              "print(type(t).__name__, t.executor_config, t.expand_input.value['node_rank'],"
              " sorted(m.dag.get_task('export').upstream_task_ids))")
    out = subprocess.run([str(VENV_BIN / "python"), "-c", script], cwd=ROOT, capture_output=True, text=True,
                         env={"NPUFLOW_HOSTS": "node0,node1", "PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "ignore",
                              "AIRFLOW_HOME": str(tmp_path)},
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "MappedOperator {'npuflow_hosts': ['node0', 'node1']} [0, 1] ['prepare_dataset', 'train']"
    plain = script.replace("t.expand_input.value['node_rank']", "0")
    single = subprocess.run([str(VENV_BIN / "python"), "-c", plain], cwd=ROOT, capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "AIRFLOW_HOME": str(tmp_path)}, check=True)
    assert single.stdout.strip().splitlines()[-1].startswith("RecipeStageOperator")
