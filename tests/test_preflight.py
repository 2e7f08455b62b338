"""Preflight: refused in seconds, with the device, process or path named, before any card is taken."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.plan import build_plan
from npuflow.preflight import PreflightError, check_devices, check_free_disk, stop_leftovers
from npuflow.proc import JOB_ENV
from npuflow.recipe import load_recipe
from tests.test_execute import _recipe

# What `npu-smi info -l` and `npu-smi info` print on an Ascend host (4 cards, a python process on NPU 2).
NPU_SMI = r'''#!/bin/sh
if [ "$2" = "-l" ]; then
  printf '        Total Count                    : 4\n\n'
  for i in 0 1 2 3; do
    printf '        NPU ID                         : %s\n        Chip Count                     : 1\n\n' $i
  done
  exit 0
fi
cat <<'TABLE'
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc2                 Version: 23.0.rc2                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU     Name              | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 2     910B                | OK            | 98.1        45                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           1953 / 15039      3046 / 32768         |
+===========================+===============+====================================================+
+---------------------------+---------------+----------------------------------------------------+
| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |
+===========================+===============+====================================================+
| No running processes found in NPU 0                                                            |
+===========================+===============+====================================================+
| 2       0                 | 4321          | python                   | 3112                    |
+===========================+===============+====================================================+
TABLE
'''

NVIDIA_SMI = r'''#!/bin/sh
case "$1" in
  --query-gpu=index) printf '0\n1\n' ;;
  --query-gpu=pci.bus_id,index) printf '00000000:17:00.0, 0\n00000000:65:00.0, 1\n' ;;
  --query-compute-apps=*) printf '00000000:65:00.0, 777, /usr/bin/python3\n' ;;
esac
'''


def _bin(tmp_path: Path, **tools: str) -> str:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    for name, text in tools.items():
        path = folder / name.replace("_", "-")
        path.write_text(text)
        path.chmod(0o755)
    return str(folder)


def _device(kind: str, ids: list[int]) -> dict:
    return {"kind": kind, "ids": ids, "count": len(ids)}


def test_missing_npu_driver_is_named(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match="npu-smi not found on PATH: no Ascend driver"):
        check_devices(_device("npu", [0]), env_path=_bin(tmp_path))


def test_npu_cards_that_do_not_exist_or_are_held_are_refused(tmp_path: Path) -> None:
    path = _bin(tmp_path, npu_smi=NPU_SMI)
    with pytest.raises(PreflightError, match=r"npu card\(s\) \[4, 5\] do not exist on this host; it has \[0, 1, 2, 3\]"):
        check_devices(_device("npu", [0, 4, 5]), env_path=path)
    with pytest.raises(PreflightError, match=r"card 2: pid 4321 \(python\)"):
        check_devices(_device("npu", [2, 3]), env_path=path)
    assert check_devices(_device("npu", [0, 1]), env_path=path) == "npu cards [0, 1] present and free"


def test_gpu_holders_are_mapped_from_bus_id_to_index(tmp_path: Path) -> None:
    path = _bin(tmp_path, nvidia_smi=NVIDIA_SMI)
    with pytest.raises(PreflightError, match=r"card 1: pid 777"):
        check_devices(_device("gpu", [0, 1]), env_path=path)
    assert "present and free" in check_devices(_device("gpu", [0]), env_path=path)


def test_too_many_cpu_processes_fail_the_train_stage_before_it_starts(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    for name in ("prepare_dataset", "validate_dataset"):
        execute_stage(plan, plan.stage(name), log=lambda _: None, log_format="ppdet")
    plan = build_plan(load_recipe("toy"), {"device_count": 64}, run_id="r1", runs_root=tmp_path / "runs")
    started = time.monotonic()
    with pytest.raises(StageRefused, match=r"preflight: the job asks for 64 CPU processes but this host lets it use"):
        execute_stage(plan, plan.stage("train"), log=lambda _: None, log_format="ppdet")
    assert time.monotonic() - started < 10
    assert not (Path(plan.stage("train").stage_dir) / "stage.log").exists()  # nothing was started


def test_not_enough_disk_for_checkpoints_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PreflightError, match=r"not enough free disk for checkpoints in .*/not/yet: 1e\+06 GiB needed"):
        check_free_disk({"path": str(tmp_path / "not" / "yet"), "gib": 1e6})
    assert "GiB free for checkpoints" in check_free_disk({"path": str(tmp_path), "gib": 0.001})


def test_leftovers_of_an_earlier_try_of_the_same_job_are_stopped(tmp_path: Path) -> None:
    env = {**os.environ, JOB_ENV: "dag/run/train/node0"}
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env={**env, JOB_ENV: "dag/other-run/train/node0"})
    try:
        lines: list[str] = []
        assert stop_leftovers("dag/run/train/node0", lines.append) == [mine.pid]
        assert mine.wait(5) is not None and other.poll() is None
        assert "earlier try of this job" in lines[0]
    finally:
        mine.kill()
        other.kill()
