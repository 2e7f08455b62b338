"""Every DAG with a smoke profile, end to end through real Airflow: generated COCO, real training under
paddle.distributed.launch or torchrun (2 CPU ranks), and where the recipe has them the toolkit's export, the
Paddle Inference benchmark, and the report."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from operators.recipe import list_recipes, load_recipe
from tests.conftest import VENV_BIN

DAG = "ppyoloe_plus_crn_l_80e_coco"
SMOKE_DAGS = [d for d in list_recipes() if "smoke" in load_recipe(d).profiles]


def _dags_test(env: dict, conf: dict, dag_id: str = DAG) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "airflow"), "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=900)


def test_the_first_pipeline_has_a_smoke_profile() -> None:
    assert DAG in SMOKE_DAGS


@pytest.mark.e2e
@pytest.mark.parametrize("dag_id", SMOKE_DAGS)
def test_smoke_dag_runs_end_to_end(airflow_env: dict, dag_id: str) -> None:
    proc = _dags_test(airflow_env, {"profile": "smoke"}, dag_id)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    runs = list((Path(airflow_env["NPUFLOW_RUNS_DIR"]) / dag_id).iterdir())
    assert len(runs) == 1
    run = runs[0]
    report = json.loads((run / "report.json").read_text())
    assert report["profile"] == "smoke" and report["not_run"] == []
    assert all(stage["ok"] for stage in report["stages"].values())

    recipe = load_recipe(dag_id)
    kinds = {spec["kind"] for spec in recipe.stages.values()}
    train = report["train"]
    assert train["world_size"] == 2 and train["train_steps"] > 0
    assert train["losses_finite"] and all(math.isfinite(v) for v in train["last_losses"].values())
    metrics = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    assert any(m["type"] == "train" and m["ips_global"] > 0 for m in metrics)
    rank_logs = {p.name for p in (run / "train" / "log").rglob("*") if p.is_file()}
    if recipe.data["log_format"] == "ppdet":
        assert "bbox_map" in train["eval"] and train["evaluations"] >= 1  # COCO eval ran during training
        assert {"workerlog.0", "workerlog.1"} <= rank_logs
    else:  # torchrun --log-dir: <id>/attempt_0/<local_rank>/stdout.log
        assert len(list((run / "train" / "log").glob("*/attempt_0/1/stdout.log"))) == 1

    if "export" in kinds:
        export = {Path(p).name for p in report["export"].values()}
        assert "model.pdiparams" in export and "infer_cfg.yml" in export
        assert export & {"model.pdmodel", "model.json"}
        for path in report["export"].values():
            assert Path(path).stat().st_size > 0
    if "benchmark" in kinds:
        bench = report["benchmark"]
        lat = bench["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert bench["throughput_ips"] > 0 and bench["iters"] == 20
        assert 0.0 <= bench["coco"]["map"] <= 1.0 and bench["coco"]["detections"] > 0
    assert (run / "report.md").read_text().startswith(f"# {load_recipe(dag_id).data['title']}")


def test_bad_param_is_refused_before_the_run(airflow_env: dict) -> None:
    proc = _dags_test(airflow_env, {"profile": "smoke", "epochs": 0})
    assert proc.returncode != 0
    assert "epochs" in proc.stdout + proc.stderr
    assert not (Path(airflow_env["NPUFLOW_RUNS_DIR"]) / DAG).exists()


def test_unknown_conf_key_fails_the_first_task_with_the_allowed_keys(airflow_env: dict) -> None:
    proc = _dags_test(airflow_env, {"profile": "smoke", "epoch": 3})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "unknown parameter(s) ['epoch']" in out and "allowed" in out
