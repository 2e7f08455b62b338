"""A gated model registered in MLflow's model registry and promoted only when it is at least as good.

The promote stage's program. The model a gate passed becomes a version of the registered model the recipe
names (``<dag_id>`` for FP32, ``<dag_id>-int8``), its files under the run's artifacts (an ONNX model with an
``MLmodel`` of MLflow's onnx flavor, so ``mlflow.onnx.load_model("models:/<name>@champion")`` loads it; Paddle
inference files as they are, with their ``infer_cfg.yml`` / ``deploy.yaml``), tagged with its metric, the
digest of the validation split it was measured on (npuflow/datasets/digest.py) and its gates' verdicts. It
gets the ``challenger`` alias; it takes ``champion`` only when its promotion metric is at least the
champion's minus the recipe's tolerance, measured on the same validation set (the split's digest the validate
stage took). Otherwise the champion stays and ``promotion.json`` says why; the stage's asset events
(``model://<dag_id>/...``) follow the champion.

With ``--mode approval`` a winner is only proposed (``awaiting_approval``); :func:`crown` moves the alias
once a person approved in Airflow. Re-running is safe: a run's version is found again by its run id, and
aliases are set, not added.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from npuflow.tracking import RUN_TAG, MlflowClient, TrackingError, TrackingRefused, dataset_digest, tracking_off

CHAMPION, CHALLENGER = "champion", "challenger"
DEPLOY_CONFIGS = ("infer_cfg.yml", "deploy.yaml")


def _tags(pairs: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in pairs.items() if v not in (None, "")]


def _mlmodel(onnx_file: Path) -> str:
    """The ``MLmodel`` of MLflow's onnx flavor (what ``mlflow.onnx.save_model`` writes) for one ONNX file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        onnx_version = version("onnx")
    except PackageNotFoundError:
        onnx_version = ""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return "\n".join([
        "artifact_path: model",
        "flavors:",
        "  onnx:",
        f"    data: {onnx_file.name}",
        f"    onnx_version: {onnx_version}",
        "    providers: [CPUExecutionProvider]",
        "  python_function:",
        f"    data: {onnx_file.name}",
        "    loader_module: mlflow.onnx",
        f"    python_version: {sys.version.split()[0]}",
        f"utc_time_created: '{now}'", ""])


def model_files(gate_result: Path) -> tuple[dict[str, str], bool]:
    """The files of the model a gate stage vouched for, and whether its gates passed (its result.json)."""
    try:
        result = json.loads(gate_result.read_text())["result"]
    except (OSError, ValueError, KeyError) as exc:
        raise TrackingRefused(f"cannot read the gate's result {gate_result}: {exc}") from None
    files = {k: v for k, v in (result.get("model_files") or {}).items() if Path(v).is_file()}
    params = [Path(v) for k, v in files.items() if k in ("params", "model")]
    for folder in {p.parent for p in params}:
        for name in DEPLOY_CONFIGS:
            if (folder / name).is_file():
                files.setdefault(name, str(folder / name))
    if not files:
        raise TrackingRefused(f"the gate's result {gate_result} names no model file on disk")
    return files, bool(result.get("passed"))


class Registry:
    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def ensure_model(self, name: str, description: str) -> None:
        if not self.client.call("GET", "mlflow/registered-models/get", params={"name": name}, missing_ok=True):
            self.client.call("POST", "mlflow/registered-models/create", json={"name": name,
                                                                              "description": description})

    def version_of_run(self, name: str, run_id: str) -> dict[str, Any] | None:
        found = self.client.call("GET", "mlflow/model-versions/search",
                                 params={"filter": f"name='{name}' and run_id='{run_id}'"}).get("model_versions", [])
        return found[0] if found else None

    def alias(self, name: str, alias: str) -> dict[str, Any] | None:
        found = self.client.call("GET", "mlflow/registered-models/alias", params={"name": name, "alias": alias},
                                 missing_ok=True)
        return found.get("model_version")

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.call("POST", "mlflow/registered-models/alias", json={"name": name, "alias": alias,
                                                                         "version": version})


def decide(challenger: dict[str, Any], champion: dict[str, Any] | None, tolerance: float) -> tuple[bool, str]:
    """Whether ``challenger`` replaces ``champion`` (both: version, metric, value, dataset digest), and why."""
    metric, value = challenger["metric"], challenger["value"]
    if champion is None:
        return True, f"no champion yet: version {challenger['version']} ({metric} = {value:.4g}) becomes it"
    if champion["version"] == challenger["version"]:
        return True, f"version {challenger['version']} is already the champion"
    if champion.get("metric") != metric or champion.get("value") is None:
        return False, (f"the champion (version {champion['version']}) has no {metric} recorded: not compared, "
                       "it stays (promote by hand if it should go)")
    if champion.get("validation_digest") != challenger["validation_digest"]:
        return False, (f"the champion (version {champion['version']}) was measured on another validation set "
                       f"({champion.get('validation_digest') or 'unknown'} != {challenger['validation_digest']}): "
                       "not compared, it stays")
    bound = champion["value"] - tolerance
    if value >= bound:
        return True, (f"version {challenger['version']} ({metric} = {value:.4g}) is at least the champion's "
                      f"(version {champion['version']}: {champion['value']:.4g}, tolerance {tolerance:g})")
    return False, (f"version {challenger['version']} ({metric} = {value:.4g}) is below the champion's (version "
                   f"{champion['version']}: {champion['value']:.4g}, tolerance {tolerance:g}): it stays challenger")


def _recorded(version: dict[str, Any] | None) -> dict[str, Any] | None:
    if version is None:
        return None
    tags = {t["key"]: t["value"] for t in version.get("tags", [])}
    try:
        value = float(tags["metric_value"])
    except (KeyError, ValueError):
        value = None
    return {"version": version["version"], "metric": tags.get("metric"), "value": value,
            "validation_digest": tags.get("validation_digest", "")}


def propose(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    where = json.loads(args.tracking.read_text()) if args.tracking.is_file() else {"tracked": False}
    files, passed = model_files(args.gate_result)
    base = {"registered_model": args.name, "metric": args.metric}
    if not where.get("tracked") or tracking_off(env):
        return {**base, "registry": False, "promoted": True,
                "why": "no model registry (MLflow tracking is off): the gated model is announced as before"}
    if not passed:
        return {**base, "registry": True, "promoted": False, "why": "the model missed its gates"}
    report = json.loads((args.run_dir / "report.json").read_text())
    value = (report.get("measured") or {}).get(args.metric)
    if not isinstance(value, (int, float)):
        raise TrackingRefused(f"the report has no measured {args.metric} (the recipe's promotion metric); "
                              f"measured: {sorted(report.get('measured') or {})}")
    digest = dataset_digest(report, validation=True)
    client = MlflowClient(where["tracking_uri"], env)
    registry = Registry(client)
    run_id = where["mlflow_run_id"]
    registry.ensure_model(args.name, f"{report.get('title', args.name)}: registered by npuflow")
    version = registry.version_of_run(args.name, run_id)
    if version is None:
        artifact_uri = client.call("GET", "mlflow/runs/get", params={"run_id": run_id})["run"]["info"]["artifact_uri"]
        folder = f"models/{args.name}"
        for local in files.values():
            client.upload(artifact_uri, Path(local), f"{folder}/{Path(local).name}")
        onnx = [Path(p) for p in files.values() if p.endswith(".onnx")]
        if onnx:
            mlmodel = args.out.parent / "MLmodel"
            mlmodel.parent.mkdir(parents=True, exist_ok=True)
            mlmodel.write_text(_mlmodel(onnx[0]))
            client.upload(artifact_uri, mlmodel, f"{folder}/MLmodel")
        gates = {f"gate.{g['gate']}": "passed" if g.get("passed") else "MISSED" for g in report.get("gates") or []}
        version = client.call("POST", "mlflow/model-versions/create", json={
            "name": args.name, "source": f"{artifact_uri}/{folder}", "run_id": run_id,
            "description": f"Airflow run {report.get('run_id')} of {report.get('dag_id')} ({report.get('profile')})",
            "tags": _tags({"metric": args.metric, "metric_value": value, "validation_digest": digest,
                           "precision": args.precision, RUN_TAG: report.get("run_id"),
                           "profile": report.get("profile"), "format": "onnx" if onnx else "paddle-inference",
                           **gates})})["model_version"]
    registry.set_alias(args.name, CHALLENGER, version["version"])
    challenger = {"version": version["version"], "metric": args.metric, "value": float(value),
                  "validation_digest": digest}
    champion = _recorded(registry.alias(args.name, CHAMPION))
    better, why = decide(challenger, champion, args.tolerance)
    already = champion is not None and champion["version"] == version["version"]  # a retry after the alias moved
    promoted = better and (args.mode == "auto" or already)
    if promoted:
        registry.set_alias(args.name, CHAMPION, version["version"])
    elif better:
        why += "; waiting for a person's approval in Airflow"
    return {**base, "registry": True, "version": version["version"], "value": float(value),
            "champion_before": champion, "promoted": promoted, "awaiting_approval": better and not promoted,
            "why": why, "tracking_uri": client.uri,
            "url": f"{client.uri}/#/models/{args.name}/versions/{version['version']}"}


def crown(decision: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """After a person approved in Airflow: the proposed version takes ``champion`` (the approval task)."""
    Registry(MlflowClient(decision["tracking_uri"], env)).set_alias(decision["registered_model"], CHAMPION,
                                                                    decision["version"])
    return {**decision, "promoted": True, "awaiting_approval": False, "why": decision["why"] + "; approved"}


def main(argv: list[str] | None = None) -> int:
    from npuflow.errors import refuse
    from npuflow.rundir import write_json

    ap = argparse.ArgumentParser(prog="python -m npuflow.registry", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--tracking", required=True, type=Path, help="the track stage's tracking.json")
    ap.add_argument("--gate-result", required=True, type=Path, help="the gate stage's result.json")
    ap.add_argument("--name", required=True, help="the registered model")
    ap.add_argument("--precision", required=True)
    ap.add_argument("--metric", required=True, help="the report's measured number that decides")
    ap.add_argument("--tolerance", type=float, default=0.0)
    ap.add_argument("--mode", choices=("auto", "approval"), default="auto",
                    help="approval: propose only; the approval task moves the alias once a person says so")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    env = dict(os.environ)
    try:
        result = propose(args, env)
    except TrackingRefused as exc:
        return refuse(str(exc))
    except TrackingError as exc:
        print(f"error: {exc}; the run folder keeps the model: the retry registers it", file=sys.stderr)
        return 1
    write_json(args.out, result)
    print(result["why"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
