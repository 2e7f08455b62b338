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
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.proc import JOB_ENV  # noqa: E402
from tests.airflow_services import start, stop  # noqa: E402  (the tests' helpers: up/down, REST client)

TRIVIAL = "bench_trivial_two_task"


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
    s = start(tmp, project_dags=(args.dag,), extra_dags=(ROOT / "bench" / "dags" / "trivial_two_task.py",))
    try:
        for dag_id in (args.dag, TRIVIAL):
            s.unpause(dag_id)

        def trial(dag_id: str, conf: dict, match: Callable[[str], Callable[[dict[str, str]], bool]]) -> float:
            t0 = time.time()
            run_id = s.trigger(dag_id, conf)
            started = first_process(match(run_id), timeout=300)
            if (state := s.wait_run(dag_id, run_id)) != "success":
                raise SystemExit(f"{dag_id} {run_id} {state}")
            # where the time went: each task's start and end (relative to the trigger) up to the process
            tis = sorted(s.task_instances(dag_id, run_id).values(), key=lambda t: t["start_date"] or "~")
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
        stop(s)
        shutil.rmtree(tmp, ignore_errors=True)
    mo, mt = statistics.median(ours), statistics.median(trivial)
    print(json.dumps({"dag": args.dag, "repeat": args.repeat, "ours_s": [round(x, 2) for x in ours],
                      "trivial_s": [round(x, 2) for x in trivial]}))
    print(f"REST trigger -> first training process: {args.dag} median {mo:.2f} s; trigger -> second task's "
          f"process of a trivial 2-task DAG: median {mt:.2f} s; ratio {mo / mt:.2f}")


if __name__ == "__main__":
    main()
