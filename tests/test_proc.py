"""The stage process runner: streaming, exit codes, and killing the whole process group."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from npuflow.proc import RankWatch, StageProcess, describe_exit

# A launcher-like child: forks two grandchildren that would outlive it, prints their pids, then waits.
SPAWNER = """
import signal, subprocess, sys, time
if len(sys.argv) > 1:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a rank that ignores SIGTERM
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(2)]
print("pids", *[k.pid for k in kids], flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _run_and_kill(tmp_path: Path, extra: list[str], grace: float) -> tuple[list[int], float, int]:
    proc = StageProcess([sys.executable, "-c", SPAWNER, *extra], env={}, cwd=str(tmp_path),
                        log_path=tmp_path / "stage.log")
    pids: list[int] = []
    seen = threading.Event()

    def on_line(line: str) -> None:
        if line.startswith("pids"):
            pids.extend(int(p) for p in line.split()[1:])
            seen.set()

    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(proc.run(on_line)))
    thread.start()
    assert seen.wait(20), "child never printed its pids"
    started = time.monotonic()
    proc.terminate(grace_s=grace)
    took = time.monotonic() - started
    thread.join(20)
    return [proc.proc.pid, *pids], took, result[0]


def test_terminate_kills_children_and_grandchildren(tmp_path: Path) -> None:
    pids, took, code = _run_and_kill(tmp_path, [], grace=5)
    assert code < 0  # killed by a signal
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids)), pids
    assert took < 5


def test_sigterm_ignoring_group_gets_sigkill_after_grace(tmp_path: Path) -> None:
    pids, took, code = _run_and_kill(tmp_path, ["ignore-term"], grace=1)
    assert describe_exit(code) == "killed by SIGKILL"
    assert 0.9 < took < 5
    deadline = time.monotonic() + 5
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, pids))


def test_lines_are_streamed_and_logged(tmp_path: Path) -> None:
    lines: list[str] = []
    code = StageProcess([sys.executable, "-c", "import sys\nfor i in range(3): print('line', i)\nsys.exit(3)"],
                        env={"X": "1"}, cwd=str(tmp_path), log_path=tmp_path / "s.log").run(lines.append)
    assert lines == ["line 0", "line 1", "line 2"]
    assert code == 3 and describe_exit(code) == "exited with code 3"
    assert (tmp_path / "s.log").read_text().splitlines() == lines


def test_shell_is_never_involved(tmp_path: Path) -> None:
    lines: list[str] = []
    StageProcess([sys.executable, "-c", "import sys; print(sys.argv[1])", "$(id); touch pwned"], env={},
                 cwd=str(tmp_path), log_path=tmp_path / "s.log").run(lines.append)
    assert lines == ["$(id); touch pwned"]
    assert not (tmp_path / "pwned").exists()


def _wait_file(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.02)
    return path.exists()


FLOOD = """
import sys
from pathlib import Path
for i in range(200000):
    print("line", i)
sys.stdout.flush()
Path(sys.argv[1]).write_text("done")
"""


def test_a_stalled_consumer_never_stalls_the_child(tmp_path: Path) -> None:
    """The task log may block (a slow log sink); the child must still write all of its ~2.5 MB of output."""
    done = tmp_path / "done"
    seen: list[bool] = []

    def on_line(line: str) -> None:
        if not seen:  # block on the very first line until the child has written everything and finished
            seen.append(_wait_file(done, 20))

    proc = StageProcess([sys.executable, "-c", FLOOD, str(done)], env={}, cwd=str(tmp_path),
                        log_path=tmp_path / "s.log")
    assert proc.run(on_line) == 0
    assert seen == [True]
    assert (tmp_path / "s.log").read_text().count("\n") == 200000


def test_output_beyond_the_backlog_is_kept_in_the_stage_log_and_the_gap_is_said(tmp_path: Path) -> None:
    done = tmp_path / "done"
    lines: list[str] = []

    def on_line(line: str) -> None:
        if not lines:
            _wait_file(done, 20)
        lines.append(line)

    proc = StageProcess([sys.executable, "-c", FLOOD, str(done)], env={}, cwd=str(tmp_path),
                        log_path=tmp_path / "s.log", backlog_bytes=64 * 1024)
    assert proc.run(on_line) == 0
    assert proc.dropped_bytes > 0
    assert any("went by faster than the task log" in line for line in lines)
    assert len(lines) < 200000 and (tmp_path / "s.log").read_text().count("\n") == 200000


# A launcher of two ranks: rank 1 dies of SIGKILL; rank 0 notices at once (its pipe from rank 1 closes) and exits
# 50 ms later, as a rank that fails in a collective because another died.
LAUNCHER = """
import os, subprocess, sys, time
r, w = os.pipe()
rank0 = subprocess.Popen([sys.executable, "-c", "import os, sys, time; os.read(int(sys.argv[1]), 1); "
                          "time.sleep(0.05); sys.exit(1)", str(r)], env={**os.environ, "RANK": "0"}, pass_fds=[r])
rank1 = subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time; time.sleep(1.5); "
                          "os.kill(os.getpid(), signal.SIGKILL)"], env={**os.environ, "RANK": "1"}, pass_fds=[w])
os.close(r); os.close(w)
sys.exit(max(rank0.wait(), 1) if rank1.wait() else 0)
"""


def test_the_rank_that_died_first_is_seen_first_when_another_follows_within_milliseconds() -> None:
    """The rank watch wakes on a rank's exit (its pidfd) instead of finding both gone at its next poll, where
    they came out in the order it had found them (rank 0 first: the rank that only followed)."""
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER])
    watch = RankWatch(launcher.pid)
    watch.start()
    assert launcher.wait(timeout=30) == 1
    watch.stop()
    assert [(e.rank, e.after_s > 1) for e in watch.exits] == [("1", True), ("0", True)], watch.exits
    assert watch.exits[1].after_s - watch.exits[0].after_s < 0.25  # within one poll interval of each other
