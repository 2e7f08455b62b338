"""A DAG's earlier runs, read from the runs folder: trends, the 1-card throughput baseline, TIPC-style records.

Runs live at ``<runs root>/<dag_id>/<run_id>/`` with their ``report.json``; a run counts as *successful* when
every stage in its report is ok and every gate stage after it passed (its ``result.json``). Only runs of the
same profile are compared: a smoke run is never a baseline for a production one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: A metric that got worse by more than this fraction since the previous successful run is flagged, unless the
#: recipe sets ``trend_tolerance``.
DEFAULT_TOLERANCE = 0.05
#: Names of metrics where lower is better; every other metric is better higher.
_LOWER_IS_BETTER = ("latency", "size_mb", "loss")


def _successful(run_dir: Path, report: dict[str, Any]) -> bool:
    if not report.get("stages") or not all(s.get("ok") for s in report["stages"].values()):
        return False
    for result in run_dir.glob("*/result.json"):
        stored = json.loads(result.read_text())
        if stored.get("kind") == "gate" and not stored.get("ok"):
            return False
    return True


def previous_runs(run_dir: Path, profile: str | None, limit: int = 5) -> list[dict[str, Any]]:
    """The newest ``limit`` successful earlier runs of this DAG and profile, newest first."""
    found = []
    for path in run_dir.parent.glob("*/report.json"):
        if path.parent == run_dir:
            continue
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("profile") == profile and _successful(path.parent, report):
            found.append(report)
    found.sort(key=lambda r: r.get("generated_at") or "", reverse=True)
    return found[:limit]


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in _LOWER_IS_BETTER)


def trends(measured: dict[str, float], previous: list[dict[str, Any]], tolerance: float) -> list[dict[str, Any]]:
    """Each metric against the previous successful run (and the mean of up to five): delta, regression flag."""
    out = []
    if not previous:
        return out
    for metric, value in sorted(measured.items()):
        history = [p["measured"][metric] for p in previous if metric in p.get("measured", {})]
        if not history:
            continue
        last = history[0]
        change = (value - last) / abs(last) if last else None
        worse = change is not None and (change > tolerance if lower_is_better(metric) else change < -tolerance)
        out.append({"metric": metric, "value": value, "previous": last, "previous_run": previous[0].get("run_id"),
                    "mean_previous": sum(history) / len(history), "runs": len(history), "delta": value - last,
                    "relative": change, "regression": worse})
    return out


def scaling(total: float | None, world: int | None, published: dict[str, Any], profile: str | None,
            previous: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Training images/s in total (the train kind's ``train_ips``) and per card; for more than one card, the
    efficiency against a 1-card figure: the newest successful 1-card run of this profile, else (production) the
    recipe's published 1-card figure."""
    if not total or not world:
        return None
    out: dict[str, Any] = {"cards": world, "images_per_s": total, "images_per_s_per_card": total / world}
    if world > 1:
        baseline = next(((p["scaling"]["images_per_s"], f"run {p.get('run_id')}") for p in previous
                         if (p.get("scaling") or {}).get("cards") == 1), None)
        if baseline is None and profile == "production":
            one = next((pub for pub in published.values() if pub.get("cards") == 1
                        and pub["measured_as"].endswith(".train_ips")), None)
            baseline = (one["value"], f"published ({one['source']})") if one else None
        if baseline is not None:
            out.update({"one_card_images_per_s": baseline[0], "one_card_source": baseline[1],
                        "efficiency": total / (world * baseline[0])})
    return out


def tipc_record(report: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any] | None:
    """The run's training as one record in the shape of Paddle's TIPC benchmark logs."""
    scale = report.get("scaling")
    if not scale:
        return None
    train = next(iter(report["train"].values()), {})
    evals = train.get("metrics", {}).get("eval", {})
    key = "bbox_map" if "bbox_map" in evals else ("miou" if "miou" in evals else None)
    device = plan.get("device") or {}
    return {
        "model_name": report["dag_id"], "batch_size": plan.get("variables", {}).get("batch_per_card") or None,
        "fp_item": "fp32", "run_mode": "DP" if scale["cards"] > 1 else "SP",
        "device_num": f"N{device.get('nnodes', 1)}C{device.get('count', scale['cards'])}",
        "ips": round(scale["images_per_s"], 4), "speed_unit": "samples/s", "convergence_key": key,
        "convergence_value": evals.get(key) if key else None,
        "run_id": report.get("run_id"), "profile": report.get("profile"), "generated_at": report.get("generated_at"),
        "provenance": provenance(report),
    }


def provenance(report: dict[str, Any]) -> dict[str, Any]:
    """What produced the run's models, flat: for the TIPC record, the asset events, and to compare two runs'
    inputs. ``frameworks``: each distribution the stages' own Pythons imported, with the version(s) seen;
    ``images``: the content id of each container stage's image."""
    prov = report.get("provenance") or {}
    tk = prov.get("toolkit") or {}
    datasets = [(r or {}).get("content", {}).get("digest") for r in (report.get("dataset") or {}).values()]
    envs = {stage: env for stage, env in (prov.get("environments") or {}).items() if env}
    seen: dict[str, set[str]] = {}
    for env in envs.values():
        for dist, version in (env.get("distributions") or {}).items():
            seen.setdefault(dist, set()).add(str(version))
    return {"recipe_digest": prov.get("recipe_digest"), "npuflow_version": prov.get("npuflow_version"),
            "toolkit": f"{tk['name']}@{tk['ref']}" if tk else None, "toolkit_commit": tk.get("commit") or tk.get("pinned_commit"),
            "toolkit_local_changes": tk.get("local_changes"), "dataset_digest": next((d for d in datasets if d), None),
            "frameworks": {d: ", ".join(sorted(v)) for d, v in sorted(seen.items())},
            "images": {stage: env["image_id"] for stage, env in sorted(envs.items()) if env.get("image_id")}}


def run_provenance(run_dir: Path, pin: dict[str, Any]) -> dict[str, Any]:
    """The run's flat provenance for an asset event: from its report (the gates that announce models run after
    it, so the dataset digest and images are there), else the pinned plan's part of it."""
    try:
        return provenance(json.loads((run_dir / "report.json").read_text()))
    except (OSError, ValueError):
        return provenance({"provenance": {k: pin.get(k) for k in ("recipe_digest", "npuflow_version", "toolkit")}})


def compare_inputs(report: dict[str, Any], previous: list[dict[str, Any]]) -> dict[str, Any] | None:
    """This run's provenance against the previous successful run's (the one its trends compare with): what
    changed, as ``{field: [then, now]}``, and which earlier runs had exactly these inputs. A regression with no
    changed input points at the hardware or chance; one with a changed input, at that input."""
    if not previous:
        return None
    mine = provenance(report)
    then = provenance(previous[0])
    return {"previous_run": previous[0].get("run_id"),
            "changed": {k: [then.get(k), v] for k, v in mine.items() if then.get(k) != v},
            "same_inputs_runs": [p.get("run_id") for p in previous if provenance(p) == mine]}


def append_record(path: Path, record: dict[str, Any]) -> bool:
    """Append one JSON line; a run already recorded (the report ran again) is not written twice."""
    if path.is_file() and any(json.loads(line).get("run_id") == record["run_id"]
                              for line in path.read_text().splitlines() if line.strip()):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    return True
