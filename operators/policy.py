"""Airflow cluster policy (entry point ``airflow.policy``, pyproject.toml): route each node of a per-node stage.

Mapped task instances all get their task's queue; this hook, which Airflow calls when it creates or refreshes a
task instance (retries included), moves map index k of an npuflow per-node task to the queue of host k
(``npuflow.fleet.node_queue``). Any other task instance is left alone.
"""

from __future__ import annotations

from typing import Any

from airflow import settings
from airflow.policies import hookimpl

from npuflow.fleet import node_queue

# Airflow 3.3 marks the hook "no-op" unless an airflow_local_settings module defines one, and then creates a run's
# task instances without calling it (DagRun.verify_integrity): a hook from an entry point alone never routes
# the first try. This module is imported while the policy plugins load, so it can say there is one.
settings.task_instance_mutation_hook.is_noop = False  # type: ignore[attr-defined]


@hookimpl
def task_instance_mutation_hook(task_instance: Any, dag_run: Any) -> None:
    queue = node_queue(getattr(task_instance, "executor_config", None), getattr(dag_run, "conf", None),
                       getattr(task_instance, "map_index", None))
    if queue is not None:
        task_instance.queue = queue
