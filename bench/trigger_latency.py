"""Latency from a REST trigger to the first training process, next to a trivial two-task DAG (real services).

    .venv/bin/python bench/trigger_latency.py [--dag yolor_p6_coco] [--repeat 5]

Starts the services with ``npuflow airflow up`` in a temporary home, then alternately triggers (over REST, as
a user's tools do) the smoke profile of ``--dag`` and ``bench/dags/trivial_two_task.py``. For our DAG the
latency ends when the first process of the train stage starts (its launcher, found in /proc by the
``NPUFLOW_JOB`` marker; the start time is the kernel's, not the moment the poll saw it); for the trivial DAG
when the process of its second task starts (found by its own marker). The ratio of the medians shows what the
recipe's stages before training and our operators add to Airflow's own scheduling. Each run is left to finish
before the next trigger.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from operators.proc import JOB_ENV  # noqa: E402
from operators.services import ServiceConfig, api, token_for  # noqa: E402

TRIVIAL = "bench_trivial_two_task"
BIN = Path(sys.executable).parent


def first_process(match: Callable[[dict[str, str]], bool], timeout: float) -> float:
    """Start time (epoch seconds) of the earliest live process whose environment matches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starts = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if match(proc.environ()):
                    starts.append(proc.create_time())
            except psutil.Error:
                continue
        if starts:
            return min(starts)
        time.sleep(0.02)
    raise TimeoutError("no matching process appeared")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dag", default="yolor_p6_coco")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="npuflow-bench-latency-"))
    dags = tmp / "dags"
    dags.mkdir()
    shutil.copy(ROOT / "dags" / f"{args.dag}.py", dags)
    shutil.copy(ROOT / "bench" / "dags" / "trivial_two_task.py", dags)
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "NPUFLOW_RUNS_DIR": str(tmp / "runs"), "NPUFLOW_DEFAULT_PROFILE": "smoke", "PYTHONWARNINGS": "ignore"}
    cfg = ServiceConfig(home=tmp / "airflow", port=port)
    up = subprocess.run([str(BIN / "npuflow"), "airflow", "up", "--port", str(port)], env=env, text=True,
                        capture_output=True)
    try:
        if up.returncode != 0:
            raise SystemExit(f"npuflow airflow up failed:\n{up.stdout}{up.stderr}")
        token = token_for(cfg, "admin")

        def call(method: str, path: str, body: object = None) -> dict:
            status, out = api(cfg, method, path, body, token=token)
            if status not in (200, 201):
                raise SystemExit(f"{method} {path}: HTTP {status} {out}")
            return out

        for dag_id in (args.dag, TRIVIAL):
            while api(cfg, "GET", f"/api/v2/dags/{dag_id}", token=token)[0] != 200:
                time.sleep(0.5)
            call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

        def trial(dag_id: str, conf: dict, match: Callable[[str], Callable[[dict[str, str]], bool]]) -> float:
            t0 = time.time()
            run_id = call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
            started = first_process(match(run_id), timeout=300)
            path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            while (state := call("GET", path)["state"]) not in ("success", "failed"):
                time.sleep(0.5)
            if state != "success":
                raise SystemExit(f"{dag_id} {run_id} {state}")
            # where the time went: each task's start and end (relative to the trigger) up to the process
            tis = sorted(call("GET", f"{path}/taskInstances")["task_instances"], key=lambda t: t["start_date"] or "~")
            parts = []
            for ti in tis:
                begin, end = (datetime.fromisoformat(ti[k].replace("Z", "+00:00")).timestamp() - t0
                              for k in ("start_date", "end_date"))
                parts.append(f"{ti['task_id']} {begin:.2f}-{end:.2f}")
                if begin <= started - t0 <= end:
                    break
            print(f"    {dag_id}: {'; '.join(parts)}; process {started - t0:.2f} s", flush=True)
            return started - t0

        ours, trivial = [], []
        for i in range(args.repeat):
            ours.append(trial(args.dag, {"epochs": 1},
                              lambda run: lambda e: e.get(JOB_ENV, "").startswith(f"{args.dag}/{run}/train/")))
            trivial.append(trial(TRIVIAL, {}, lambda run: lambda e: e.get("NPUFLOW_BENCH_RUN") == run))
            print(f"  trial {i + 1}: {args.dag} {ours[-1]:.2f} s, trivial {trivial[-1]:.2f} s", flush=True)
    finally:
        subprocess.run([str(BIN / "npuflow"), "airflow", "down"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    mo, mt = statistics.median(ours), statistics.median(trivial)
    print(json.dumps({"dag": args.dag, "repeat": args.repeat, "ours_s": [round(x, 2) for x in ours],
                      "trivial_s": [round(x, 2) for x in trivial]}))
    print(f"REST trigger -> first training process: {args.dag} median {mo:.2f} s; trigger -> second task's "
          f"process of a trivial 2-task DAG: median {mt:.2f} s; ratio {mo / mt:.2f}")


if __name__ == "__main__":
    main()
