"""One plan per run: resolved once, when the run's first task starts, stored in the run folder, and read by every
task of the run on every host and every try.

A production training runs for days; a recipe edited (or a new npuflow deployed) meanwhile must not change the
export, compression and benchmark of *that* run, nor overwrite the record of what it ran. So the first task
builds the plan for each node of the run and links it into place as ``<run_dir>/plan.json`` (``os.link`` fails
when another task got there first: that one's plan wins, whatever this task would have built). Later tasks never
build: they read it. The next run reads the recipe as it is then.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from npuflow.plan import Plan, PlanError, StageCommand
from npuflow.recipe import Recipe
from npuflow.rundir import write_json
from npuflow.toolkits.checkout import describe

PLAN_FILE = "plan.json"


class PlanDrift(PlanError):
    """The run's pinned plan and the DAG this task belongs to disagree: no retry can reconcile them."""


def npuflow_version() -> str:
    try:
        return version("npuflow")
    except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
        return "unknown"


def recipe_digest(recipe: Recipe) -> str:
    """SHA-256 of the recipe as loaded (its file and the dataset spec it names), independent of key order."""
    body = json.dumps({"recipe": recipe.data, "dataset": recipe.dataset}, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """The inverse of :meth:`Plan.to_dict` (extra keys of the stored record are ignored)."""
    names = {f.name for f in fields(StageCommand)}
    stages = [StageCommand(**{k: v for k, v in s.items() if k in names}) for s in data["stages"]]
    keys = {f.name for f in fields(Plan)} - {"stages"}
    return Plan(**{k: v for k, v in data.items() if k in keys}, stages=stages)


def pinned_plan(run_dir: Path, node_rank: int, build: Callable[[int], Plan], *, recipe: Recipe,
                params: dict[str, Any], nnodes: int, log: Callable[[str], None] = lambda _: None) -> tuple[Plan, dict]:
    """This node's plan from the run's pinned record, pinning it first if no task of the run has.

    ``build(n)`` renders node ``n``'s plan from the recipe as it is now; it is called only by the task that pins.
    Returns the plan and the record's ``pinned`` block (recipe digest, params, npuflow version, when).
    """
    path = run_dir / PLAN_FILE
    record = _read(path)
    if record is None:
        plans = [build(n) for n in range(nnodes)]
        toolkit = None
        if recipe.toolkit is not None:
            toolkit = describe(recipe.toolkit.name, recipe.toolkit_ref, plans[0].variables.get("toolkit_dir", ""))
        pin = {"recipe_digest": recipe_digest(recipe), "recipe_file": str(recipe.path), "params": params,
               "log_format": recipe.log_format, "recipe": recipe.data,
               "npuflow_version": npuflow_version(), "pinned_at": time.time(), "nnodes": nnodes,
               "toolkit": toolkit}
        record = {**plans[0].to_dict(), "pinned": pin,
                  "node_plans": {str(n): p.to_dict() for n, p in enumerate(plans) if n}}
        if _link_once(path, record):
            log(f"plan pinned for this run in {path} (recipe {pin['recipe_digest'][:19]}…)")
        else:
            record = _read(path) or record
    pin = record["pinned"]
    if node_rank == 0:
        return plan_from_dict(record), pin
    try:
        return plan_from_dict(record["node_plans"][str(node_rank)]), pin
    except KeyError:
        raise PlanDrift(f"this run's pinned plan ({path}) has {pin['nnodes']} node(s): none for node "
                        f"{node_rank}") from None


def check_stage(plan: Plan, pin: dict[str, Any], stage: str, upstream: set[str]) -> StageCommand:
    """The stage this task runs, as pinned; refused when the DAG's graph around it is not the pinned one."""
    names = [s.name for s in plan.stages]
    where = f"this run's plan (pinned from recipe {pin['recipe_digest'][:19]}… with npuflow {pin['npuflow_version']})"
    if stage not in names:
        raise PlanDrift(f"{where} has no stage {stage!r} (it has {', '.join(names)}): the DAG changed after the "
                        f"run started; start a new run")
    command = plan.stage(stage)
    if set(command.needs) != upstream:
        raise PlanDrift(f"stage {stage}: {where} runs it after {sorted(command.needs)}, the DAG after "
                        f"{sorted(upstream)}: the graph changed after the run started; start a new run")
    return command


def _read(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PlanDrift(f"cannot read this run's pinned plan {path}: {exc}") from None
    return record if "pinned" in record else None  # a plan.json written before plans were pinned: pin anew


def _link_once(path: Path, record: dict[str, Any]) -> bool:
    """Put ``record`` at ``path`` unless a pinned plan is already there; True when this call put it."""
    # Unsorted: the pinned recipe's stage order is what the report lists its stages (and those not run) in.
    tmp = write_json(path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}"), record, sort_keys=False)
    try:
        if path.exists() and _read(path) is None:  # the unpinned record of an older npuflow
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)
