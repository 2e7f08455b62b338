"""Runs tracked in a real MLflow server, models registered, and a champion that only a model at least as good
replaces (issue 23). Three nights of SSD's smoke profile, each through every stage with the code the operator
runs (execute_stage on the run's pinned plan), tell the story: night 1 (24 epochs) becomes the champion;
night 2 (8 epochs: mAP 0.7 against 7.9) loses MLflow mid-run, is sent later by ``npuflow track`` and stays the
challenger, its promote stage withholding the asset event; night 3 (12 epochs: mAP 9.2) replaces the champion,
after its track stage cleans up the half-sent MLflow run a killed try left. A consumer then loads the champion
with MLflow's own onnx flavor.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from npuflow.errors import StageFailed
from npuflow.execute import execute_stage
from npuflow.pinned import pinned_plan
from npuflow.plan import Plan, build_plan
from npuflow.recipe import load_recipe
from npuflow.registry import decide
from npuflow.rundir import run_dir_for
from npuflow.tracking import RUN_TAG, run_content, tracking_file
from tests.conftest import ROOT, VENV_BIN, free_port, scratch

DAG = "ssd300_coco"
AIRFLOW_URL = "http://airflow.example:8080/"  # where the link back from MLflow points (Airflow's api.base_url)
MLFLOW_PYTHON = ROOT / "var" / "mlflow" / "bin" / "python"


def _plan(root: Path, run_id: str, params: dict[str, Any]) -> Plan:
    recipe = load_recipe(DAG)
    params = {"profile": "smoke", **params}
    plan, _ = pinned_plan(run_dir_for(DAG, run_id, root), 0,
                          lambda _n: build_plan(recipe, params, run_id=run_id, runs_root=root),
                          recipe=recipe, params=params, nnodes=1)
    return plan


def _run(plan: Plan, names: list[str], uri: str) -> dict[str, dict[str, Any]]:
    env = {"MLFLOW_TRACKING_URI": uri, "AIRFLOW__API__BASE_URL": AIRFLOW_URL}  # as the operator's Connection env
    return {name: execute_stage(plan, plan.stage(name), log=lambda _line: None,
                                log_format=load_recipe(DAG).log_format, secret_env=env) for name in names}


def _until(plan: Plan, last: str) -> list[str]:
    names = [s.name for s in plan.stages]
    return names[:names.index(last) + 1]


def _api(uri: str, endpoint: str, **params: Any) -> dict[str, Any]:
    resp = requests.get(f"{uri}/api/2.0/{endpoint}", params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _alias(uri: str, name: str, alias: str) -> str:
    return _api(uri, "mlflow/registered-models/alias", name=name, alias=alias)["model_version"]["version"]


def _mlflow_runs(uri: str, run_id: str) -> list[dict[str, Any]]:
    exp = _api(uri, "mlflow/experiments/get-by-name", experiment_name=DAG)["experiment"]["experiment_id"]
    body = {"experiment_ids": [exp], "filter": f"tags.{RUN_TAG} = '{run_id}'"}
    return requests.post(f"{uri}/api/2.0/mlflow/runs/search", json=body, timeout=30).json().get("runs", [])


def _aliases(uri: str) -> dict[tuple[str, str], str]:
    return {(name, alias): _alias(uri, name, alias) for name in (DAG, f"{DAG}-int8")
            for alias in ("champion", "challenger")}


@pytest.fixture(scope="module")
def nights(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    uri = mlflow_server
    with scratch(tmp_path_factory, "nights") as root:
        out: dict[str, Any] = {"uri": uri, "root": root}
        # night 1: the first model of the DAG becomes the champion
        night1 = _plan(root, "night1", {})
        out["night1"] = _run(night1, [s.name for s in night1.stages], uri)
        out["aliases1"] = _aliases(uri)
        # night 2: worse; MLflow "down" (a closed port) when its track stage runs
        night2 = _plan(root, "night2", {"epochs": 8})
        out["night2"] = _run(night2, _until(night2, "gate_int8"), uri)
        with pytest.raises(StageFailed) as down:
            _run(night2, ["track"], f"http://127.0.0.1:{free_port()}")
        out["down"] = str(down.value)
        out["kept"] = sorted(p.name for p in Path(night2.run_dir).iterdir())
        env = {**os.environ, "NPUFLOW_RUNS_DIR": str(root), "MLFLOW_TRACKING_URI": uri}
        out["cli"] = subprocess.run([str(VENV_BIN / "npuflow"), "track", DAG], env=env, capture_output=True,
                                    text=True, timeout=300)
        out["cli_again"] = subprocess.run([str(VENV_BIN / "npuflow"), "track", DAG], env=env, capture_output=True,
                                          text=True, timeout=300)
        out["night2"].update(_run(night2, ["track", "promote_fp32", "promote_int8"], uri))  # the retry, then on
        out["aliases2"] = _aliases(uri)
        # night 3: better; a killed try of its track stage left a half-sent MLflow run behind
        night3 = _plan(root, "night3", {"epochs": 12})
        exp = _api(uri, "mlflow/experiments/get-by-name", experiment_name=DAG)["experiment"]["experiment_id"]
        requests.post(f"{uri}/api/2.0/mlflow/runs/create", timeout=30, json={
            "experiment_id": exp, "tags": [{"key": RUN_TAG, "value": "night3"}]}).raise_for_status()
        out["night3"] = _run(night3, [s.name for s in night3.stages], uri)
        out["plans"] = {"night1": night1, "night2": night2, "night3": night3}
        yield out


def _promotion(result: dict[str, Any]) -> dict[str, Any]:
    return result["result"]


@pytest.mark.e2e
def test_the_first_model_becomes_champion_and_its_run_is_all_in_mlflow(nights: dict[str, Any]) -> None:
    uri, night1 = nights["uri"], nights["night1"]
    assert _promotion(night1["promote_fp32"])["promoted"] and night1["promote_fp32"]["withheld"] is None
    assert "no champion yet" in night1["promote_fp32"]["summary"]
    assert set(nights["aliases1"].values()) == {"1"}  # champion and challenger of both models
    [run] = _mlflow_runs(uri, "night1")
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED" and info["run_name"] == "night1"
    tags = {t["key"]: t["value"] for t in data["tags"]}
    params = {p["key"]: p["value"] for p in data["params"]}
    metrics = {m["key"]: m["value"] for m in data["metrics"]}
    assert tags["airflow_dag_id"] == DAG and tags["airflow_url"] == f"{AIRFLOW_URL}dags/{DAG}/runs/night1"
    assert tags["gate.int8_drop"].startswith("passed") and tags["npuflow.gates_passed"] == "true"
    assert tags["npuflow.dataset_digest"].startswith("sha256:") and tags["npuflow.toolkit_commit"]
    assert tags["npuflow.validation_digest"].startswith("sha256:")
    assert tags["mlflow.note.content"].startswith("# ")  # the Markdown report as the run's description
    assert params["profile"] == "smoke" and params["recipe.default_epochs"] == "24"
    report = json.loads((Path(nights["plans"]["night1"].run_dir) / "report.json").read_text())
    assert metrics["benchmark_fp32.bbox_map"] == pytest.approx(report["measured"]["benchmark_fp32.bbox_map"])
    # the per-step training metrics, with their steps (48 logged steps in 24 epochs)
    history = _api(uri, "mlflow/metrics/get-history", run_id=info["run_id"], metric_key="train.loss")["metrics"]
    assert [m["step"] for m in history] == list(range(1, 49))
    listed = _api(uri, "mlflow/artifacts/list", run_id=info["run_id"])["files"]
    assert {"report.html", "report.json", "plan.json", "plots"} <= {f["path"] for f in listed}
    plots = _api(uri, "mlflow/artifacts/list", run_id=info["run_id"], path="plots")["files"]
    assert any(f["path"].endswith("train_loss_lr.png") for f in plots)
    # the track stage's result: the run's URL, for the task's "MLflow run" link
    assert night1["track"]["xcom"]["mlflow_run_url"] == f"{uri}/#/experiments/{info['experiment_id']}/runs/{info['run_id']}"


@pytest.mark.e2e
def test_mlflow_down_keeps_the_run_and_npuflow_track_sends_it_later(nights: dict[str, Any]) -> None:
    assert "cannot be reached" in nights["down"] and "npuflow track" in nights["down"]
    assert {"report.json", "report.html", "train", "export", "compress"} <= set(nights["kept"])
    cli = nights["cli"]
    assert cli.returncode == 0, cli.stderr
    assert "night2:" in cli.stdout and "night1" not in cli.stdout  # night 1 was tracked by its own stage
    assert "tracked already" in nights["cli_again"].stdout
    assert len(_mlflow_runs(nights["uri"], "night2")) == 1
    # the track stage's retry after the outage finds the run sent and sends nothing twice
    where = json.loads(tracking_file(Path(nights["plans"]["night2"].run_dir)).read_text())
    assert where["tracked"] and where["sent_now"] is False


@pytest.mark.e2e
def test_a_worse_model_stays_challenger_and_announces_nothing(nights: dict[str, Any]) -> None:
    night2 = nights["night2"]
    for stage, name in (("promote_fp32", DAG), ("promote_int8", f"{DAG}-int8")):
        decision = _promotion(night2[stage])
        assert decision["promoted"] is False and decision["version"] == "2", decision
        assert "below the champion's" in decision["why"] and "it stays challenger" in decision["why"]
        assert night2[stage]["withheld"].startswith("champion stays, no asset event")  # the task ends skipped
        assert nights["aliases2"][name, "challenger"] == "2" and nights["aliases2"][name, "champion"] == "1"
    assert night2["promote_fp32"]["result"]["champion_before"]["version"] == "1"


@pytest.mark.e2e
def test_a_better_model_replaces_the_champion_and_a_consumer_loads_it(nights: dict[str, Any]) -> None:
    uri, night3 = nights["uri"], nights["night3"]
    decision = _promotion(night3["promote_fp32"])
    assert decision["promoted"] and decision["version"] == "3" and "at least the champion's" in decision["why"]
    assert decision["value"] > decision["champion_before"]["value"]
    assert night3["promote_fp32"]["withheld"] is None
    assert night3["promote_fp32"]["announced"]["model"].endswith("export/model.onnx")  # what the asset event names
    assert _alias(uri, DAG, "champion") == _alias(uri, DAG, "challenger") == "3"
    runs = _mlflow_runs(uri, "night3")  # the half-sent run of the killed try is gone, one finished run is left
    assert [r["info"]["status"] for r in runs] == ["FINISHED"]
    version = _api(uri, "mlflow/model-versions/get", name=DAG, version="3")["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["format"] == "onnx" and tags["metric"] == "benchmark_fp32.bbox_map" and tags["gate.int8_drop"]
    assert version["run_id"] == runs[0]["info"]["run_id"]
    loaded = subprocess.run(
        [str(MLFLOW_PYTHON), "-c", "import mlflow.onnx; m = mlflow.onnx.load_model(f'models:/{DAG}@champion'); "
                                   "print(m.graph.input[0].name, len(m.graph.node))".replace("{DAG}", DAG)],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[0] == "images"


def test_the_decision_compares_on_the_same_validation_set_within_the_tolerance() -> None:
    challenger = {"version": "5", "metric": "m", "value": 40.0, "validation_digest": "sha256:a"}
    champion = {"version": "3", "metric": "m", "value": 40.05, "validation_digest": "sha256:a"}
    assert decide(challenger, None, 0.1)[0]
    assert decide(challenger, champion, 0.1)[0]  # 0.05 below, within the tolerance
    assert not decide(challenger, champion, 0.0)[0]
    other_set = {**champion, "value": 10.0, "validation_digest": "sha256:b"}
    promoted, why = decide(challenger, other_set, 0.1)
    assert not promoted and "another validation set" in why  # a higher number on other data proves nothing
    no_metric = {**champion, "metric": "other"}
    assert not decide(challenger, no_metric, 0.1)[0]


def test_without_a_tracking_server_nothing_is_sent_and_the_gated_model_is_announced(tmp_path: Path) -> None:
    from npuflow import registry, tracking

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run([str(VENV_BIN / "python"), "-m", "npuflow.tracking", "--run-dir", str(run_dir),
                          "--out", str(tracking_file(run_dir))], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "MLflow tracking is off" in out.stdout
    assert json.loads(tracking_file(run_dir).read_text())["tracked"] is False
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    gate = tmp_path / "gate.json"
    gate.write_text(json.dumps({"result": {"passed": True, "model_files": {"model": str(model)}}}))
    decision = tmp_path / "promotion.json"
    code = registry.main(["--run-dir", str(run_dir), "--tracking", str(tracking_file(run_dir)), "--gate-result",
                          str(gate), "--name", DAG, "--precision", "fp32", "--metric", "benchmark_fp32.bbox_map",
                          "--out", str(decision)])
    assert code == 0
    assert json.loads(decision.read_text())["promoted"] is True
    assert tracking.tracking_off(env) and "announced as before" in json.loads(decision.read_text())["why"]


def test_a_run_folder_without_its_report_is_refused_not_retried(tmp_path: Path) -> None:
    from npuflow.tracking import TrackingRefused

    with pytest.raises(TrackingRefused, match=r"no readable plan\.json and report\.json"):
        run_content(tmp_path)


def test_the_connection_names_the_server_and_its_login_in_mlflows_own_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Airflow Connection mlflow_default, as the track and promote tasks hand it to their process; a worker's
    own MLFLOW_TRACKING_URI wins."""
    from types import SimpleNamespace

    from npuflow.kinds.track import mlflow_env

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    conn = SimpleNamespace(host="mlflow.example.com", schema="https", port=8443, login="ci", password="s3cret")
    assert mlflow_env(conn) == {"MLFLOW_TRACKING_URI": "https://mlflow.example.com:8443",
                                "MLFLOW_TRACKING_USERNAME": "ci", "MLFLOW_TRACKING_PASSWORD": "s3cret"}
    assert mlflow_env(SimpleNamespace(host="http://10.0.0.5:5000", schema=None, port=None, login=None,
                                      password=None)) == {"MLFLOW_TRACKING_URI": "http://10.0.0.5:5000"}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://worker-own:5000")
    assert mlflow_env(conn) == {}
