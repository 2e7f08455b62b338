"""The Airflow services of the embedded default: start, check and stop them on loopback, without a container.

``airflow standalone`` is not used: it binds its log servers to 0.0.0.0 and orphans its children on SIGTERM.
Each component runs as its own ``airflow`` process in its own session, so ``down`` can stop it and everything
it forked (LocalExecutor workers, task supervisors) as one process group. A task's training job runs in a
session of its own, so ``down`` first takes a snapshot of every component's process tree, and afterwards stops
whatever of that snapshot is still alive. Every service process also carries ``NPUFLOW_SERVICES=<state dir>``
in its environment, inherited by all descendants, which finds what has left the tree (an orphan reparented to
init). Neither alone is enough: processes that set their title (the api-server, LocalExecutor workers)
overwrite their environment in /proc. Nothing is left behind.

State lives in ``<AIRFLOW_HOME>/services/``: ``services.json`` (port, pids and their start times, so a reused
pid is never signalled), one ``<component>.log`` each, and ``passwords.json`` (mode 0600) for the
SimpleAuthManager users. Nothing here imports Airflow.

``--mlflow`` adds MLflow's tracking server (from its own environment, ``make mlflow``) as one more component:
its store is SQLite in the state folder (LocalExecutor) or a database ``mlflow`` in the deployment's PostgreSQL
(CeleryExecutor), its artifacts under the runs folder, and every task gets ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npuflow.datastores import DatastoreError, Datastores, wait_port, write_private_json
from npuflow.fleet import HOSTS_ENV
from npuflow.proc import marked_processes, stop_processes
from npuflow.recipe import PROJECT_ROOT
from npuflow.tracking import URI_ENV as TRACKING_URI_ENV

Log = Callable[[str], None]

#: Inherited by every process the services start, down to training ranks; ``down`` stops what carries it.
SERVICES_ENV = "NPUFLOW_SERVICES"

#: Started in this order, stopped in the reverse. Log servers are off (they would bind 0.0.0.0:8793/8794);
#: the api-server reads task logs from the shared log folder instead.
AIRFLOW_COMPONENTS: dict[str, list[str]] = {
    "api-server": ["api-server", "-H", "{bind}", "-p", "{port}", "-w", "1"],
    "dag-processor": ["dag-processor"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}

#: SimpleAuthManager users and their roles: the admin; an operator who may trigger runs (and manage pools,
#: connections, variables); a viewer who may only look.
USERS: dict[str, str] = {"admin": "admin", "operator": "op", "viewer": "viewer"}

HEALTH_PATH = "/api/v2/monitor/health"

EXECUTORS = ("local", "celery")
DATASTORES = ("postgres", "redis")
#: The Celery queue of every task that is not one node's share of a multi-node job (Airflow's default name).
DEFAULT_QUEUE = "default"


class ServiceError(RuntimeError):
    """The services could not be started or stopped; the message names the component and its log."""


def embedded_airflow_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The embedded default: everything inside the checkout, SQLite, LocalExecutor, no examples.
    Values already in ``base`` (the caller's environment) win."""
    env = dict(os.environ if base is None else base)
    env.setdefault("AIRFLOW_HOME", str(PROJECT_ROOT / "var" / "airflow"))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    env.setdefault("NPUFLOW_RUNS_DIR", str(PROJECT_ROOT / "var" / "runs"))
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


MLFLOW_DB = "mlflow"


def mlflow_bin() -> str:
    """MLflow's CLI from its own environment (``make mlflow``: its numpy and protobuf clash with the lock)."""
    found = os.environ.get("NPUFLOW_MLFLOW") or str(PROJECT_ROOT / "var" / "mlflow" / "bin" / "mlflow")
    if not Path(found).is_file():
        raise ServiceError(f"MLflow is not installed at {found}: run `make mlflow` (or set NPUFLOW_MLFLOW)")
    return found


def mlflow_server_argv(bind: str, port: int) -> list[str]:
    """``mlflow server`` with one worker; its stores come in MLFLOW_BACKEND_STORE_URI and
    MLFLOW_ARTIFACTS_DESTINATION, and it proxies artifact uploads (``mlflow-artifacts:``), its default."""
    return [mlflow_bin(), "server", "--host", bind, "--port", str(port), "--workers", "1"]


def wait_mlflow(url: str, pid: int, logfile: Path, timeout_s: float) -> None:
    """Until ``/health`` answers OK; the server exiting first is an error naming its log."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process_start_time(pid) is None:
            raise ServiceError(f"mlflow (pid {pid}) exited during start-up; last lines of {logfile}:\n"
                               f"{_tail(logfile)}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ServiceError(f"mlflow did not answer {url}/health within {timeout_s:.0f} s (log {logfile})")
        time.sleep(0.5)


def airflow_bin() -> str:
    """The airflow console script of the environment npuflow runs in."""
    return str(Path(sys.executable).with_name("airflow"))


@dataclass
class ServiceConfig:
    """How the services are run. Only ``port`` and the folders usually change."""

    home: Path
    port: int = 8080
    parallelism: int = 4  # LocalExecutor pre-forks this many workers (~100 MB each)
    dag_refresh_s: int = 5  # new DAG files show up within this many seconds (Airflow's default: 300)
    default_profile: str = "smoke"  # the CPU profile; production hosts pass "production"
    base_env: dict[str, str] = field(default_factory=dict)
    #: ``local``: LocalExecutor on SQLite (the embedded default). ``celery``: CeleryExecutor on PostgreSQL and
    #: Redis, with a Celery worker per entry of ``workers`` consuming the queue of that name.
    executor: str = "local"
    #: ``all``: the datastores, the scheduler side and this host's workers; ``worker``: only the workers, joining
    #: the deployment described by ``join_env`` (the ``celery.env`` an ``all`` host writes).
    role: str = "all"
    workers: list[str] = field(default_factory=list)
    #: The fleet's node queues, in node-rank order (a multi-node train task has one mapped task per entry).
    hosts: list[str] = field(default_factory=list)
    bind: str = "127.0.0.1"  # where PostgreSQL, Redis and the api-server listen (a fleet: this host's address)
    pg_port: int = 5432
    redis_port: int = 6379
    worker_concurrency: int = 4
    heartbeat_timeout_s: int | None = None  # a lost worker's tasks fail after this long (Airflow: 300 s)
    join_env: dict[str, str] = field(default_factory=dict)
    mlflow_port: int | None = None  # start MLflow's tracking server beside Airflow on this port
    mlflow_artifacts: str | None = None  # where it keeps artifacts (default: <runs folder>/mlflow-artifacts)

    @property
    def state_dir(self) -> Path:
        return self.home / "services"

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    @property
    def datastores(self) -> Datastores:
        return Datastores(self.state_dir, self.bind, self.pg_port, self.redis_port)

    @property
    def join_file(self) -> Path:
        """What a worker host needs to join this deployment (mode 0600: it holds the DB and broker passwords)."""
        return self.state_dir / "celery.env"

    @property
    def passwords_file(self) -> Path:
        return self.state_dir / "passwords.json"

    @property
    def mlflow_url(self) -> str | None:
        return f"http://{self.bind}:{self.mlflow_port}" if self.mlflow_port else None

    def mlflow_store_env(self, env: dict[str, str], log: Log) -> dict[str, str]:
        """The server's backend and artifact store, in MLflow's own variables (a database password stays off
        argv): SQLite here, or the deployment's PostgreSQL (database ``mlflow``, made once)."""
        if self.executor == "celery":
            self.datastores.create_database(log, MLFLOW_DB)
            backend = self.datastores.database_url(MLFLOW_DB)
        else:
            backend = f"sqlite:///{self.state_dir / 'mlflow.db'}"
        runs = Path(env.get("NPUFLOW_RUNS_DIR") or PROJECT_ROOT / "var" / "runs")
        return {"MLFLOW_BACKEND_STORE_URI": backend,
                "MLFLOW_ARTIFACTS_DESTINATION": self.mlflow_artifacts or str(runs / "mlflow-artifacts")}

    def env(self) -> dict[str, str]:
        env = embedded_airflow_env(self.base_env or None)
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__API__HOST": self.bind,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": f"{self.url}/",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{r}" for u, r in USERS.items()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(self.dag_refresh_s),
            "NPUFLOW_DEFAULT_PROFILE": self.default_profile,
            SERVICES_ENV: str(self.state_dir),
        })
        if self.executor == "celery":
            env.update(self.datastores.airflow_env() if self.role == "all" else self.join_env)
            env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] = DEFAULT_QUEUE
            env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = str(self.worker_concurrency)
            # Read by the DAG files (one train task per host): every host must parse the same DAG, so a worker
            # host takes the fleet's list from the join file.
            fleet = self.hosts or (self.join_env.get(HOSTS_ENV, "").split(",") if self.role == "worker" else [])
            env[HOSTS_ENV] = ",".join(h for h in (fleet or self.workers) if h)
        if self.heartbeat_timeout_s:
            env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(self.heartbeat_timeout_s)
        if self.mlflow_url and self.role == "all":
            env[TRACKING_URI_ENV] = self.mlflow_url  # the track and promote tasks send there
        return env

    def components(self) -> dict[str, list[str]]:
        """Component name -> argv, in start order (stopped in the reverse)."""
        out: dict[str, list[str]] = {}
        if self.executor == "celery" and self.role == "all":
            out["postgres"] = self.datastores.postgres_argv()
            out["redis"] = self.datastores.redis_argv()
        if self.role == "all":
            out.update({name: [airflow_bin(), *(a.format(port=self.port, bind=self.bind) for a in argv)]
                        for name, argv in AIRFLOW_COMPONENTS.items()})
        if self.mlflow_port and self.role == "all":
            out["mlflow"] = mlflow_server_argv(self.bind, self.mlflow_port)
        if self.executor == "celery":
            for i, queue in enumerate(self.workers):
                # The first worker of the scheduler's host also takes every task that is not one node's share.
                queues = f"{queue},{DEFAULT_QUEUE}" if i == 0 and self.role == "all" else queue
                out[f"worker-{queue}"] = [airflow_bin(), "celery", "worker", "--queues", queues,
                                          "--celery-hostname", f"{queue}@{socket.gethostname()}",
                                          "--concurrency", str(self.worker_concurrency), "--skip-serve-logs"]
        return out


# --- passwords ---------------------------------------------------------------------------------------------

def ensure_passwords(path: Path, log: Log) -> dict[str, str]:
    """Create the users' passwords once (random, mode 0600) and keep them across restarts.

    Airflow would generate and *print* passwords for users missing from the file, so every user is written
    here first. A file a user wrote by hand is kept; missing users are added, and a looser mode is tightened.
    Passwords are never logged.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    passwords: dict[str, str] = {}
    if path.exists():
        try:
            passwords = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise ServiceError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
        if not isinstance(passwords, dict):
            raise ServiceError(f"{path} must hold a JSON object user -> password")
        if path.stat().st_mode & 0o077:
            log(f"{path} was readable by others; setting mode 0600")
    missing = [u for u in USERS if not passwords.get(u)]
    for user in missing:
        passwords[user] = secrets.token_urlsafe(12)
    if missing or not path.exists() or path.stat().st_mode & 0o077:
        write_private_json(path, passwords)
        if missing:
            log(f"created password(s) for {', '.join(missing)} in {path} (mode 0600)")
    return passwords


def read_password(cfg: ServiceConfig, user: str) -> str:
    passwords = json.loads(cfg.passwords_file.read_text())
    return passwords[user]


# --- process bookkeeping -----------------------------------------------------------------------------------

def process_start_time(pid: int) -> float | None:
    """The process's start time, or None if it is gone (or a zombie): with the pid it identifies a process."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _is_ours(entry: dict[str, Any]) -> bool:
    started = process_start_time(entry["pid"])
    return started is not None and abs(started - entry["started"]) < 1.0


def _read_state(cfg: ServiceConfig) -> dict[str, Any]:
    path = cfg.state_dir / "services.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {"components": {}}


def _write_state(cfg: ServiceConfig, state: dict[str, Any]) -> None:
    path = cfg.state_dir / "services.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def running_components(cfg: ServiceConfig) -> dict[str, int]:
    """Component -> pid of the services recorded in the state dir that still run."""
    state = _read_state(cfg)
    return {name: e["pid"] for name, e in state["components"].items() if _is_ours(e)}


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


# --- HTTP --------------------------------------------------------------------------------------------------

def health(cfg: ServiceConfig, timeout: float = 5.0) -> dict[str, Any] | None:
    """The api-server's health document, or None while it does not answer."""
    try:
        with urllib.request.urlopen(cfg.url + HEALTH_PATH, timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def unhealthy(doc: dict[str, Any] | None) -> list[str]:
    """Components the health document does not report healthy (all of them while there is no document)."""
    if doc is None:
        return ["api-server"]
    return [name for name, part in doc.items() if isinstance(part, dict) and part.get("status") != "healthy"]


def api(cfg: ServiceConfig, method: str, path: str, body: Any = None, *, token: str | None = None,
        timeout: float = 30.0) -> tuple[int, Any]:
    """One REST call; returns (status, parsed JSON or text). Errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(cfg.url + path, data=data, method=method)
    req.add_header("Accept", "application/json")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def token_for(cfg: ServiceConfig, user: str, password: str | None = None) -> str:
    """A JWT for ``user`` (``POST /auth/token``), password read from the passwords file unless given."""
    password = read_password(cfg, user) if password is None else password
    status, body = api(cfg, "POST", "/auth/token", {"username": user, "password": password})
    if status not in (200, 201) or not isinstance(body, dict) or "access_token" not in body:
        raise ServiceError(f"no token for {user!r}: HTTP {status}")
    return body["access_token"]


def default_pools() -> dict[str, int]:
    """One pool per device kind this host has, sized by its cards (CPU: usable cores)."""
    from npuflow.plan import device_pool
    from npuflow.preflight import PreflightError, available_devices

    pools = {}
    for kind in ("npu", "gpu", "cpu"):
        try:
            count = len(available_devices(kind))
        except PreflightError:  # no driver: no such cards here
            continue
        if count:
            pools[device_pool(kind)] = count
    return pools


def ensure_pools(cfg: ServiceConfig, log: Log) -> None:
    """Create the device pools that do not exist yet; a size an admin has set is kept. Under Celery a pool
    spans the fleet: this host's cards times the hosts (each node's train task takes its host's share)."""
    token = token_for(cfg, "admin")
    hosts = max(1, len(cfg.hosts or cfg.workers)) if cfg.executor == "celery" else 1
    for name, per_host in default_pools().items():
        slots = per_host * hosts
        status, _ = api(cfg, "GET", f"/api/v2/pools/{name}", token=token)
        if status == 200:
            continue
        status, body = api(cfg, "POST", "/api/v2/pools", {"name": name, "slots": slots,
                                                           "description": "cards on this host (npuflow)"},
                           token=token)
        if status not in (200, 201):
            raise ServiceError(f"creating pool {name}: HTTP {status} {body}")
        log(f"pool {name}: {slots} slot(s)")


# --- up / down / status ------------------------------------------------------------------------------------

def up(cfg: ServiceConfig, log: Log, timeout_s: float = 180.0) -> dict[str, int]:
    """Start the components not already running, wait until ``/api/v2/monitor/health`` says every one is
    healthy (and each Celery worker is ready), create missing device pools. Returns component -> pid. On
    failure, stops what this call started (a component that was already running is left alone) and raises
    naming the component and its log."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(cfg)
    running = running_components(cfg)
    if running and state.get("port") not in (None, cfg.port):
        raise ServiceError(f"services already run on port {state['port']} (pids {sorted(running.values())}); "
                           f"run `npuflow airflow down` first")
    if cfg.executor == "celery" and not cfg.workers:
        raise ServiceError("the celery executor needs at least one worker queue (--workers)")
    try:
        components = cfg.components()
    except DatastoreError as exc:
        raise ServiceError(str(exc)) from None
    missing = [name for name in components if name not in running]
    ports = {"api-server": cfg.port, "postgres": cfg.pg_port, "redis": cfg.redis_port, "mlflow": cfg.mlflow_port}
    for name, port in ports.items():
        if name in missing and not _port_free(port, cfg.bind):
            flag = {"api-server": "--port", "postgres": "--pg-port", "redis": "--redis-port",
                    "mlflow": "--mlflow-port"}[name]
            raise ServiceError(f"port {port} on {cfg.bind} is already in use ({name}); pick another with {flag}")
    env = cfg.env()
    if cfg.role == "all":
        ensure_passwords(cfg.passwords_file, log)
    started: dict[str, int] = {}
    migrated = cfg.role != "all"  # a worker host's database is the scheduler host's
    try:
        for name in missing:
            if name in DATASTORES:
                if name == "postgres":
                    cfg.datastores.init_postgres(log)
                started[name] = _start(cfg, state, name, components[name], env, log)
                _wait_datastore(cfg, name, started[name], log)
                continue
            if name == "mlflow":
                started[name] = _start(cfg, state, name, components[name], {**env, **cfg.mlflow_store_env(env, log)},
                                       log)
                wait_mlflow(cfg.mlflow_url or "", started[name], cfg.state_dir / "mlflow.log", timeout_s)
                log(f"MLflow tracking server at {cfg.mlflow_url}")
                continue
            if not migrated:  # once, after the datastores and before the first Airflow process
                _migrate(cfg, env, log)
                migrated = True
            started[name] = _start(cfg, state, name, components[name], env, log)
        state.update(port=cfg.port, executor=cfg.executor, role=cfg.role)
        _write_state(cfg, state)
        if cfg.role == "all":
            _wait_healthy(cfg, {n: p for n, p in started.items() if not n.startswith("worker-")}, log, timeout_s)
            ensure_pools(cfg, log)
            if cfg.executor == "celery":
                _write_join_file(cfg, env, log)
        _wait_workers_ready(cfg, {n: p for n, p in started.items() if n.startswith("worker-")}, log, timeout_s)
    except BaseException:
        if started:
            log(f"stopping what this call started: {', '.join(started)}")
            _stop_groups(cfg, {n: state["components"][n] for n in started}, log, grace_s=10.0)
        raise
    return {**running, **started}


def _start(cfg: ServiceConfig, state: dict[str, Any], name: str, argv: list[str], env: dict[str, str],
           log: Log) -> int:
    logfile = cfg.state_dir / f"{name}.log"
    with open(logfile, "ab") as fh:
        fh.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(argv)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(argv, env=env, cwd=cfg.home, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    state["components"][name] = {"pid": proc.pid, "started": process_start_time(proc.pid) or time.time(),
                                 "log": str(logfile)}
    _write_state(cfg, state)  # recorded at once: a failing start-up is still stopped by down
    log(f"started {name} (pid {proc.pid}), log {logfile}")
    return proc.pid


def _wait_datastore(cfg: ServiceConfig, name: str, pid: int, log: Log, timeout_s: float = 60.0) -> None:
    port = cfg.pg_port if name == "postgres" else cfg.redis_port
    if not wait_port(cfg.bind, port, timeout_s, lambda: process_start_time(pid) is not None):
        logfile = cfg.state_dir / f"{name}.log"
        raise ServiceError(f"{name} did not accept connections on {cfg.bind}:{port}; last lines of {logfile}:\n"
                           f"{_tail(logfile)}")
    if name == "postgres":
        try:
            cfg.datastores.create_database(log)
        except DatastoreError as exc:
            raise ServiceError(str(exc)) from None
    log(f"{name} listening on {cfg.bind}:{port}")


def _write_join_file(cfg: ServiceConfig, env: dict[str, str], log: Log) -> None:
    """``celery.env``: the settings a worker host joins with (``npuflow airflow up --role worker --join F``)."""
    keys = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__API__BASE_URL", HOSTS_ENV, TRACKING_URI_ENV)
    write_private_json(cfg.join_file, {k: env[k] for k in keys if k in env})
    log(f"worker hosts join with {cfg.join_file} (mode 0600)")


def read_join_file(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ServiceError(f"cannot read the join file {path}: {exc}") from None
    if not isinstance(data, dict) or "AIRFLOW__CELERY__BROKER_URL" not in data:
        raise ServiceError(f"{path} is not a celery.env written by `npuflow airflow up --executor celery`")
    return data


def _wait_workers_ready(cfg: ServiceConfig, started: dict[str, int], log: Log, timeout_s: float) -> None:
    """Until each Celery worker logs ``<queue>@<host> ready.`` (it consumes its queue from then on)."""
    deadline = time.monotonic() + timeout_s
    pending = dict(started)
    while pending:
        for name, pid in list(pending.items()):
            logfile = cfg.state_dir / f"{name}.log"
            if process_start_time(pid) is None:
                raise ServiceError(f"{name} (pid {pid}) exited during start-up; last lines of {logfile}:\n"
                                   f"{_tail(logfile)}")
            if f"{name.removeprefix('worker-')}@" in _tail(logfile, 400) and " ready." in _tail(logfile, 400):
                log(f"{name} ready: consumes queue {name.removeprefix('worker-')}")
                del pending[name]
        if pending and time.monotonic() > deadline:
            raise ServiceError(f"worker(s) not ready after {timeout_s:.0f} s: {', '.join(pending)} "
                               f"(logs in {cfg.state_dir})")
        time.sleep(0.5)


def _migrate(cfg: ServiceConfig, env: dict[str, str], log: Log) -> None:
    logfile = cfg.state_dir / "db-migrate.log"
    with open(logfile, "ab") as fh:
        code = subprocess.run([airflow_bin(), "db", "migrate"], env=env, stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False).returncode
    if code != 0:
        raise ServiceError(f"airflow db migrate failed with code {code}:\n{_tail(logfile)}\n(full log {logfile})")
    log("database migrated")


def _wait_healthy(cfg: ServiceConfig, started: dict[str, int], log: Log, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: list[str] = []
    while True:
        for name, pid in started.items():
            if process_start_time(pid) is None:
                logfile = cfg.state_dir / f"{name}.log"
                raise ServiceError(f"{name} (pid {pid}) exited during start-up; last lines of {logfile}:\n"
                                   f"{_tail(logfile)}")
        last = unhealthy(health(cfg))
        if not last:
            log(f"healthy: {cfg.url}{HEALTH_PATH}")
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"not healthy after {timeout_s:.0f} s: {', '.join(last)} "
                               f"(logs in {cfg.state_dir})")
        time.sleep(1.0)


def _stop_groups(cfg: ServiceConfig, entries: dict[str, dict[str, Any]], log: Log, grace_s: float) -> None:
    """SIGTERM each component's process group, SIGKILL the groups still alive after ``grace_s``."""
    ours = {name: e for name, e in entries.items() if _is_ours(e)}
    for name in reversed(list(ours)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ours[name]["pid"], signal.SIGTERM)
        log(f"SIGTERM {name} (pid {ours[name]['pid']})")
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_group_members(e["pid"]) for e in ours.values()):
        time.sleep(0.2)
    for name, e in ours.items():
        if _group_members(e["pid"]):
            log(f"{name} still running after {grace_s:.0f} s: SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(e["pid"], signal.SIGKILL)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) members of a process group."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (OSError, psutil.Error):
            continue
    return members


def service_processes(cfg: ServiceConfig) -> dict[int, float]:
    """pid -> start time of every live process of the services: the components, all their descendants, and
    anything else carrying the services' marker."""
    import psutil

    procs: dict[int, float] = {}
    roots = [e["pid"] for e in _read_state(cfg)["components"].values() if _is_ours(e)]
    roots += marked_processes(SERVICES_ENV, str(cfg.state_dir))
    for pid in roots:
        try:
            proc = psutil.Process(pid)
            family = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
        for member in family:
            with contextlib.suppress(psutil.Error):
                if member.status() != psutil.STATUS_ZOMBIE:
                    procs[member.pid] = member.create_time()
    return procs


def _still_alive(procs: dict[int, float]) -> list[int]:
    return [pid for pid, started in procs.items() if (process_start_time(pid) or -1.0) == started]


def down(cfg: ServiceConfig, log: Log, grace_s: float = 30.0) -> None:
    """Stop every component by its recorded pid (the whole process group), then whatever else the services
    had started (training jobs run in sessions of their own). Raises if anything survives SIGKILL."""
    state = _read_state(cfg)
    before = service_processes(cfg)
    _stop_groups(cfg, state["components"], log, grace_s)

    def leftovers() -> list[int]:  # orphans carrying the marker, and what of the snapshot still lives
        return sorted(set(marked_processes(SERVICES_ENV, str(cfg.state_dir))) | set(_still_alive(before)))

    found, survivors = stop_processes(leftovers, grace_s=10.0)
    if found:
        log(f"stopped process(es) outside the components' groups: {found}")
    if survivors:
        raise ServiceError(f"processes of the services survive SIGKILL: {survivors}")
    if cfg.state_dir.is_dir():
        state["components"] = {}
        _write_state(cfg, state)


def status(cfg: ServiceConfig) -> dict[str, Any]:
    """What runs, the health document and where to log in. Never includes a password."""
    state = _read_state(cfg)
    import psutil

    components = {}
    expected = list(AIRFLOW_COMPONENTS) if state.get("role", "all") == "all" else []
    for name in dict.fromkeys([*expected, *state["components"]]):  # the recorded ones (datastores, workers) too
        entry = state["components"].get(name)
        if entry and _is_ours(entry):
            rss = 0
            for pid in _group_members(entry["pid"]):
                with contextlib.suppress(psutil.Error):
                    rss += psutil.Process(pid).memory_info().rss
            components[name] = {"pid": entry["pid"], "running": True, "rss_mib": round(rss / 2**20),
                                "log": entry["log"]}
        else:
            components[name] = {"running": False}
    port = state.get("port", cfg.port)
    doc = health(ServiceConfig(home=cfg.home, port=port)) if any(c["running"] for c in components.values()) \
        else None
    return {"url": f"http://127.0.0.1:{port}", "components": components, "health": doc,
            "users": dict(USERS), "passwords_file": str(cfg.passwords_file),
            "processes": len(service_processes(cfg))}
