"""Reports that decide, over three real SSD smoke runs through ``airflow dags test`` in one Airflow home:

1. one card, 2. two cards: both pass their gates, the second's report has trends against the first and the
scaling efficiency of two ranks against the one-rank run; 3. the smoke gate on the mAP set just above what run
2 reached: the report is written, the gate stage fails naming the metric and the miss, and the exported model's
asset gets no event. Every run appends its TIPC-style record.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.e2e

SSD = "ssd300_coco"  # torchrun with two CPU ranks (the YOLOR port trains as one process on a CPU)


def _home(tmp_path: Path) -> dict[str, str]:
    recipes, dags = tmp_path / "recipes", tmp_path / "dags"
    shutil.copytree(ROOT / "recipes" / "datasets", recipes / "datasets")
    shutil.copy(ROOT / "recipes" / f"{SSD}.yaml", recipes)
    dags.mkdir()
    shutil.copy(ROOT / "dags" / f"{SSD}.py", dags)
    env = {**__import__("os").environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "NPUFLOW_RECIPES_DIR": str(recipes), "NPUFLOW_RUNS_DIR": str(tmp_path / "runs"), "PYTHONWARNINGS": "ignore"}
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True)
    return env


def _run(env: dict[str, str], conf: dict) -> tuple[subprocess.CompletedProcess, dict]:
    before = set((Path(env["NPUFLOW_RUNS_DIR"]) / SSD).glob("*")) if (Path(env["NPUFLOW_RUNS_DIR"]) / SSD).is_dir() \
        else set()
    proc = subprocess.run([str(VENV_BIN / "airflow"), "dags", "test", SSD, "-c", json.dumps(conf)], env=env,
                          capture_output=True, text=True, timeout=900)
    (run_dir,) = set((Path(env["NPUFLOW_RUNS_DIR"]) / SSD).glob("*")) - before
    return proc, json.loads((run_dir / "report.json").read_text())


def _asset_events(env: dict[str, str], uri: str) -> int:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        return db.execute("SELECT count(*) FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
                          (uri,)).fetchone()[0]


def _states(env: dict[str, str], run_id: str) -> dict[str, str]:
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
                          (SSD, run_id)).fetchall()
    return dict(rows)


def test_gates_trends_scaling_and_records_over_three_real_runs(tmp_path: Path) -> None:
    env = _home(tmp_path)
    exported, compressed = f"model://{SSD}/exported", f"model://{SSD}/compressed"

    one, r1 = _run(env, {"profile": "smoke", "device_count": 1})
    assert one.returncode == 0, one.stdout[-3000:] + one.stderr[-3000:]
    assert r1["scaling"]["cards"] == 1 and "efficiency" not in r1["scaling"] and r1["trends"] == []
    assert all(g["passed"] for g in r1["gates"])

    two, r2 = _run(env, {"profile": "smoke"})
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    scale = r2["scaling"]
    assert scale["cards"] == 2 and scale["one_card_source"] == f"run {r1['run_id']}"
    assert scale["efficiency"] == pytest.approx(scale["images_per_s"] / (2 * r1["scaling"]["images_per_s"]))
    assert scale["images_per_s_per_card"] == pytest.approx(scale["images_per_s"] / 2)
    trends = {t["metric"]: t for t in r2["trends"]}
    assert trends["train.train_ips"]["previous_run"] == r1["run_id"]
    # the same generated dataset, recipe, toolkit and Pythons: nothing changed but the card count
    assert r2["inputs"] == {"previous_run": r1["run_id"], "changed": {}, "same_inputs_runs": [r1["run_id"]]}
    assert trends["train.train_ips"]["previous"] == r1["measured"]["train.train_ips"]
    assert _asset_events(env, exported) == 2 and _asset_events(env, compressed) == 2

    # the smoke gate just above what run 2 reached (mAP in points)
    reached = r2["measured"]["train.eval_bbox_map"]
    recipe_file = Path(env["NPUFLOW_RECIPES_DIR"]) / f"{SSD}.yaml"
    data = yaml.safe_load(recipe_file.read_text())
    data["profiles"]["smoke"]["gates"]["fp32_eval_bbox_map"] = {"at_least": round(reached + 0.05, 4)}
    recipe_file.write_text(yaml.safe_dump(data, sort_keys=False))

    three, r3 = _run(env, {"profile": "smoke"})
    out = three.stdout + three.stderr
    assert three.returncode != 0
    verdict = next(g for g in r3["gates"] if g["gate"] == "fp32_eval_bbox_map")
    assert not verdict["passed"] and verdict["threshold"] == pytest.approx(reached + 0.05), (verdict, reached)
    assert "stage gate_fp32: gate fp32_eval_bbox_map: train.eval_bbox_map = " in out and "missed by" in out
    states = _states(env, r3["run_id"])
    assert states["report"] == "success" and states["gate_fp32"] == "failed" and states["gate_int8"] == "success"
    assert _asset_events(env, exported) == 2  # no new exported model from a run that missed its gate
    assert _asset_events(env, compressed) == 3  # the INT8 gate passed
    assert {t["metric"]: t for t in r3["trends"]}["train.train_ips"]["previous_run"] == r2["run_id"]
    assert list(r3["inputs"]["changed"]) == ["recipe_digest"] and r3["inputs"]["same_inputs_runs"] == []
    assert f"| inputs against run {r2['run_id']} | changed: recipe_digest: sha256:" in \
        (Path(r3["run_dir"]) / "report.md").read_text()
    md = (Path(r3["run_dir"]) / "report.md").read_text()
    assert "| fp32_eval_bbox_map | train.eval_bbox_map |" in md and "**MISSED** by" in md
    html = (Path(r3["run_dir"]) / "report.html").read_text()
    assert "gate(s) missed" in html and html.count("data:image/png;base64,") >= 3

    records = [json.loads(line) for line in
               (Path(env["NPUFLOW_RUNS_DIR"]) / "tipc_records.jsonl").read_text().splitlines()]
    assert [r["run_id"] for r in records] == [r1["run_id"], r2["run_id"], r3["run_id"]]
    assert [r["device_num"] for r in records] == ["N1C1", "N1C2", "N1C2"]
    assert all(r["model_name"] == SSD and r["ips"] > 0 and r["speed_unit"] == "samples/s"
               and r["convergence_key"] == "bbox_map" for r in records)
