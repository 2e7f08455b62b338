"""A run folder sent to MLflow over its REST API: one experiment per DAG, one MLflow run per Airflow run.

Everything sent is read from the run folder (``plan.json``, ``report.json``, the train stage's
``metrics.jsonl``, ``report.html`` and the plots), so a night whose tracking failed loses nothing: the
``track`` stage's retry, or ``npuflow track <dag> <run>`` later, sends the same folder. The project talks to the
server over HTTP with ``requests`` and does not import ``mlflow``: the server runs in its own environment
(``make mlflow``), whose numpy and protobuf would clash with the Paddle stack's lock.

An MLflow run is marked FINISHED only once all of it is sent; a send that finds the run's FINISHED twin does
nothing, one that finds an unfinished one (a try killed half-way) deletes it and sends again, so retries never
leave doubled metric histories.

Configuration is MLflow's own: ``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` or
``MLFLOW_TRACKING_TOKEN`` (the track stage takes them from the Airflow Connection ``mlflow_default`` when the
worker's environment has none). No URI: tracking is off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

URI_ENV = "MLFLOW_TRACKING_URI"
USER_ENV, PASSWORD_ENV, TOKEN_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"
CONNECTION_ID = "mlflow_default"
#: Where the Airflow UI is, for the link from the MLflow run back to the Airflow run (Airflow's own setting).
AIRFLOW_URL_ENV = "AIRFLOW__API__BASE_URL"
#: The tags that find an Airflow run's MLflow run again (no dots: MLflow's search would want them quoted).
DAG_TAG, RUN_TAG, LINK_TAG = "airflow_dag_id", "airflow_run_id", "airflow_url"
#: MLflow's limits per log-batch request and on a param value.
BATCH_METRICS, BATCH_PARAMS, PARAM_CHARS = 1000, 100, 6000
ARTIFACTS = ("report.html", "report.md", "report.json", "plan.json")


class TrackingError(RuntimeError):
    """The server could not be reached or refused a call; a retry (or ``npuflow track``) may succeed."""


class TrackingRefused(RuntimeError):
    """The run folder cannot be tracked as it is (no report, an artifact store this client cannot write)."""


def tracking_off(env: Mapping[str, str]) -> str | None:
    """Why nothing is sent, or None when a tracking URI is set."""
    if env.get(URI_ENV):
        return None
    return (f"MLflow tracking is off: neither {URI_ENV} nor the Airflow Connection {CONNECTION_ID!r} names a "
            "tracking server (README, 'Track runs in MLflow')")


class MlflowClient:
    """The few REST calls of MLflow's tracking API this project makes (``/api/2.0/mlflow/...``)."""

    def __init__(self, uri: str, env: Mapping[str, str], timeout: float = 30.0) -> None:
        import requests  # not at import time: DAG files import the kinds that import this module

        self.uri = uri.rstrip("/")
        self.session = requests.Session()
        if env.get(TOKEN_ENV):
            self.session.headers["Authorization"] = f"Bearer {env[TOKEN_ENV]}"
        elif env.get(USER_ENV):
            self.session.auth = (env[USER_ENV], env.get(PASSWORD_ENV, ""))
        self.timeout = timeout

    def call(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> dict[str, Any]:
        import requests

        url = f"{self.uri}/api/2.0/{path}"
        try:
            resp = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise TrackingError(f"MLflow at {self.uri} cannot be reached: {type(exc).__name__}: {exc}") from None
        if missing_ok and (resp.status_code == 404 or (resp.status_code == 400 and "not found" in resp.text)):
            return {}  # an unknown name is a 404; an unknown alias is a 400 "... alias champion not found."
        if resp.status_code >= 400:
            raise TrackingError(f"MLflow at {self.uri}: {method} {path} answered {resp.status_code}: "
                                f"{resp.text[:300]}")
        return resp.json() if resp.content else {}

    def experiment_id(self, name: str) -> str:
        found = self.call("GET", "mlflow/experiments/get-by-name", params={"experiment_name": name}, missing_ok=True)
        if found:
            return found["experiment"]["experiment_id"]
        return self.call("POST", "mlflow/experiments/create", json={"name": name})["experiment_id"]

    def runs_tagged(self, experiment_id: str, key: str, value: str) -> list[dict[str, Any]]:
        quoted = value.replace("'", "\\'")
        body = {"experiment_ids": [experiment_id], "filter": f"tags.{key} = '{quoted}'", "max_results": 10}
        return self.call("POST", "mlflow/runs/search", json=body).get("runs", [])

    def log_batch(self, run_id: str, *, metrics: list[dict[str, Any]] = (), params: list[dict[str, str]] = (),
                  tags: list[dict[str, str]] = ()) -> None:
        metrics, params, tags = list(metrics), list(params), list(tags)
        for i in range(0, len(params), BATCH_PARAMS):
            self.call("POST", "mlflow/runs/log-batch", json={"run_id": run_id, "params": params[i:i + BATCH_PARAMS]})
        for i in range(0, len(tags), BATCH_PARAMS):
            self.call("POST", "mlflow/runs/log-batch", json={"run_id": run_id, "tags": tags[i:i + BATCH_PARAMS]})
        for i in range(0, len(metrics), BATCH_METRICS):
            self.call("POST", "mlflow/runs/log-batch", json={"run_id": run_id,
                                                             "metrics": metrics[i:i + BATCH_METRICS]})

    def upload(self, artifact_uri: str, local: Path, path: str) -> None:
        """One file under the run's artifact root: through the server's artifact proxy (``mlflow-artifacts:``,
        what ``mlflow server`` gives by default), or copied where a ``file:`` root is a shared folder."""
        scheme = artifact_uri.split(":", 1)[0] if ":" in artifact_uri else "file"
        where = urlsplit(artifact_uri).path
        if scheme == "mlflow-artifacts":
            with open(local, "rb") as fh:
                self.call("PUT", f"mlflow-artifacts/artifacts/{quote(where.strip('/'))}/{quote(path)}", data=fh)
        elif scheme == "file" and os.path.isabs(where):
            target = Path(where) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)
        else:
            raise TrackingRefused(f"the MLflow run's artifact root {artifact_uri} is neither the server's artifact "
                                  "proxy (mlflow-artifacts:) nor a local folder: start the server with "
                                  "--serve-artifacts (its default)")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None  # MLflow refuses NaN, inf


def step_metrics(metrics_file: Path, stage: str) -> Iterator[dict[str, Any]]:
    """A training log's records (npuflow.logparse) as MLflow metric points: each train record is one step;
    an evaluation is logged at the step it followed."""
    if not metrics_file.is_file():
        return
    step, now = 0, _now_ms()
    for line in metrics_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed try
        if rec.get("type") == "train":
            step += 1
            values = {**{f"{stage}.{k}": v for k, v in (rec.get("losses") or {}).items()},
                      **{f"{stage}.{k}": rec.get(k) for k in ("lr", "batch_cost", "ips", "epoch")}}
        elif rec.get("type") == "eval":
            values = {f"{stage}.eval_{k}": v for k, v in rec.items() if k not in ("type", "t")}
        else:
            continue
        for key, value in values.items():
            number = _number(value)
            if number is not None:
                yield {"key": key, "value": number, "timestamp": now, "step": step}


def _flat(prefix: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(f"{prefix}.{k}" if prefix else str(k), v)
    elif value is not None:
        text = value if isinstance(value, str) else json.dumps(value)
        yield prefix, text[:PARAM_CHARS]


def dataset_digest(report: dict[str, Any], *, validation: bool = False) -> str:
    """The digest the validate stage took of the dataset's files or, with ``validation``, of its validation split
    alone (the last split it checked): what "measured on the same validation set" compares, whatever the
    training split and wherever the copy lives."""
    for result in (report.get("dataset") or {}).values():
        content = (result or {}).get("content") or {}
        splits = content.get("splits") or {}
        digest = list(splits.values())[-1] if validation and splits else content.get("digest")
        if digest:
            return str(digest)
    return ""


def run_content(run_dir: Path, airflow_url: str | None = None) -> dict[str, Any]:
    """What one run folder sends: params, tags, metrics and artifact files (no server needed: testable)."""
    try:
        plan = json.loads((run_dir / "plan.json").read_text())
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError) as exc:
        raise TrackingRefused(f"{run_dir} has no readable plan.json and report.json (the report stage writes "
                              f"the latter): {exc}") from None
    from npuflow.rundir import read_stage_result

    pinned = plan.get("pinned") or {}
    # The stages this run selected, up to the tracking itself: which failed or never ran, which gates held.
    held = [st for st in plan.get("stages", []) if st.get("enabled", True) and st["kind"] not in ("track", "promote")]
    results = {st["name"]: read_stage_result(run_dir, st["name"]) for st in held}
    failed = [n for n, r in results.items() if not (r or {}).get("ok")]
    gate_stages = {st["name"]: bool((results[st["name"]] or {}).get("ok")) for st in held if st["kind"] == "gate"}
    params = dict(_flat("", {k: v for k, v in (pinned.get("params") or {}).items()}))
    params.update(_flat("recipe", plan.get("variables") or {}))
    provenance = report.get("provenance") or {}
    toolkit = provenance.get("toolkit") or {}
    gates = report.get("gates") or []
    link = (f"{airflow_url.rstrip('/')}/dags/{quote(plan['dag_id'], safe='')}/runs/{quote(plan['run_id'], safe='')}"
            if airflow_url else "")
    tags = {DAG_TAG: plan["dag_id"], RUN_TAG: plan["run_id"], LINK_TAG: link, "mlflow.runName": plan["run_id"],
            "npuflow.profile": plan.get("profile") or "", "npuflow.run_dir": str(run_dir),
            "npuflow.recipe_digest": pinned.get("recipe_digest") or "",
            "npuflow.npuflow_version": provenance.get("npuflow_version") or "",
            "npuflow.toolkit": f"{toolkit.get('name', '')}@{toolkit.get('ref', '')}",
            "npuflow.toolkit_commit": toolkit.get("pinned_commit") or "",
            "npuflow.dataset_digest": dataset_digest(report),
            "npuflow.validation_digest": dataset_digest(report, validation=True),
            "npuflow.gates_passed": str(all(gate_stages.values())).lower() if gate_stages else "",
            "npuflow.failed_stages": ",".join(failed),
            **{f"gate.{g['gate']}": ("passed" if g.get("passed") else "MISSED") + f": {g.get('reason', '')}"
               for g in gates}}
    if (run_dir / "report.md").is_file():
        tags["mlflow.note.content"] = (run_dir / "report.md").read_text()[:5000]
    now = _now_ms()
    metrics = [{"key": k, "value": v, "timestamp": now, "step": 0}
               for k, v in ((k, _number(v)) for k, v in (report.get("measured") or {}).items()) if v is not None]
    metrics += [{"key": f"stage_seconds.{n}", "value": float(s["seconds"]), "timestamp": now, "step": 0}
                for n, s in (report.get("stages") or {}).items() if _number(s.get("seconds")) is not None]
    metrics += [{"key": f"gate.{g['gate']}", "value": float(g["value"]), "timestamp": now, "step": 0}
                for g in gates if _number(g.get("value")) is not None]
    for name, stage in (report.get("stages") or {}).items():
        if stage.get("kind") == "train":
            metrics += step_metrics(run_dir / name / "metrics.jsonl", name)
    files = {name: run_dir / name for name in ARTIFACTS if (run_dir / name).is_file()}
    files.update({f"plots/{Path(p).name}": run_dir / p for p in (report.get("plots") or {}).values()
                  if (run_dir / p).is_file()})
    return {"experiment": plan["dag_id"], "run_id": plan["run_id"], "params": params,
            "tags": {k: v for k, v in tags.items() if v}, "metrics": metrics, "files": files,
            "status": "FAILED" if failed else "FINISHED"}


def send(run_dir: Path, env: Mapping[str, str], log: Any = print) -> dict[str, Any]:
    """Send ``run_dir`` to the server ``env`` names; returns where it went (``tracking.json``'s content)."""
    uri = env[URI_ENV]
    content = run_content(run_dir, env.get(AIRFLOW_URL_ENV))
    client = MlflowClient(uri, env)
    experiment = client.experiment_id(content["experiment"])
    for found in client.runs_tagged(experiment, RUN_TAG, content["run_id"]):
        info = found["info"]
        if info.get("status") in ("FINISHED", "FAILED") and info.get("end_time"):
            log(f"already tracked: MLflow run {info['run_id']} of experiment {experiment}")
            return _where(client, experiment, info["run_id"], content, sent=False)
        log(f"deleting the unfinished MLflow run {info['run_id']} a killed try left, sending again")
        client.call("POST", "mlflow/runs/delete", json={"run_id": info["run_id"]})
    created = client.call("POST", "mlflow/runs/create", json={
        "experiment_id": experiment, "run_name": content["run_id"], "start_time": _now_ms(),
        "tags": [{"key": RUN_TAG, "value": content["run_id"]}]})["run"]["info"]
    run_id = created["run_id"]
    client.log_batch(run_id, params=[{"key": k, "value": v} for k, v in content["params"].items()],
                     tags=[{"key": k, "value": v} for k, v in content["tags"].items()], metrics=content["metrics"])
    for path, local in content["files"].items():
        client.upload(created["artifact_uri"], local, path)
    client.call("POST", "mlflow/runs/update", json={"run_id": run_id, "status": content["status"],
                                                    "end_time": _now_ms()})
    log(f"tracked: {len(content['params'])} params, {len(content['metrics'])} metric points, "
        f"{len(content['files'])} artifacts in MLflow run {run_id} (experiment {content['experiment']})")
    return _where(client, experiment, run_id, content, sent=True)


def _where(client: MlflowClient, experiment: str, run_id: str, content: dict[str, Any], sent: bool) -> dict[str, Any]:
    return {"tracking_uri": client.uri, "experiment": content["experiment"], "experiment_id": experiment,
            "mlflow_run_id": run_id, "url": f"{client.uri}/#/experiments/{experiment}/runs/{run_id}",
            "status": content["status"], "sent_now": sent}


def tracking_file(run_dir: Path) -> Path:
    """Where the track stage (and ``npuflow track``) records what was sent where."""
    return run_dir / "track" / "tracking.json"


def untracked_runs(dag_dir: Path) -> list[Path]:
    """The run folders of one DAG with a report that no MLflow run holds yet, oldest first."""
    def tracked(run_dir: Path) -> bool:
        try:
            return bool(json.loads(tracking_file(run_dir).read_text()).get("tracked"))
        except (OSError, ValueError):
            return False

    found = [d for d in dag_dir.iterdir() if (d / "report.json").is_file() and not tracked(d)] \
        if dag_dir.is_dir() else []
    return sorted(found, key=lambda d: (d / "report.json").stat().st_mtime)


def write_where(run_dir: Path, where: dict[str, Any], out: Path | None = None) -> None:
    from npuflow.rundir import write_json

    write_json(out or tracking_file(run_dir), where)


def main(argv: list[str] | None = None) -> int:
    """The track stage's program: exit 0 when sent (or tracking is off), 1 when the server failed (retry),
    78 when the folder cannot be tracked as it is."""
    from npuflow.errors import refuse

    ap = argparse.ArgumentParser(prog="python -m npuflow.tracking", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path, help="where to write what was sent where (JSON)")
    args = ap.parse_args(argv)
    off = tracking_off(os.environ)
    try:
        where = {"tracked": False, "why": off} if off else {"tracked": True, **send(args.run_dir, os.environ)}
    except TrackingRefused as exc:
        return refuse(str(exc))
    except TrackingError as exc:
        print(f"error: {exc}; the run folder keeps everything: the retry, or `npuflow track` later, sends it",
              file=sys.stderr)
        return 1
    if off:
        print(off)
    write_where(args.run_dir, where, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
