"""The REST API of real services, as a user's tools drive it: token, unpause, trigger with conf, poll, logs,
the report; auth and parameter errors; the device pool between two runs; the export asset's consumer."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from npuflow.services import USERS, service_processes
from tests.airflow_services import Services, quote, token_without_a_role
from tests.conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.services

PPYOLOE = "ppyoloe_plus_crn_l_80e_coco"
YOLOR = "yolor_p6_coco"
PICODET = "picodet_s_416_coco_npu_qat"
CONSUMER = "deploy_ppyoloe_plus"
# The FP32 path only: the compression branch (minutes of ACT) is the stages param's choice, and skipped here.
PPYOLOE_CONF = {"epochs": 2, "batch_size": 2,
                "stages": ["prepare_dataset", "validate_dataset", "train", "export", "benchmark_fp32", "report",
                           "gate_fp32", "track", "promote_fp32"]}


def _when(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_every_listening_socket_is_on_loopback(airflow_services: Services) -> None:
    listeners = []
    for pid in service_processes(airflow_services.cfg):
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.Error:
            continue
        listeners += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    assert any(port == airflow_services.port for _, _, port in listeners), listeners
    assert all(ip in ("127.0.0.1", "::1") for _, ip, _ in listeners), listeners


def test_passwords_file_is_private_and_never_printed(airflow_services: Services) -> None:
    path = airflow_services.cfg.passwords_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = json.loads(path.read_text())
    assert set(passwords) == set(USERS)
    status = subprocess.run([str(VENV_BIN / "npuflow"), "airflow", "status", "--json"], env=airflow_services.env,
                            capture_output=True, text=True, check=True)
    info = json.loads(status.stdout)
    assert all(c["running"] for c in info["components"].values()), info
    texts = [airflow_services.up_output, status.stdout, status.stderr]
    texts += [p.read_text(errors="replace") for p in airflow_services.cfg.state_dir.glob("*.log")]
    for user, password in passwords.items():
        assert not any(password in text for text in texts), f"the password of {user} was printed"


def test_no_token_is_401_and_a_malformed_token_403(airflow_services: Services) -> None:
    from npuflow.services import api

    assert api(airflow_services.cfg, "GET", "/api/v2/dags")[0] == 401
    assert api(airflow_services.cfg, "GET", "/api/v2/dags", token="not-a-jwt")[0] == 403
    status, body = api(airflow_services.cfg, "POST", "/auth/token", {"username": "admin", "password": "wrong"})
    assert status == 401, body


def test_viewer_may_look_but_not_trigger(airflow_services: Services) -> None:
    airflow_services.wait_dag(YOLOR)
    assert airflow_services.call("GET", f"/api/v2/dags/{YOLOR}", user="viewer")[0] == 200
    status, body = airflow_services.call("POST", f"/api/v2/dags/{YOLOR}/dagRuns",
                                         {"logical_date": None, "conf": {}}, user="viewer")
    assert status == 403, body
    status, body = airflow_services.call("PATCH", f"/api/v2/dags/{YOLOR}", {"is_paused": False}, user="viewer")
    assert status == 403, body


@pytest.mark.parametrize(("conf", "message"), [
    pytest.param({"epochs": 0}, "0 is less than the minimum of 1", id="below-minimum"),
    pytest.param({"epochs": "two"}, "'two' is not of type 'integer', 'null'", id="wrong-type"),
    pytest.param({"profile": "cluster"}, "'cluster' is not one of", id="not-a-profile"),
    pytest.param({"devices": "0;touch /tmp/x"}, "does not match", id="devices-pattern"),
])
def test_a_bad_param_is_refused_with_400_and_the_schema_message(airflow_services: Services, conf: dict,
                                                                  message: str) -> None:
    airflow_services.wait_dag(YOLOR)
    status, body = airflow_services.call("POST", f"/api/v2/dags/{YOLOR}/dagRuns",
                                         {"logical_date": None, "conf": conf})
    assert status == 400, body
    assert message in body["detail"]


@pytest.fixture(scope="module")
def two_runs(airflow_services: Services) -> dict[str, Any]:
    """PP-YOLOE+ and YOLOR smoke runs triggered together over REST. PP-YOLOE+'s train task reserves 2 slots of
    ``cpu_devices`` (two ranks), YOLOR's 1 (the port trains as one process on a CPU); the pool gets 2, so the two
    trainings must not overlap."""
    s = airflow_services
    s.ok("PATCH", "/api/v2/pools/cpu_devices?update_mask=slots",
         {"name": "cpu_devices", "slots": 2, "include_deferred": False}, user="admin")
    s.unpause(CONSUMER)  # the deployment DAG scheduled on PP-YOLOE+'s export asset
    for dag_id in (PPYOLOE, YOLOR):
        s.unpause(dag_id)
    runs = {PPYOLOE: s.trigger(PPYOLOE, PPYOLOE_CONF), YOLOR: s.trigger(YOLOR, {"epochs": 3})}
    states = {dag_id: s.wait_run(dag_id, run_id, timeout=900) for dag_id, run_id in runs.items()}
    return {"runs": runs, "states": states}


def test_rest_trigger_with_conf_runs_the_ppyoloe_smoke_dag(airflow_services: Services, two_runs: dict) -> None:
    s, run_id = airflow_services, two_runs["runs"][PPYOLOE]
    assert two_runs["states"][PPYOLOE] == "success", {k: v["state"] for k, v in s.task_instances(PPYOLOE, run_id).items()}
    run = s.ok("GET", s.run_path(PPYOLOE, run_id))
    assert run["conf"] == PPYOLOE_CONF and run["triggered_by"] == "rest_api"
    tis = s.task_instances(PPYOLOE, run_id)
    assert {k: v["state"] for k, v in tis.items()} == {
        "prepare_dataset": "success", "validate_dataset": "success", "train": "success", "export": "success",
        "benchmark_fp32": "success", "compress": "skipped", "eval_int8": "skipped", "benchmark_int8": "skipped",
        "report": "success", "gate_fp32": "success", "gate_int8": "skipped", "track": "success",
        "promote_fp32": "success", "promote_int8": "skipped", "approve_promote_fp32": "skipped",
        "approve_promote_int8": "skipped"}  # automatic promotion: nothing to approve
    # the conf reached the toolkit: two epochs, batch size 2, as the plan the tasks ran shows
    log = s.log(PPYOLOE, run_id, "train")
    assert "paddle.distributed.launch" in log and "--nproc_per_node" in log
    assert "TrainReader.batch_size=2" in log and "epoch=2" in log
    assert "Epoch: [1]" in log  # ppdet's own step line for the second epoch (0-based)
    report = s.xcom(PPYOLOE, run_id, "report", key="report")
    assert report["dag_id"] == PPYOLOE and report["run_id"] == run_id and report["profile"] == "smoke"
    assert report["benchmarks"]["benchmark_fp32"]["precision"] == "fp32"
    assert report["not_run"] == ["compress", "eval_int8", "benchmark_int8"]


def test_the_report_task_links_its_html_report_which_the_api_server_serves(airflow_services: Services,
                                                                          two_runs: dict) -> None:
    s, run_id = airflow_services, two_runs["runs"][PPYOLOE]
    links = s.ok("GET", f"{s.run_path(PPYOLOE, run_id)}/taskInstances/report/links")["extra_links"]
    assert links["HTML report"] == f"/npuflow/reports/{PPYOLOE}/{quote(run_id)}/report.html"
    assert not s.ok("GET", f"{s.run_path(PPYOLOE, run_id)}/taskInstances/train/links")["extra_links"].get("HTML report")
    assert _get(s.url + links["HTML report"], None)[0] == 401  # behind the api-server's login
    status, kind, page = _get(s.url + links["HTML report"], s.token("viewer"))  # a viewer of the DAG reads it
    assert status == 200 and kind.startswith("text/html")
    assert "<h2>Gates</h2>" in page and "data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    # The UI's session: the same JWT as the api-server's cookie.
    assert _get(s.url + links["HTML report"], None, cookie=s.token("viewer"))[0] == 200
    # A signed-in user whom the auth manager does not let read this DAG's runs.
    status, _, body = _get(s.url + links["HTML report"], token_without_a_role(s.env))
    assert status == 403 and json.loads(body)["detail"] == "Forbidden", body
    for bad in (f"/npuflow/reports/{PPYOLOE}/{quote(run_id)}/plan.json",
                f"/npuflow/reports/{PPYOLOE}/{quote(run_id)}/..%2F..%2F..%2Fairflow%2Fairflow.cfg"):
        assert _get(s.url + bad, s.token("viewer"))[0] == 404


def test_the_track_task_links_its_mlflow_run_which_links_back_and_holds_the_champion(airflow_services: Services,
                                                                                       two_runs: dict) -> None:
    """``npuflow airflow up --mlflow`` started MLflow beside Airflow and pointed the tasks at it: the run is in
    MLflow, each side links to the other, and the first gated model of the DAG is its registered champion."""
    s, run_id = airflow_services, two_runs["runs"][PPYOLOE]
    assert s.mlflow_url and f"MLflow: {s.mlflow_url}" in s.up_output
    links = s.ok("GET", f"{s.run_path(PPYOLOE, run_id)}/taskInstances/track/links")["extra_links"]
    prefix = f"{s.mlflow_url}/#/experiments/"
    assert links["MLflow run"].startswith(prefix), links
    mlflow_run_id = links["MLflow run"].rsplit("/", 1)[1]
    with urllib.request.urlopen(f"{s.mlflow_url}/api/2.0/mlflow/runs/get?run_id={mlflow_run_id}", timeout=30) as resp:
        run = json.loads(resp.read())["run"]
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert run["info"]["status"] == "FINISHED"
    assert tags["airflow_url"] == f"{s.url}/dags/{PPYOLOE}/runs/{quote(run_id)}"
    assert "npuflow.failed_stages" not in tags and tags["npuflow.gates_passed"] == "true"
    with urllib.request.urlopen(f"{s.mlflow_url}/api/2.0/mlflow/registered-models/alias?name={PPYOLOE}"
                                f"&alias=champion", timeout=30) as resp:
        champion = json.loads(resp.read())["model_version"]
    assert champion["run_id"] == mlflow_run_id
    decision = s.xcom(PPYOLOE, run_id, "promote_fp32", key="promotion")
    assert decision["promoted"] and decision["registry"] and decision["version"] == champion["version"]
    assert {f"{PPYOLOE}/model.pdmodel", f"{PPYOLOE}/model.pdiparams", f"{PPYOLOE}/infer_cfg.yml"} <= set(
        _artifacts(s.mlflow_url, mlflow_run_id, f"models/{PPYOLOE}"))


def _champion(s: Services, name: str) -> str:
    with urllib.request.urlopen(f"{s.mlflow_url}/api/2.0/mlflow/registered-models/alias?name={name}&alias=champion",
                                timeout=30) as resp:
        return json.loads(resp.read())["model_version"]["version"]


def _answer(s: Services, dag_id: str, run_id: str, answers: dict[str, str], settle_s: float = 10.0,
            timeout: float = 300) -> dict[str, int]:
    """Answer each approval task's open request until the run ends, as the README tells a program to: once its
    try has waited ``settle_s`` (an answer before Airflow 3.3.2's scheduler has read the exit of the worker that
    parked the task fails the try: operators/approval.py; measured: one answer in two at once, and one loop of
    that scheduler took 5 s on these 2 cores under load), and again when a retry opens it again. Returns how many
    tries of each task were answered."""
    asked: dict[str, set[int]] = {task: set() for task in answers}
    deadline = time.monotonic() + timeout
    while s.ok("GET", s.run_path(dag_id, run_id))["state"] not in ("success", "failed"):
        tis = s.task_instances(dag_id, run_id)
        assert time.monotonic() < deadline, ({t: (ti["state"], ti["try_number"]) for t, ti in tis.items()}, asked)
        for task, option in answers.items():
            ti, path = tis[task], f"{s.run_path(dag_id, run_id)}/taskInstances/{task}/-1/hitlDetails"
            if ti["state"] != "awaiting_input" or time.time() - _when(ti["start_date"]).timestamp() < settle_s:
                continue
            if not s.ok("GET", path)["response_received"]:
                s.ok("PATCH", path, {"chosen_options": [option]})
                asked[task].add(ti["try_number"])
        time.sleep(0.5)
    return {task: len(tries) for task, tries in asked.items()}


def test_an_approval_run_asks_a_person_approve_moves_the_champion_reject_keeps_it(airflow_services: Services,
                                                                                 two_runs: dict) -> None:
    """promotion=approval: each promote stage only proposes (YOLOR's smoke mAP ties its champion's, so it
    would win); its approval task waits in Airflow for an answer over REST. FP32 approved: the alias moves and
    the asset event goes out from the approval task. INT8 rejected: the champion and the asset stay."""
    s = airflow_services
    assert two_runs["states"][YOLOR] == "success"  # YOLOR has champions already
    before = {name: _champion(s, name) for name in (YOLOR, f"{YOLOR}-int8")}
    run_id = s.trigger(YOLOR, {"promotion": "approval", "epochs": 1})
    waiting = {"approve_promote_fp32", "approve_promote_int8"}
    deadline = time.monotonic() + 600
    while True:
        tis = s.task_instances(YOLOR, run_id)
        if all(tis[t]["state"] == "awaiting_input" for t in waiting):
            break
        run_state = s.ok("GET", s.run_path(YOLOR, run_id))["state"]
        assert run_state in ("queued", "running") and time.monotonic() < deadline, (
            {k: v["state"] for k, v in tis.items()}, s.log(YOLOR, run_id, "promote_fp32")[-1500:])
        time.sleep(3)
    assert tis["promote_fp32"]["state"] == "skipped"  # it proposed; nothing is announced yet
    proposal = s.xcom(YOLOR, run_id, "promote_fp32", key="promotion")
    assert proposal["awaiting_approval"] and not proposal["promoted"]
    detail = s.ok("GET", f"{s.run_path(YOLOR, run_id)}/taskInstances/approve_promote_fp32/-1/hitlDetails")
    assert f"version {proposal['version']} the champion" in detail["subject"], detail
    assert detail["options"] == ["Approve", "Reject"] and detail["defaults"] == ["Reject"]
    assert _champion(s, YOLOR) == before[YOLOR]  # nothing moved while waiting
    asked = _answer(s, YOLOR, run_id, {"approve_promote_fp32": "Approve", "approve_promote_int8": "Reject"})
    tis = s.task_instances(YOLOR, run_id)
    state = s.ok("GET", s.run_path(YOLOR, run_id))["state"]
    assert state == "success", (
        {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()}, asked,
        {t: s.log(YOLOR, run_id, t, ti["try_number"])[-3000:] for t, ti in tis.items() if ti["state"] == "failed"})
    assert (tis["approve_promote_fp32"]["state"], tis["approve_promote_int8"]["state"]) == ("success", "skipped")
    assert _champion(s, YOLOR) == proposal["version"] != before[YOLOR]
    assert _champion(s, f"{YOLOR}-int8") == before[f"{YOLOR}-int8"]
    events = s.ok("GET", "/api/v2/assets/events?source_dag_id=" + YOLOR)["asset_events"]
    mine = [(e["uri"], e["source_task_id"]) for e in events if e["source_run_id"] == run_id]
    assert mine == [(f"model://{YOLOR}/exported", "approve_promote_fp32")], mine


def _artifacts(mlflow_url: str, run_id: str, path: str) -> list[str]:
    with urllib.request.urlopen(f"{mlflow_url}/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={path}",
                                timeout=30) as resp:
        return [f["path"].removeprefix("models/") for f in json.loads(resp.read()).get("files", [])]


def _get(url: str, token: str | None, cookie: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if cookie:
        req.add_header("Cookie", f"_token={cookie}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers["content-type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read().decode()


def test_the_device_pool_keeps_two_trainings_apart(airflow_services: Services, two_runs: dict) -> None:
    s = airflow_services
    assert set(two_runs["states"].values()) == {"success"}, two_runs["states"]
    pool = s.ok("GET", "/api/v2/pools/cpu_devices", user="admin")
    assert pool["slots"] == 2
    trains = {dag_id: s.task_instances(dag_id, run_id)["train"] for dag_id, run_id in two_runs["runs"].items()}
    assert {dag_id: (t["pool"], t["pool_slots"]) for dag_id, t in trains.items()} == \
        {PPYOLOE: ("cpu_devices", 2), YOLOR: ("cpu_devices", 1)}, trains
    first, second = sorted(trains.values(), key=lambda t: _when(t["start_date"]))
    # both were waiting for the pool at the same time, and the second only started once the first had ended
    assert _when(second["scheduled_when"]) < _when(first["end_date"]), (first, second)
    assert _when(second["start_date"]) >= _when(first["end_date"]), (first, second)


def test_the_export_asset_schedules_the_consumer_dag(airflow_services: Services, two_runs: dict) -> None:
    s, run_id = airflow_services, two_runs["runs"][PPYOLOE]
    events = s.ok("GET", "/api/v2/assets/events?source_dag_id=" + PPYOLOE)["asset_events"]
    mine = [e for e in events if e["source_run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["uri"] == f"model://{PPYOLOE}/exported"
    # the asset hangs on the promotion: only a model that passed its gates and became the champion is announced
    assert mine[0]["source_task_id"] == "promote_fp32"
    prov = mine[0]["extra"]["provenance"]  # what produced the model, for whoever deploys it
    report = s.xcom(PPYOLOE, run_id, "report", key="report")
    assert prov["dataset_digest"] == report["dataset"]["validate_dataset"]["content"]["digest"]
    assert prov["recipe_digest"].startswith("sha256:") and prov["toolkit_commit"] and prov["frameworks"]["paddlepaddle"]
    deadline = time.monotonic() + 180
    while True:
        runs = s.ok("GET", f"/api/v2/dags/{CONSUMER}/dagRuns")["dag_runs"]
        done = [r for r in runs if r["state"] in ("success", "failed")]
        if done:
            break
        assert time.monotonic() < deadline, f"{CONSUMER} did not run after the export: {runs}"
        time.sleep(2)
    assert done[0]["state"] == "success" and done[0]["run_type"] == "asset_triggered"
    deployed = s.xcom(CONSUMER, done[0]["dag_run_id"], "deploy")
    assert deployed["run_id"] == run_id
    assert Path(deployed["params"]).is_file() and str(s.runs_dir) in deployed["params"]


def test_an_unknown_conf_key_fails_the_run_naming_the_allowed_keys(airflow_services: Services) -> None:
    s = airflow_services
    s.unpause(PICODET)
    run_id = s.trigger(PICODET, {"epoch": 2})  # Airflow itself accepts unknown keys silently
    assert s.wait_run(PICODET, run_id, timeout=300) == "failed"
    tis = s.task_instances(PICODET, run_id)
    assert tis["prepare_dataset"]["state"] == "failed"
    assert tis["train"]["state"] == "upstream_failed"
    log = s.log(PICODET, run_id, "prepare_dataset")
    assert "unknown parameter(s) ['epoch']; allowed: [" in log and "'epochs'" in log


def test_a_shell_metacharacter_value_reaches_the_stage_as_one_literal_argument(airflow_services: Services) -> None:
    s = airflow_services
    marker = Path(f"/tmp/npuflow-pwned-{uuid.uuid4().hex}")
    root = f"/nonexistent/coco; touch {marker} $(touch {marker})"
    s.unpause(PICODET)
    run_id = s.trigger(PICODET, {"dataset_root": root, "stages": ["prepare_dataset"]})
    assert s.wait_run(PICODET, run_id, timeout=300) == "failed"
    log = s.log(PICODET, run_id, "prepare_dataset")
    assert root in log  # named as given, one argument
    assert not marker.exists()


def test_a_new_dag_file_is_picked_up_within_seconds(airflow_services: Services) -> None:
    s = airflow_services
    dag_id = f"npuflow_new_{uuid.uuid4().hex[:8]}"
    (s.dags_folder / f"{dag_id}.py").write_text(
        "from airflow.sdk import DAG\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        f"with DAG(dag_id={dag_id!r}, schedule=None):\n"
        "    EmptyOperator(task_id='noop')\n")
    # Airflow's default refresh_interval is 300 s; the services set 5 s.
    assert s.wait_dag(dag_id, timeout=60) < 60


def test_readme_python_client_example_triggers_and_reads_a_run(airflow_services: Services) -> None:
    """The README's apache-airflow-client example, run as written against these services."""
    s = airflow_services
    env = {**os.environ, "AIRFLOW_URL": s.url, "AIRFLOW_USER": "operator",
           "AIRFLOW_PASSWORD": s.password("operator"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([str(VENV_BIN / "python"), str(ROOT / "docs" / "examples" / "trigger_with_client.py"),
                           YOLOR, '{"epochs": 1}'], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "state: success" in proc.stdout
    assert "report:" in proc.stdout
