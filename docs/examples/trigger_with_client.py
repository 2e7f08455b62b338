"""Trigger an npuflow DAG with conf over REST using the official ``apache-airflow-client`` and wait for it.

    AIRFLOW_URL=http://127.0.0.1:8080 AIRFLOW_USER=operator \\
    AIRFLOW_PASSWORD="$(python -c 'import json; print(json.load(open("var/airflow/services/passwords.json"))["operator"])')" \\
    .venv/bin/python docs/examples/trigger_with_client.py ppyoloe_plus_crn_l_80e_coco '{"epochs": 2}'

Prints the run id, its final state, the train task's last log lines and the run's report.
"""

from __future__ import annotations

import json
import os
import sys
import time

import airflow_client.client as af
import requests


def access_token(host: str, username: str, password: str) -> str:
    response = requests.post(f"{host}/auth/token", json={"username": username, "password": password}, timeout=30)
    if response.status_code != 201:
        raise SystemExit(f"no token: HTTP {response.status_code} {response.text}")
    return response.json()["access_token"]


def main(dag_id: str, conf: dict) -> int:
    host = os.environ.get("AIRFLOW_URL", "http://127.0.0.1:8080")
    token = access_token(host, os.environ["AIRFLOW_USER"], os.environ["AIRFLOW_PASSWORD"])
    with af.ApiClient(af.Configuration(host=host, access_token=token)) as client:
        dags, runs = af.DAGApi(client), af.DagRunApi(client)
        dags.patch_dag(dag_id, af.DAGPatchBody(is_paused=False))  # new DAGs start paused
        try:
            run = runs.trigger_dag_run(dag_id, af.TriggerDAGRunPostBody(logical_date=None, conf=conf))
        except af.ApiException as exc:  # 400: a param failed its schema; the body says which and why
            raise SystemExit(f"refused: HTTP {exc.status} {exc.body}") from None
        print(f"run: {run.dag_run_id}", flush=True)
        while (state := runs.get_dag_run(dag_id, run.dag_run_id).state.value) not in ("success", "failed"):
            time.sleep(5)
        print(f"state: {state}")
        log = af.TaskInstanceApi(client).get_log(dag_id, run.dag_run_id, "train", 1)
        lines = [getattr(e, "event", e) for e in log.content.actual_instance]  # structured records or lines
        for line in [x for x in lines if not x.startswith("::")][-4:]:
            print("  train |", line)
        if state == "success":
            entry = af.XComApi(client).get_xcom_entry(dag_id, "report", run.dag_run_id, "report")
            print("report:", json.dumps(entry.actual_instance.value, indent=2)[:2000])
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}))
