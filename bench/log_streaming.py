"""A child printing 10^6 lines as fast as it can, run directly and under the stage runner (goal: <= 1.05x).

    .venv/bin/python bench/log_streaming.py [--lines 1000000] [--repeat 5]

Directly: the child's stdout goes to a file. Under the runner: ``StageProcess`` (own process group, output
reader thread writing stage.log) with a consumer that does what the train operator does per line, the metrics
parser and a ``logging`` handler writing the task log. Times are the child's wall time (start to the end of its
output); the time the consumer needs to catch up afterwards is printed too, since it does not slow the child.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.logparse import parser_for  # noqa: E402
from npuflow.proc import StageProcess  # noqa: E402

CHILD = "import sys\nw = sys.stdout.write\nfor i in range({n}):\n    w(f'Epoch: [0] [{{i}}/{n}] loss: 0.5\\n')\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    argv = [sys.executable, "-c", CHILD.format(n=args.lines)]
    direct, runner, drained = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        logger = logging.getLogger("bench.task")
        logger.propagate = False
        logger.addHandler(logging.FileHandler(Path(tmp) / "task.log"))
        logger.setLevel(logging.INFO)
        parse = parser_for("ppdet")

        def on_line(line: str) -> None:
            logger.info(line)
            parse(line)

        for i in range(args.repeat):
            started = time.perf_counter()
            with open(Path(tmp) / f"direct{i}.log", "wb") as fh:
                subprocess.run(argv, stdout=fh, check=True)
            direct.append(time.perf_counter() - started)

            proc = StageProcess(argv, env={}, cwd=tmp, log_path=Path(tmp) / f"stage{i}.log")
            started = time.perf_counter()
            assert proc.run(on_line) == 0
            drained.append(time.perf_counter() - started)
            runner.append(proc.child_seconds)
            print(f"repeat {i}: direct {direct[-1]:.2f} s, under the runner {runner[-1]:.2f} s "
                  f"(task log caught up after {drained[-1]:.2f} s, {proc.dropped_bytes} bytes skipped)", flush=True)
    d, r = statistics.median(direct), statistics.median(runner)
    print(f"{args.lines} lines, median of {args.repeat}: direct {d:.2f} s, under the runner {r:.2f} s; "
          f"ratio {r / d:.3f} (goal <= 1.05); task log complete after {statistics.median(drained):.2f} s")


if __name__ == "__main__":
    main()
