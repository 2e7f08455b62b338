"""``npuflow airflow up|down|status`` as a user runs them, with services of their own (not the shared ones)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from npuflow.proc import JOB_ENV, marked_processes
from npuflow.services import SERVICES_ENV
from tests.airflow_services import npuflow_airflow, start, stop

pytestmark = pytest.mark.services

SSD = "ssd300_coco"  # torchrun and its ranks (the YOLOR port trains as one process on a CPU)


def test_up_is_idempotent_refuses_a_busy_port_and_down_stops_a_training_job(tmp_path: Path) -> None:
    s = start(tmp_path / "a")
    try:
        again = npuflow_airflow(s.env, "up", "--port", str(s.port))
        assert again.returncode == 0 and "started" not in again.stdout, again.stdout + again.stderr

        other = {**s.env, "AIRFLOW_HOME": str(tmp_path / "b" / "airflow")}
        busy = npuflow_airflow(other, "up", "--port", str(s.port))
        assert busy.returncode == 1
        assert f"port {s.port} on 127.0.0.1 is already in use" in busy.stderr
        assert not marked_processes(SERVICES_ENV, str(tmp_path / "b" / "airflow" / "services"))

        # a long training, stopped by `down` while it runs: its ranks live in a session of their own
        s.unpause(SSD)
        run_id = s.trigger(SSD, {"epochs": 500})
        job = f"{SSD}/{run_id}/train/node0"
        deadline = time.monotonic() + 300
        while len(marked_processes(JOB_ENV, job)) < 3:  # torchrun + 2 ranks
            assert time.monotonic() < deadline, s.task_instances(SSD, run_id)
            time.sleep(0.5)
    finally:
        out = stop(s)  # fails if anything the services started is still alive
    assert not marked_processes(JOB_ENV, job)
    assert "SIGTERM scheduler" in out

    status = npuflow_airflow(s.env, "status")
    assert status.returncode == 3 and "stopped" in status.stdout
