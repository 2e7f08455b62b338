"""PostgreSQL and Redis for the scale-out deployment (CeleryExecutor): Debian's servers, run by the services.

Both run as components of ``npuflow airflow up --executor celery`` (own session, stopped by ``down`` like the
Airflow components), with their state under ``<AIRFLOW_HOME>/services/``: ``pg/`` (the cluster, made once with
``initdb``), ``redis/``, and ``datastores.json`` (mode 0600: the generated passwords). PostgreSQL refuses to
run as root, so under root it runs as Debian's ``postgres`` user through ``runuser``. Nothing here imports
Airflow or a database driver; readiness is checked on the sockets.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Log = Callable[[str], None]

DB_NAME = "airflow"
DB_USER = "airflow"


class DatastoreError(RuntimeError):
    """A server binary is missing or a server did not come up; the message says which and where its log is."""


def write_private_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.write("\n")
    os.replace(tmp, path)


@dataclass
class Datastores:
    """Where the metadata DB and the broker listen, and their credentials (made once, kept across restarts)."""

    state_dir: Path
    bind: str
    pg_port: int
    redis_port: int

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "datastores.json"

    def passwords(self) -> dict[str, str]:
        try:
            found = json.loads(self.secrets_file.read_text())
        except (FileNotFoundError, ValueError):
            found = {}
        if not found.get("postgres") or not found.get("redis"):
            found = {"postgres": secrets.token_urlsafe(16), "redis": secrets.token_urlsafe(16), **found}
            write_private_json(self.secrets_file, found)
        return found

    def airflow_env(self) -> dict[str, str]:
        """What every Airflow component and worker needs: the DB, the broker, Celery's result backend."""
        pw = self.passwords()
        db = f"postgresql+psycopg2://{DB_USER}:{pw['postgres']}@{self.bind}:{self.pg_port}/{DB_NAME}"
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db,
            "AIRFLOW__CELERY__BROKER_URL": f"redis://:{pw['redis']}@{self.bind}:{self.redis_port}/0",
            # Celery's database backend needs the driver named: a bare postgresql:// picks psycopg 3.
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db}",
        }

    # -- commands --------------------------------------------------------------------------------------

    def postgres_argv(self) -> list[str]:
        return [*_as_postgres(), _pg_bin("postgres"), "-D", str(self.pg_data), "-p", str(self.pg_port),
                "-k", str(self.pg_dir), "-c", f"listen_addresses={self.bind}"]

    def redis_argv(self) -> list[str]:
        redis = shutil.which("redis-server")
        if not redis:
            raise DatastoreError("redis-server is not installed (Debian: apt-get install redis-server)")
        conf = self.state_dir / "redis" / "redis.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        # The password goes in a 0600 config file, not on the command line (ps shows argv to every user).
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"bind {self.bind}\nport {self.redis_port}\nrequirepass {self.passwords()['redis']}\n"
                     f"dir {conf.parent}\nsave \"\"\nappendonly no\nprotected-mode yes\n")
        return [redis, str(conf)]

    # -- the PostgreSQL cluster ------------------------------------------------------------------------

    @property
    def pg_dir(self) -> Path:
        """The cluster's folder. Under root it cannot live in a private folder (the ``postgres`` user must reach
        it), so it is a folder of the temp dir named after the state dir, linked from ``<state>/pg``."""
        if os.geteuid() != 0:
            return self.state_dir / "pg"
        key = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"npuflow-pg-{key}"

    @property
    def pg_data(self) -> Path:
        return self.pg_dir / "data"

    def init_postgres(self, log: Log) -> None:
        """``initdb`` once: superuser ``airflow`` with the generated password, password auth over TCP."""
        if (self.pg_data / "PG_VERSION").is_file():
            return
        self.pg_dir.mkdir(parents=True, exist_ok=True)
        link = self.state_dir / "pg"
        if self.pg_dir != link and not link.is_symlink():
            link.symlink_to(self.pg_dir)
        pwfile = self.pg_dir / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.passwords()["postgres"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.pg_dir, "postgres")
            shutil.chown(pwfile, "postgres")
        out = subprocess.run([*_as_postgres(), _pg_bin("initdb"), "-D", str(self.pg_data), "-U", DB_USER,
                              f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
                              "-E", "UTF8"], capture_output=True, text=True, check=False)
        pwfile.unlink()
        if out.returncode != 0:
            raise DatastoreError(f"initdb failed ({out.returncode}): {(out.stderr or out.stdout)[-1500:]}")
        log(f"PostgreSQL cluster created in {self.pg_data}")

    def database_url(self, name: str = DB_NAME) -> str:
        # The driver named: SQLAlchemy 2.1 takes a bare postgresql:// for psycopg 3.
        return f"postgresql+psycopg2://{DB_USER}:{self.passwords()['postgres']}@{self.bind}:{self.pg_port}/{name}"

    def create_database(self, log: Log, name: str = DB_NAME) -> None:
        """Create database ``name`` (Airflow's; MLflow's) if the cluster does not have it (the local socket)."""
        psql = [*_as_postgres(), _pg_bin("psql"), "-h", str(self.pg_dir), "-p", str(self.pg_port), "-U", DB_USER,
                "-d", "postgres", "-tAc"]
        found = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                               capture_output=True, text=True, check=False)
        if found.returncode != 0:
            raise DatastoreError(f"psql failed: {found.stderr[-800:]}")
        if found.stdout.strip() != "1":
            made = subprocess.run([*psql, f"CREATE DATABASE {name}"], capture_output=True, text=True, check=False)
            if made.returncode != 0:
                raise DatastoreError(f"creating database {name}: {made.stderr[-800:]}")
            log(f"database {name} created")


def wait_port(host: str, port: int, timeout_s: float, alive: Callable[[], bool]) -> bool:
    """Until ``host:port`` accepts a connection (True), ``alive()`` says the server died, or the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            if not alive():
                return False
            time.sleep(0.2)
    return False


def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them under /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    path = found[-1] if found else shutil.which(name)
    if not path:
        raise DatastoreError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return path


def _as_postgres() -> list[str]:
    """PostgreSQL will not run as root: under root, run its programs as Debian's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
