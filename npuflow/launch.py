"""Launcher command lines and device environment, rendered from the device layout, never per model.

FACTS: on the CPU ``paddle.distributed.launch`` wants ``--nproc_per_node N`` (``--devices`` crashes there);
on NPU/GPU the visible cards are named with ``--devices``, and NPUs are only recognised with
``PADDLE_XCCL_BACKEND=npu``. torchrun starts one process per card; the cards a node may use are named by
``ASCEND_RT_VISIBLE_DEVICES`` (NPU) or ``CUDA_VISIBLE_DEVICES`` (GPU), so ``local_rank`` indexes them.
"""

from __future__ import annotations

import re
from typing import Any

LAUNCHERS = ("paddle", "torchrun")


def paddle_launch_argv(python: str, python_args: list[str], device: dict[str, Any],
                       log_dir: str | None) -> list[str]:
    argv = [python, *python_args, "-m", "paddle.distributed.launch"]
    if device["kind"] == "cpu":
        argv += ["--nproc_per_node", str(device["count"])]
    else:
        argv += ["--devices", ",".join(map(str, device["ids"]))]
    if device["nnodes"] > 1:
        argv += ["--master", device["master"], "--nnodes", str(device["nnodes"]), "--rank", str(device["node_rank"])]
    if log_dir:
        argv += ["--log_dir", log_dir]
    return argv


def job_id(dag_id: str, run_id: str) -> str:
    """A rendezvous id every node of one run derives alike, and no other run shares."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{dag_id}-{run_id}")[:128]


def torchrun_argv(python: str, python_args: list[str], device: dict[str, Any], log_dir: str | None,
                  rdzv_id: str, cpu_share: bool = False) -> list[str]:
    argv = [python, *python_args, "-m", "torch.distributed.run", "--nproc_per_node", str(device["count"])]
    if device["nnodes"] == 1:
        argv += ["--standalone"]  # a private c10d store on a free local port: concurrent jobs never clash
    elif (device.get("rendezvous") or "c10d") == "c10d":
        argv += ["--nnodes", str(device["nnodes"]), "--rdzv-backend", "c10d", "--rdzv-endpoint", device["master"],
                 "--rdzv-id", rdzv_id]
    else:  # static: fixed ranks and a plain master address, as the ModelZoo scripts do
        host, port = device["master"].rsplit(":", 1)
        argv += ["--nnodes", str(device["nnodes"]), "--node-rank", str(device["node_rank"]),
                 "--master-addr", host, "--master-port", port]
    if log_dir:
        # Each rank's stdout/stderr go to <log_dir>/<id>/attempt_N/<rank>/ and, with --tee, to the console
        # prefixed by "[default<rank>]:", so the task log shows every rank.
        argv += ["--log-dir", log_dir, "--redirects", "3", "--tee", "3"]
    if cpu_share:  # each rank on its share of the node's cores (npuflow/programs/cpu_share.py), then the script
        argv += ["-m", "npuflow.programs.cpu_share"]
    return argv


def launch_argv(launcher: str, python: str, python_args: list[str], device: dict[str, Any],
                log_dir: str | None, rdzv_id: str = "npuflow", cpu_share: bool = False) -> list[str]:
    if launcher == "paddle":
        if device.get("rendezvous"):
            raise ValueError("rendezvous applies to torchrun; paddle.distributed.launch uses --master")
        if cpu_share:
            raise ValueError("cpu_share applies to torchrun")
        return paddle_launch_argv(python, python_args, device, log_dir)
    if launcher == "torchrun":
        return torchrun_argv(python, python_args, device, log_dir, rdzv_id, cpu_share)
    raise ValueError(f"unknown launcher {launcher!r}")


def one_card_env(device: dict[str, Any]) -> dict[str, str]:
    """A one-card stage's card (the layout's first) as the runtime's only visible card, so its card 0 is the one
    the stage claimed: ASCEND_RT_VISIBLE_DEVICES (CANN, Paddle's custom device and torch_npu alike) on Ascend."""
    card = str(device["ids"][0])
    if device["kind"] == "npu":
        return {"ASCEND_RT_VISIBLE_DEVICES": card}
    if device["kind"] == "gpu":
        return {"CUDA_VISIBLE_DEVICES": card}
    return {}


def device_env(launcher: str, device: dict[str, Any]) -> dict[str, str]:
    """Environment the launcher needs for the device kind; the recipe's env (FLAGS_*, HCCL_*) goes on top."""
    ids = ",".join(map(str, device["ids"]))
    kind = device["kind"]
    if launcher == "paddle":
        return {"PADDLE_XCCL_BACKEND": "npu"} if kind == "npu" else {}
    if kind == "npu":
        return {"ASCEND_RT_VISIBLE_DEVICES": ids}
    # An installed torch_npu without CANN makes a plain `import torch` fail through backend autoload (FACTS).
    env = {"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}
    if kind == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ids
    return env
