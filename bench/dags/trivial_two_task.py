"""The baseline of bench/trigger_latency.py: two trivial tasks, the second one a process the bench can see."""

from __future__ import annotations

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(dag_id="bench_trivial_two_task", schedule=None, max_active_runs=1, tags=["bench"]):
    first = BashOperator(task_id="first", bash_command="true")
    # The marker lets the bench find this process in /proc, as it finds a training job by NPUFLOW_JOB.
    second = BashOperator(task_id="second", bash_command="sleep 1", env={"NPUFLOW_BENCH_RUN": "{{ run_id }}"},
                          append_env=True)
    first >> second
