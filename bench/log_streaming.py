"""A child printing 10^6 lines as fast as it can, run directly and under the stage runner (goal: <= 1.05x).

    .venv/bin/python bench/log_streaming.py [--lines 1000000] [--repeat 5] [--runner process|docker]

Directly: the child's stdout is a file no one follows (in a container: the same command as the runner's). Under the
runner: ``StageProcess`` (own process group, the child writing stage.log, the task following it) with a
consumer that does what the train operator does per line, the metrics parser and a ``logging`` handler writing
the task log. With ``--runner docker`` both run in a container on an engine started here (tests/engine.py), the
runner's child being the container supervisor. Times are the child's own (its loop, timed by itself); the time
the consumer needs to catch up afterwards is printed too, since it does not slow the child.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.container import LOG_SCRIPT, write_spec  # noqa: E402
from npuflow.logparse import parser_for  # noqa: E402
from npuflow.proc import StageProcess  # noqa: E402

CHILD = """import sys, time
started = time.perf_counter()
w = sys.stdout.write
for i in range({n}):
    w(f"Epoch: [0] [{{i}}/{n}] loss: 0.5\\n")
sys.stdout.flush()
open(sys.argv[1], "w").write(str(time.perf_counter() - started))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--runner", choices=["process", "docker"], default="process")
    args = ap.parse_args()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        engine = None
        if args.runner == "docker":
            from tests.engine import STAGE_IMAGES, running_engine

            engine = stack.enter_context(running_engine({IMAGE: STAGE_IMAGES[IMAGE]}))
            os.environ["DOCKER_HOST"] = engine.host
        logger = logging.getLogger("bench.task")
        logger.propagate = False
        logger.addHandler(logging.FileHandler(tmp / "task.log"))
        logger.setLevel(logging.INFO)
        parse = parser_for("ppdet")

        def on_line(line: str) -> None:
            logger.info(line)
            parse(line)

        direct, runner, drained = [], [], []
        for i in range(args.repeat):
            child = [sys.executable, "-c", CHILD.format(n=args.lines), str(tmp / f"direct{i}.s")]
            if engine is not None:  # the runner's container command, its output to a file no one follows
                box = engine.client().containers.run(IMAGE, ["/bin/sh", "-c", LOG_SCRIPT, str(tmp / f"direct{i}.log"),
                                                             *child], detach=True, network_mode="none",
                                                     mounts=_mounts(tmp))
                box.wait()
                box.remove()
            else:
                with open(tmp / f"direct{i}.log", "wb") as fh:
                    subprocess.run(child, stdout=fh, check=True)
            direct.append(float((tmp / f"direct{i}.s").read_text()))

            argv = [sys.executable, "-c", CHILD.format(n=args.lines), str(tmp / f"runner{i}.s")]
            if engine is not None:
                spec_path = tmp / f"spec{i}.json"
                write_spec(spec_path, {**_spec(argv, tmp, f"bench/log/{i}/node0"), "log_path": str(tmp / f"stage{i}.log")})
                argv = [sys.executable, "-m", "npuflow.container", str(spec_path)]
            proc = StageProcess(argv, env={}, cwd=str(tmp), log_path=tmp / f"stage{i}.log")
            started = time.perf_counter()
            assert proc.run(on_line) == 0
            drained.append(time.perf_counter() - started)
            runner.append(float((tmp / f"runner{i}.s").read_text()))
            print(f"repeat {i}: direct {direct[-1]:.2f} s, under the runner {runner[-1]:.2f} s "
                  f"(task log caught up after {drained[-1]:.2f} s, {proc.dropped_bytes} bytes skipped)", flush=True)
    d, r = statistics.median(direct), statistics.median(runner)
    print(f"{args.runner}: {args.lines} lines, median of {args.repeat}: direct {d:.2f} s, under the runner {r:.2f} s; "
          f"ratio {r / d:.3f} (goal <= 1.05); task log complete after {statistics.median(drained):.2f} s")


IMAGE = "npuflow/paddle-npu:smoke"


def _mounts(tmp: Path) -> list:
    from docker.types import Mount

    return [Mount(p, p, type="bind", read_only=False) for p in (str(tmp), str(ROOT), sys.base_prefix)]


def _spec(argv: list[str], tmp: Path, job: str) -> dict:
    return {"image": IMAGE, "user": None, "group_add": [], "env": {}, "devices": [], "network_mode": "none",
            "ipc_mode": "private", "shm_gib": 1, "argv": argv, "cwd": str(tmp), "job": job, "home": str(tmp),
            "pass_env": [], "mounts": [{"source": p, "target": p, "read_only": False}
                                       for p in (str(tmp), str(ROOT), sys.base_prefix)]}


if __name__ == "__main__":
    main()
