"""Launcher command lines, rendered from the device layout rather than hard-coded per model.

FACTS: on the CPU ``paddle.distributed.launch`` wants ``--nproc_per_node N`` (``--devices`` crashes there);
on NPU/GPU the visible cards are named with ``--devices``.
"""

from __future__ import annotations

from typing import Any


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


def launch_argv(launcher: str, python: str, python_args: list[str], device: dict[str, Any],
                log_dir: str | None) -> list[str]:
    if launcher == "paddle":
        return paddle_launch_argv(python, python_args, device, log_dir)
    raise ValueError(f"unknown launcher {launcher!r}")
