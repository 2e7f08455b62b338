"""Retry only what a retry can fix, through real Airflow (``airflow dags test``) and real stage processes.

A toy recipe gives its stages retries with no delay. Each failure a retry cannot fix must end try 1 with the task
``failed`` (Airflow's AirflowFailException: no retry scheduled); a crashed trainer must use its retries. The
task's log must headline the cause the stage itself printed.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.e2e

# A trainer: writes a checkpoint unless told not to, then exits with the code in its argv.
TRAINER = ("import os, sys\nos.makedirs('out', exist_ok=True)\n"
           "if sys.argv[2] == 'write': open('out/best.pdparams', 'w').write('w')\nsys.exit(int(sys.argv[1]))\n")


def _toy(code: int = 0, write: bool = True) -> dict[str, Any]:
    cpu = {"description": "d", "device": {"kind": "cpu", "count": 1},
           "dataset_source": {"kind": "synthetic", "images": {"train2017": 2, "val2017": 1}, "categories": 2,
                              "image_size": [64, 64]}}
    return {
        "dag_id": "toy", "title": "toy", "tutorial": "none", "schedule": None,
        "toolkit": {"name": "t", "repository": "r", "ref": "x"},
        "dataset": {"spec": "coco2017", "root": "{dataset_root|default_root}"},
        "log_format": "ppdet", "published": {}, "default_profile": "cpu",
        "vars": {"python": "{interpreter}", "dataset_root": None, "default_root": "{run_dir}/dataset",
                 "disk_gib": 0.001},
        "profiles": {"cpu": cpu, "huge_checkpoints": {**cpu, "vars": {"disk_gib": 1.0e9}}},
        "stages": {
            "prepare_dataset": {"kind": "prepare_dataset", "retries": 2, "retry_delay_seconds": 0},
            "validate_dataset": {"kind": "validate_dataset", "needs": ["prepare_dataset"]},
            "train": {"kind": "train", "needs": ["validate_dataset"], "retries": 2, "retry_delay_seconds": 0,
                      "cwd": "{stage_dir}", "outputs": {"best_model": "out/best.pdparams"},
                      "free_disk": {"path": "{stage_dir}", "gib": "{disk_gib}"},
                      "resume": {"checkpoints": "{stage_dir}/ckpt/*.pdparams",
                                 "companions": ["{checkpoint_stem}.pdopt"], "argv": ["--resume", "{checkpoint}"]},
                      "argv": ["{python}", "-c", TRAINER, str(code), "write" if write else "none"]},
            "report": {"kind": "report", "needs": ["train"]},
        },
    }


def _dags_test(tmp_path: Path, recipe: dict[str, Any], conf: dict[str, Any]) -> tuple[str, dict[str, tuple[str, int]]]:
    """Run the toy DAG; return the output and each task's (state, try_number) from the metadata DB."""
    recipes, dags = tmp_path / "recipes", tmp_path / "dags"
    shutil.copytree(ROOT / "recipes" / "datasets", recipes / "datasets")
    (recipes / "toy.yaml").write_text(yaml.safe_dump(recipe))
    dags.mkdir()
    (dags / "toy.py").write_text('"""Airflow DAG of the toy recipe."""\n'
                                 "from npuflow.operators.dag_factory import build_dag\n\ndag = build_dag('toy')\n")
    home = tmp_path / "airflow"
    env = {**__import__("os").environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "NPUFLOW_RECIPES_DIR": str(recipes),
           "NPUFLOW_RUNS_DIR": str(tmp_path / "runs"), "PYTHONWARNINGS": "ignore"}
    airflow = str(VENV_BIN / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([airflow, "pools", "set", "cpu_devices", "4", "test"], env=env, check=True, capture_output=True)
    proc = subprocess.run([airflow, "dags", "test", "toy", "-c", json.dumps(conf)], env=env, capture_output=True,
                          text=True, timeout=600)
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state, try_number FROM task_instance WHERE dag_id = 'toy'").fetchall()
    return proc.stdout + proc.stderr, {task: (state, tries) for task, state, tries in rows}


NOT_RETRYABLE = [
    pytest.param({"devices": "0"}, {}, "prepare_dataset", "devices='0' names cards, but this profile runs on the CPU",
                 id="bad-param"),
    pytest.param({"device_count": 2}, {}, "train", "reserves only 1 slot(s) of pool 'cpu_devices'", id="pool-mismatch"),
    pytest.param({}, {"write": False}, "train", "command succeeded but left no best_model", id="outputs-missing"),
    pytest.param({"resume": True}, {}, "train", "try 1 should resume, but none of the 1 checkpoint(s)",
                 id="no-complete-checkpoint"),
    pytest.param({"profile": "huge_checkpoints"}, {}, "train", "not enough free disk for checkpoints",
                 id="not-enough-disk"),
    pytest.param({"dataset_root": "/nonexistent"}, {}, "prepare_dataset",
                 "stage prepare_dataset: dataset not prepared: dataset root /nonexistent does not exist",
                 id="dataset-root-missing"),
]


@pytest.mark.parametrize(("conf", "toy", "task", "cause"), NOT_RETRYABLE)
def test_a_failure_no_retry_can_fix_fails_try_1_with_no_retry(tmp_path: Path, conf: dict, toy: dict, task: str,
                                                              cause: str) -> None:
    if conf.get("resume"):  # a checkpoint without its optimizer state: incomplete, so nothing to resume from
        broken = tmp_path / "runs" / "toy"
        conf = {**conf, "stages": ["train"]}
        # the run id is not known before the run: put the broken checkpoint where every run's train stage looks
        toy_recipe = _toy(**toy)
        toy_recipe["stages"]["train"]["resume"]["checkpoints"] = str(broken / "ckpt" / "*.pdparams")
        (broken / "ckpt").mkdir(parents=True)
        (broken / "ckpt" / "1.pdparams").write_text("w")
    else:
        toy_recipe = _toy(**toy)
    out, states = _dags_test(tmp_path, toy_recipe, {"profile": "cpu", **conf})
    assert states[task] == ("failed", 1), (states, out[-3000:])
    assert cause in out, out[-3000:]
    assert "AirflowFailException" in out


def test_a_crashed_trainer_keeps_its_retries(tmp_path: Path) -> None:
    out, states = _dags_test(tmp_path, _toy(code=3), {"profile": "cpu"})
    assert states["train"] == ("failed", 3), (states, out[-3000:])  # try 1 and both retries ran
    assert states["validate_dataset"] == ("success", 1)  # what was good stays good
    # the night still gets its report, which names the failed stage; the report task then fails, so the run is
    # not green because its report was written
    assert states["report"] == ("failed", 1)
    (report,) = (tmp_path / "runs" / "toy").glob("*/report.json")
    stages = json.loads(report.read_text())["stages"]
    assert stages["train"]["ok"] is False and "exited with code 3" in stages["train"]["summary"]
    assert "stage report: the report is written" in out and "stage(s) train did not succeed" in out
