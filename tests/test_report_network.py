"""The report route where a fleet serves it: the api-server bound to a non-loopback address. The services run in
a private network namespace the test makes (``unshare --net`` with a veth pair, 10.77.0.1), so that address is
real and reachable from nowhere else; every request is made from inside it. No token: 401; a signed-in user the
auth manager does not let read the DAG: 403; a viewer of the DAG: 200 and the report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from npuflow.rundir import run_dir_for
from npuflow.services import SERVICES_ENV, ServiceConfig, read_password
from tests.airflow_services import token_without_a_role
from tests.conftest import ROOT, VENV_BIN

pytestmark = pytest.mark.services

ADDRESS, PORT = "10.77.0.1", 8080  # the namespace is private: nothing else can hold the port
YOLOR, RUN_ID = "yolor_p6_coco", "manual__2026-12-07T00:00:00+00:00"
NAMESPACE = ("ip link set lo up && ip link add np0 type veth peer name np1 && "
             f"ip addr add {ADDRESS}/24 dev np0 && ip addr add 10.77.0.2/24 dev np1 && "
             "ip link set np0 up && ip link set np1 up && echo ready && exec sleep 3600")

# Run inside the namespace: each request's status (and the viewer's page), as JSON.
CLIENT = """
import json, sys, urllib.error, urllib.request
base, url, viewer_password, outsider = sys.argv[1:5]
def call(method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
status, body = call("POST", "/auth/token", body={"username": "viewer", "password": viewer_password})
viewer = json.loads(body)["access_token"]
out = {"token": status, "none": call("GET", url)[0], "outsider": call("GET", url, outsider)[0]}
out["viewer"], out["page"] = call("GET", url, viewer)
try:
    urllib.request.urlopen(base.replace(sys.argv[5], "127.0.0.1") + "/api/v2/version", timeout=5)
    out["loopback"] = "answered"
except OSError as exc:
    out["loopback"] = type(exc).__name__
print(json.dumps(out))
"""

@pytest.fixture(scope="module")
def namespace() -> Iterator[list[str]]:
    """A process holding a new network namespace; yields the prefix that runs a command inside it."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        pytest.fail("unshare (util-linux) and ip (iproute2) are needed: make test installs them")
    holder = subprocess.Popen(["unshare", "--net", "--fork", "--", "sh", "-c", NAMESPACE], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = holder.stdout.readline().strip()
        assert line == "ready", f"could not make the network namespace: {line} {holder.stderr.read()}"
        yield ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]  # unshare itself entered the namespace
    finally:
        os.killpg(holder.pid, 9)
        holder.wait(10)


def test_the_report_route_on_a_network_address_requires_the_login_and_access_to_the_dag(
        namespace: list[str], tmp_path: Path) -> None:
    root = tmp_path / "svc"
    (root / "dags").mkdir(parents=True)
    shutil.copy(ROOT / "dags" / f"{YOLOR}.py", root / "dags")
    env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"), "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
           "NPUFLOW_RUNS_DIR": str(root / "runs"), "NPUFLOW_DEFAULT_PROFILE": "smoke", "PYTHONWARNINGS": "ignore"}
    env.pop(SERVICES_ENV, None)
    npuflow = [*namespace, str(VENV_BIN / "npuflow"), "airflow"]
    up = subprocess.run([*npuflow, "up", "--bind", ADDRESS, "--port", str(PORT)], env=env, capture_output=True,
                        text=True, timeout=300, stdin=subprocess.DEVNULL)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        report = run_dir_for(YOLOR, RUN_ID, root=root / "runs") / "report.html"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text("<html><body><h2>Gates</h2>a run's numbers, hosts and paths</body></html>")
        cfg = ServiceConfig(home=root / "airflow", port=PORT, bind=ADDRESS)
        outsider = token_without_a_role(env)
        url = f"/npuflow/reports/{YOLOR}/{quote(RUN_ID, safe='')}/report.html"
        client = subprocess.run([*namespace, str(VENV_BIN / "python"), "-c", CLIENT, cfg.url, url,
                                 read_password(cfg, "viewer"), outsider, ADDRESS], capture_output=True, text=True,
                                timeout=120)
        assert client.returncode == 0, client.stderr
        got = json.loads(client.stdout.strip().splitlines()[-1])
        assert cfg.url == f"http://{ADDRESS}:{PORT}" and got["token"] in (200, 201)
        assert (got["none"], got["outsider"], got["viewer"]) == (401, 403, 200), got
        assert "a run's numbers, hosts and paths" in got["page"]
        assert got["loopback"] != "answered"  # it listens on the network address only
    finally:
        down = subprocess.run([*npuflow, "down"], env=env, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
