"""Run one stage command: its own process group, output streamed line by line, killed as a group.

The child is started with ``start_new_session=True`` so the launcher and every rank it forks share one process
group that :meth:`StageProcess.terminate` can signal at once. argv is a list and no shell is involved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path


class StageProcess:
    """One running stage command. Not thread-safe except for :meth:`terminate`, which any thread may call."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: str, log_path: Path,
                 tail_lines: int = 60) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, on_line: Callable[[str], None]) -> int:
        """Start the command, hand each output line to ``on_line``, return the exit code (negative: signal)."""
        if not Path(self.cwd).is_dir():
            raise FileNotFoundError(f"working directory {self.cwd} does not exist")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            )
            assert self.proc.stdout is not None
            for raw in self.proc.stdout:
                log.write(raw)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.tail.append(line)
                on_line(line)
            return self.proc.wait()

    def terminate(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after ``grace_s``."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the child leads its own group
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so a zombie does not count as alive
            if not _group_alive(pgid):
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
