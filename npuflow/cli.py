"""``npuflow``: see what a trigger will run, run the demo, check a dataset. No Airflow import unless needed."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from npuflow.datasets.validate import build_parser as build_validate_parser
from npuflow.datasets.validate import run as cmd_validate_dataset
from npuflow.plan import PlanError, build_plan
from npuflow.recipe import PROJECT_ROOT, RecipeError, list_recipes, load_recipe
from npuflow.services import (
    EXECUTORS,
    USERS,
    ServiceConfig,
    ServiceError,
    airflow_bin,
    default_pools,
    down,
    embedded_airflow_env,
    read_join_file,
    status,
    unhealthy,
    up,
)


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, lists), else strings.
    ``stages=a,b`` is a convenience for the list form."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PlanError(f"--set wants key=value, got {pair!r}")
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        if key == "stages" and isinstance(parsed, str):
            parsed = [s for s in parsed.split(",") if s]
        params[key] = parsed
    return params


def cmd_plan(args: argparse.Namespace) -> int:
    params = parse_set(args.set)
    if args.profile:
        params["profile"] = args.profile
    plan = build_plan(load_recipe(args.dag_id), params, run_id=args.run_id)
    stages = [{"name": s.name, "kind": s.kind, "needs": s.needs, "argv": s.argv, "env": s.env, "cwd": s.cwd,
               **{k: getattr(s, k) for k in ("settings", "builtins", "resume", "free_disk", "metrics_file", "expect_line",
                                                  "container")
                  if getattr(s, k)}}
              for s in plan.stages if s.enabled]
    print(json.dumps({"runner": plan.runner, "stages": stages}, indent=2))
    return 0


def cmd_recipes(_: argparse.Namespace) -> int:
    for dag_id in list_recipes():
        recipe = load_recipe(dag_id)
        print(f"{dag_id}\tprofiles: {', '.join(recipe.profiles)}\tstages: {', '.join(recipe.stages)}")
    return 0


def cmd_toolkits(args: argparse.Namespace) -> int:
    """The set-up step: every recipe's toolkit at its pinned ref and commit where the plans find it."""
    from npuflow.toolkits.checkout import sync

    failed = 0
    seen: set[tuple[str, str]] = set()
    for dag_id in list_recipes():
        recipe = load_recipe(dag_id)
        key = (recipe.data["toolkit"]["name"], recipe.toolkit_ref)
        if recipe.toolkit is None or key in seen:
            continue
        seen.add(key)
        try:
            done = sync(recipe.toolkit, recipe.toolkit_ref, clone=not args.no_clone)
        except (OSError, RuntimeError) as exc:
            print(f"npuflow toolkits: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{done.toolkit}@{done.ref}\t{done.commit}\t{done.path}\t{done.source}")
    return 1 if failed else 0


def _airflow(env: dict[str, str], *argv: str, log: Path) -> int:
    with open(log, "a") as fh:
        fh.write(f"\n$ airflow {' '.join(argv)}\n")
        fh.flush()
        return subprocess.run([airflow_bin(), *argv], env=env, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode


DEMO_MARKERS = (" done in ", "progress ", "StageFailed", "StageRefused", "AirflowFailException", "PlanError",
                "Task failed", "DagRun Finished")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run one DAG end to end in-process with ``airflow dags test`` on the embedded default."""
    recipe = load_recipe(args.dag_id)
    params = {"profile": args.profile, **parse_set(args.set)}
    build_plan(recipe, params)  # refuse bad parameters before starting Airflow
    env = embedded_airflow_env()
    var = PROJECT_ROOT / "var"
    (var / "logs").mkdir(parents=True, exist_ok=True)
    log = var / "logs" / f"demo-{args.dag_id}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    print(f"airflow home {env['AIRFLOW_HOME']}; full log {log}")
    if _airflow(env, "db", "migrate", log=log) != 0:
        print(f"airflow db migrate failed, see {log}", file=sys.stderr)
        return 1
    for pool, slots in default_pools().items():
        _airflow(env, "pools", "set", pool, str(slots), "cards on this host (npuflow)", log=log)
    runs = Path(env["NPUFLOW_RUNS_DIR"]) / args.dag_id
    before = set(runs.glob("*")) if runs.is_dir() else set()
    cmd = [airflow_bin(), "dags", "test", args.dag_id, "-c", json.dumps(params)]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    with open(log, "a") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if any(m in line for m in DEMO_MARKERS):
                text = line.split("[airflow.task", 1)[0].split("[info     ]")[-1].strip()
                print(f"  {text[:300]}", flush=True)
        code = proc.wait()
    new = sorted(set(runs.glob("*")) - before, key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    report = new[-1] / "report.md" if new else None
    if code != 0 or report is None or not report.is_file():
        print(f"the DAG run failed (exit {code}); see {log}", file=sys.stderr)
        return code or 1
    print(f"\nrun succeeded; report: {report}\n                      {report.with_suffix('.json')}\n")
    print(report.read_text())
    return 0


def _service_config(args: argparse.Namespace) -> ServiceConfig:
    env = embedded_airflow_env()
    workers = [w for w in args.workers.split(",") if w] if args.workers else []
    if args.executor == "celery" and not workers:
        workers = [socket.gethostname().split(".")[0]]  # one worker, its queue named after this host
    return ServiceConfig(home=Path(env["AIRFLOW_HOME"]), port=args.port, parallelism=args.parallelism,
                         default_profile=args.default_profile, base_env=env, executor=args.executor,
                         role=args.role, workers=workers, hosts=[h for h in (args.hosts or "").split(",") if h],
                         bind=args.bind, pg_port=args.pg_port, redis_port=args.redis_port,
                         worker_concurrency=args.concurrency, heartbeat_timeout_s=args.heartbeat_timeout,
                         join_env=read_join_file(Path(args.join)) if args.join else {},
                         mlflow_port=args.mlflow_port if args.mlflow else None, mlflow_artifacts=args.mlflow_artifacts)


def _say(line: str) -> None:
    print(line, flush=True)


def cmd_airflow(args: argparse.Namespace) -> int:
    """``npuflow airflow up|down|status``: the embedded default's services on 127.0.0.1."""
    cfg = _service_config(args)
    if args.action == "up":
        pids = up(cfg, _say, timeout_s=args.timeout)
        if cfg.role == "worker":
            _say(f"\nworkers up: {', '.join(cfg.workers)} (pids {sorted(pids.values())}); stop with `npuflow airflow down`")
            return 0
        _say(f"\nAirflow is up: {cfg.url}  (UI and REST API; {cfg.executor} executor; pids {sorted(pids.values())})")
        if cfg.executor == "celery":
            _say(f"workers: {', '.join(cfg.workers)}; other hosts join with `npuflow airflow up --executor celery "
                 f"--role worker --workers <host> --join {cfg.join_file}`")
        if cfg.mlflow_url:
            _say(f"MLflow: {cfg.mlflow_url}  (tracking and model registry; every task's MLFLOW_TRACKING_URI)")
        _say(f"users: {', '.join(f'{u} ({r})' for u, r in USERS.items())}; "
             f"passwords in {cfg.passwords_file} (mode 0600)")
        _say(f"logs: {cfg.state_dir}/<component>.log; stop with `npuflow airflow down`")
        return 0
    if args.action == "down":
        down(cfg, _say, grace_s=args.grace)
        _say("Airflow services stopped; no process of theirs is left")
        return 0
    info = status(cfg)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for name, comp in info["components"].items():
            state = f"pid {comp['pid']}, {comp['rss_mib']} MiB" if comp["running"] else "stopped"
            _say(f"{name:14s} {state}")
        bad = unhealthy(info["health"])
        verdict = "no answer" if info["health"] is None else ("healthy" if not bad else f"unhealthy: {', '.join(bad)}")
        _say(f"health: {verdict} ({info['url']})")
    all_up = all(c["running"] for c in info["components"].values())
    return 0 if all_up and not unhealthy(info["health"]) else 3


def cmd_track(args: argparse.Namespace) -> int:
    """Send run folders to MLflow later: after an outage outlasted the track stage's retries, or runs made
    before tracking was set up. Without run ids: every run of the DAG with a report and no MLflow run yet."""
    from npuflow import tracking
    from npuflow.rundir import run_dir_for, runs_root

    off = tracking.tracking_off(os.environ)
    if off:
        print(f"npuflow track: {off}", file=sys.stderr)
        return 2
    run_dirs = ([run_dir_for(args.dag_id, r) for r in args.run_ids] if args.run_ids
                else tracking.untracked_runs(runs_root() / args.dag_id))
    if not run_dirs:
        print(f"every run of {args.dag_id} with a report is tracked already")
    failed = 0
    for run_dir in run_dirs:
        try:
            where = tracking.send(run_dir, os.environ)
        except (tracking.TrackingError, tracking.TrackingRefused) as exc:
            print(f"{run_dir.name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        tracking.write_where(run_dir, {"tracked": True, **where})
        print(f"{run_dir.name}: {where['url']}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="npuflow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="print the argv/env/cwd of every stage a run would execute")
    plan.add_argument("dag_id")
    plan.add_argument("--profile")
    plan.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a DAG parameter")
    plan.add_argument("--run-id", default="manual__plan", help="run id used to name the run directory")
    plan.set_defaults(func=cmd_plan)
    rec = sub.add_parser("recipes", help="list the recipes (one DAG each)")
    rec.set_defaults(func=cmd_recipes)
    demo = sub.add_parser("demo", help="run a DAG end to end with `airflow dags test` on the embedded default")
    demo.add_argument("dag_id")
    demo.add_argument("--profile", default="smoke")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    demo.set_defaults(func=cmd_demo)
    tks = sub.add_parser("toolkits", help="put each recipe's toolkit checkout, at its pinned ref and commit, where "
                                          "the plans find it ({toolkit_checkout}; var/toolkits/)")
    tks.add_argument("action", choices=("sync",))
    tks.add_argument("--no-clone", action="store_true",
                     help="only link shared/upstream checkouts; fail rather than clone from the git host")
    tks.set_defaults(func=cmd_toolkits)
    val = sub.add_parser("validate-dataset", help="run the dataset checks of the validate stage (exit 1: errors)")
    build_validate_parser(val).set_defaults(func=cmd_validate_dataset)
    trk = sub.add_parser("track", help="send runs to MLflow (MLFLOW_TRACKING_URI) that were not sent: after an "
                                       "outage, or from before tracking was set up")
    trk.add_argument("dag_id")
    trk.add_argument("run_ids", nargs="*", help="Airflow run ids (default: every untracked run of the DAG)")
    trk.set_defaults(func=cmd_track)
    af = sub.add_parser("airflow", help="start, stop or show the Airflow services of the embedded default")
    af.add_argument("action", choices=("up", "down", "status"))
    af.add_argument("--port", type=int, default=int(os.environ.get("NPUFLOW_AIRFLOW_PORT", "8080")),
                    help="api-server port on 127.0.0.1 (env NPUFLOW_AIRFLOW_PORT; default 8080)")
    af.add_argument("--parallelism", type=int, default=4, help="LocalExecutor workers (tasks at once)")
    af.add_argument("--default-profile", default=os.environ.get("NPUFLOW_DEFAULT_PROFILE", "smoke"),
                    help="profile a run uses when its params do not name one, and whose cards the train task "
                         "reserves (env NPUFLOW_DEFAULT_PROFILE; default smoke: CPU)")
    af.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for health on up")
    af.add_argument("--grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL on down")
    af.add_argument("--json", action="store_true", help="status as JSON")
    af.add_argument("--executor", choices=EXECUTORS, default=os.environ.get("NPUFLOW_EXECUTOR", "local"),
                    help="local: LocalExecutor on SQLite (default); celery: CeleryExecutor on PostgreSQL + Redis")
    af.add_argument("--role", choices=("all", "worker"), default="all",
                    help="celery: all = datastores, scheduler side and this host's workers; worker = only the "
                         "workers, joining the deployment of --join")
    af.add_argument("--workers", help="celery: the queues this host's workers consume, comma-separated "
                                      "(default: this host's name)")
    af.add_argument("--hosts", help="celery: the fleet's node queues in node-rank order (default: --workers); "
                                    "a multi-node train has one task per host")
    af.add_argument("--join", help="celery --role worker: the celery.env the scheduler host wrote")
    af.add_argument("--bind", default="127.0.0.1", help="address the api-server, PostgreSQL and Redis listen on")
    af.add_argument("--pg-port", type=int, default=5432)
    af.add_argument("--redis-port", type=int, default=6379)
    af.add_argument("--concurrency", type=int, default=4, help="celery: tasks at once per worker")
    af.add_argument("--heartbeat-timeout", type=int, default=None,
                    help="seconds after which a lost worker's tasks fail (Airflow's default 300)")
    af.add_argument("--mlflow", action="store_true",
                    help="also start MLflow's tracking server (make mlflow) and point every task at it")
    af.add_argument("--mlflow-port", type=int, default=5000)
    af.add_argument("--mlflow-artifacts", help="where MLflow keeps artifacts (default: <runs folder>/mlflow-artifacts)")
    af.set_defaults(func=cmd_airflow)
    args = p.parse_args(argv)
    try:
        return args.func(args)
    except ServiceError as exc:
        print(f"npuflow airflow: {exc}", file=sys.stderr)
        return 1
    except (PlanError, RecipeError) as exc:
        print(f"npuflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
