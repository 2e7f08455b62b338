"""More than one NPU server: which host runs which node of a per-node stage, and how nodes hear of a failure.

Airflow-free. The deployment names its hosts in ``NPUFLOW_HOSTS`` (node-rank order; ``npuflow airflow up
--executor celery`` sets it from ``--hosts``/``--workers``), and every host's Celery worker consumes the queue of
its own name. The DAG factory makes a per-node stage (training) one mapped task per host, map index = node rank;
the scheduler-side policy (``npuflow.operators.policy``) puts map index k on queue ``hosts[k]``, where a run's
``hosts`` parameter may rename them. A node whose job fails leaves a marker in the run folder; the other nodes
of the same try stop when they see it (the collective would fail too, but maybe only after its timeout).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HOSTS_ENV = "NPUFLOW_HOSTS"
#: The per-node task's executor_config key holding the deployment's hosts (what the routing policy reads).
HOSTS_KEY = "npuflow_hosts"


def deployment_hosts(env: dict[str, str] | None = None) -> list[str]:
    raw = (os.environ if env is None else env).get(HOSTS_ENV, "")
    return [h.strip() for h in raw.split(",") if h.strip()]


def node_queue(executor_config: dict[str, Any] | None, conf: dict[str, Any] | None, map_index: int | None) -> str | None:
    """The Celery queue of node ``map_index`` of a per-node task, or None for any other task instance."""
    hosts = (executor_config or {}).get(HOSTS_KEY)
    if not hosts or map_index is None or map_index < 0:
        return None
    wanted = (conf or {}).get("hosts") or hosts
    return wanted[map_index] if map_index < len(wanted) else None


def _markers(run_dir: str, stage: str) -> Path:
    return Path(run_dir) / stage / "nodes"


def mark_failed(run_dir: str, stage: str, attempt: int, node: int, cause: str) -> None:
    """Tell the other nodes of this try that node ``node`` failed (a file in the run folder they share)."""
    folder = _markers(run_dir, stage)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"try{attempt}-node{node}.failed").write_text(json.dumps({"node": node, "cause": cause}) + "\n")


def failed_siblings(run_dir: str, stage: str, attempt: int, node: int) -> list[dict[str, Any]]:
    """The other nodes of try ``attempt`` that failed, with their causes."""
    found = []
    for path in sorted(_markers(run_dir, stage).glob(f"try{attempt}-node*.failed")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("node") != node:
            found.append(data)
    return found
