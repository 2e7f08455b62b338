"""Checks run before a training job takes its cards, each failing in seconds with the reason named.

- the requested devices exist (``npu-smi info -l``, ``nvidia-smi``, the CPUs this process may use);
- no process still holds them: a leftover of an earlier try of the *same* job (found by its ``NPUFLOW_JOB``
  marker) is ours and is stopped; anything else holding a requested card fails the check, because HCCL/NCCL
  initialisation would fail on it an hour into the queue;
- free disk for checkpoints where the recipe says.
The dataset's validation verdict is checked by the stage executor, which owns the run's stage results.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from npuflow.proc import JOB_ENV, job_processes, stop_marked

Log = Callable[[str], None]

_NPU_ID = re.compile(r"^\s*NPU ID\s*:\s*(\d+)", re.M)
# A row of npu-smi info's process table: | NPU  Chip | Process id | Process name | Process memory(MB) |
_NPU_PROC = re.compile(r"^\|\s*(\d+)\s+\d+\s*\|\s*(\d+)\s*\|\s*([^|]*?)\s*\|", re.M)


class PreflightError(RuntimeError):
    """The job must not start; the message names the device, process or path at fault. ``retryable``: the
    cause may go away by itself (cards another job still holds); missing cards or disk do not."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def _tool(argv: list[str], env_path: str | None) -> str:
    exe = shutil.which(argv[0], path=env_path)
    if exe is None:
        raise PreflightError(f"{argv[0]} not found on PATH: no {'Ascend' if argv[0] == 'npu-smi' else 'NVIDIA'} "
                             f"driver on this host, so the requested cards cannot exist here")
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise PreflightError(f"{' '.join(argv)} did not answer within 30 s: the driver is hung") from None
    if out.returncode != 0:
        raise PreflightError(f"{' '.join(argv)} failed with code {out.returncode}: {out.stderr.strip()[-300:]}")
    return out.stdout


def available_devices(kind: str, env_path: str | None = None) -> list[int]:
    """Ids of the devices of ``kind`` this host has (CPU: one per usable core)."""
    if kind == "npu":
        return sorted(int(i) for i in _NPU_ID.findall(_tool(["npu-smi", "info", "-l"], env_path)))
    if kind == "gpu":
        out = _tool(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], env_path)
        return sorted(int(line) for line in out.split() if line.strip().isdigit())
    return list(range(len(os.sched_getaffinity(0))))


def device_holders(kind: str, env_path: str | None = None) -> dict[int, list[tuple[int, str]]]:
    """Processes holding each card: ``{card: [(pid, name), ...]}``. CPUs are never held exclusively."""
    holders: dict[int, list[tuple[int, str]]] = {}
    if kind == "npu":
        for card, pid, name in _NPU_PROC.findall(_tool(["npu-smi", "info"], env_path)):
            holders.setdefault(int(card), []).append((int(pid), name))
    elif kind == "gpu":
        index = dict(line.split(", ") for line in _tool(
            ["nvidia-smi", "--query-gpu=pci.bus_id,index", "--format=csv,noheader"], env_path).splitlines() if line)
        apps = _tool(["nvidia-smi", "--query-compute-apps=gpu_bus_id,pid,process_name", "--format=csv,noheader"],
                     env_path)
        for line in apps.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and parts[0] in index:
                holders.setdefault(int(index[parts[0]]), []).append((int(parts[1]), parts[2]))
    return holders


def stop_leftovers(job: str, log: Log, grace_s: float = 10.0) -> list[int]:
    """Stop the processes of an earlier try of this very job (a lost heartbeat can leave them running)."""
    pids = job_processes(job)
    if not pids:
        return []
    log(f"preflight: {len(pids)} process(es) of an earlier try of this job still run ({pids}); stopping them")
    stopped, survivors = stop_marked(JOB_ENV, job, grace_s)
    if survivors:
        raise PreflightError(f"processes of an earlier try of this job survive SIGKILL: {survivors}")
    return sorted(set(pids) | set(stopped))


def check_devices(device: dict[str, Any], env_path: str | None = None) -> str:
    kind, ids = device["kind"], device["ids"]
    have = available_devices(kind, env_path)
    if kind == "cpu":
        if device["count"] > len(have):
            raise PreflightError(f"the job asks for {device['count']} CPU processes but this host lets it use "
                                 f"only {len(have)} CPU(s)")
        return f"{len(have)} CPU(s) for {device['count']} process(es)"
    missing = sorted(set(ids) - set(have))
    if missing:
        raise PreflightError(f"requested {kind} card(s) {missing} do not exist on this host; it has "
                             f"{have or 'none'}")
    held = {card: procs for card, procs in device_holders(kind, env_path).items() if card in ids}
    if held:
        who = "; ".join(f"card {card}: " + ", ".join(f"pid {pid} ({name})" for pid, name in procs)
                        for card, procs in sorted(held.items()))
        raise PreflightError(f"requested {kind} card(s) are still held by other processes ({who}); "
                             f"stop them first, or HCCL/NCCL initialisation fails", retryable=True)
    return f"{kind} cards {ids} present and free"


def check_free_disk(spec: dict[str, Any] | None) -> str | None:
    if not spec:
        return None
    path = spec["path"]
    probe = path
    while not os.path.isdir(probe):  # the checkpoint folder may not exist yet: measure where it will be
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    free = shutil.disk_usage(probe).free
    needed = spec["gib"] * (1 << 30)
    if free < needed:
        raise PreflightError(f"not enough free disk for checkpoints in {path}: {spec['gib']:g} GiB needed, "
                             f"{free / (1 << 30):.2f} GiB free")
    return f"{free / (1 << 30):.1f} GiB free for checkpoints in {path}"


def run_preflight(device: dict[str, Any], free_disk: dict[str, Any] | None, job: str, log: Log,
                  env_path: str | None = None) -> None:
    """All checks, in order of cost; raises :class:`PreflightError` on the first failure."""
    stop_leftovers(job, log)
    for line in (check_devices(device, env_path), check_free_disk(free_disk)):
        if line:
            log(f"preflight: {line}")
