"""Run one stage command: its own process group, output streamed line by line, killed as a group.

The child is started with ``start_new_session=True`` so the launcher and every rank it forks share one process
group that :meth:`StageProcess.terminate` can signal at once. argv is a list and no shell is involved.

The child's stdout and stderr are ``stage.log`` itself (opened for appending), and the task follows that file,
as torchrun's ``--tee`` does: the child's writes never wait for a reader, so a slow consumer (the Airflow task
log, the metrics parser) never stalls the trainer, and a reader thread in the task's interpreter no longer
competes with it for the pipe (bench/log_streaming.py).
Every process of the job carries ``NPUFLOW_JOB`` in its environment, which is how leftovers are found, and the
launcher gets SIGTERM if the task process itself dies (``PR_SET_PDEATHSIG``), so a SIGKILLed task cannot leave
a job holding the cards.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Environment marker every process of a stage's job inherits: ``<dag_id>/<run_id>/<stage>/node<rank>``.
JOB_ENV = "NPUFLOW_JOB"

# Run through a tiny exec shim rather than preexec_fn, which is unsafe in a threaded parent: it asks the kernel
# to SIGTERM the launcher when the task process dies, checks the parent did not already die, then execs argv.
_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(143)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)

# The job's guard, a process of its own session: when the task process dies (PDEATHSIG), it signals the job's
# whole process group at once (SIGTERM, SIGKILL after the grace) instead of leaving the stop to the launcher's
# own shutdown, which waits for its ranks and does not reach their data-loader workers. It ends by itself once
# the group is gone. argv: task pid, group id, grace in seconds.
_GUARD = (
    "import ctypes,os,signal,sys,time\n"
    "task, pgid, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])\n"
    "def alive():\n"
    "    try: os.killpg(pgid, 0)\n"
    "    except ProcessLookupError: return False\n"
    "    except PermissionError: pass\n"
    "    return True\n"
    "def stop(*_):\n"
    "    try: os.killpg(pgid, signal.SIGTERM)\n"
    "    except ProcessLookupError: os._exit(0)\n"
    "    end = time.monotonic() + grace\n"
    "    while alive() and time.monotonic() < end: time.sleep(0.1)\n"
    "    try: os.killpg(pgid, signal.SIGKILL)\n"
    "    except ProcessLookupError: pass\n"
    "    os._exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != task: stop()\n"
    "while alive(): time.sleep(1.0)\n"
)

#: Seconds the guard waits between SIGTERM and SIGKILL of a job whose task died (a container's supervisor
#: needs most of them to stop and remove its container).
GUARD_GRACE_S = 9.0


@dataclass
class RankExit:
    """A rank process seen to end, in the order the watcher saw them go."""

    rank: str
    local_rank: str
    pid: int
    after_s: float


class Poller(threading.Thread):
    """A daemon thread calling :meth:`poll` every ``every_s`` until :meth:`stop`, which polls a last time."""

    def __init__(self, name: str, every_s: float) -> None:
        super().__init__(daemon=True, name=name)
        self.every_s = every_s
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self.poll()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self.poll()

    def poll(self) -> None:
        raise NotImplementedError


class RankWatch(Poller):
    """Maps the launcher's workers to their ranks (from their environment) and records the order they exit.

    Launchers do not always name the rank that died first: paddle's reports whichever container it polls, often
    rank 0 failing in a collective *because* another rank was killed. The first rank to disappear is the cause.
    Between polls it waits on each rank's pidfd, so an exit wakes it at once: a rank that fails *because* another
    died (milliseconds later) is seen after it, where two exits within one poll interval came in either order.
    """

    RANK_KEYS = (("RANK", "LOCAL_RANK"), ("PADDLE_TRAINER_ID", "PADDLE_LOCAL_RANK"))

    def __init__(self, pid: int, every_s: float = 0.25, job: str = "") -> None:
        super().__init__(f"rank-watch-{pid}", every_s)
        self.pid = pid
        self.job = job  # also look among the processes marked with this job (ranks inside a container)
        self.started = time.monotonic()
        self.ranks: dict[int, tuple[str, str]] = {}  # pid -> (rank, local_rank)
        self.exits: list[RankExit] = []
        self._pidfds: dict[int, int] = {}  # rank pid -> its pidfd (readable once the process has ended)

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                fds = list(self._pidfds.values())
                if fds:
                    select.select(fds, [], [], self.every_s)
                else:
                    self._halt.wait(self.every_s)
                self.poll()
                self._follow_pidfds()
        finally:
            for fd in self._pidfds.values():
                os.close(fd)
            self._pidfds.clear()

    def _follow_pidfds(self) -> None:
        """A pidfd for each rank found and not yet gone; closed once it is (this thread's alone)."""
        gone = {e.pid for e in self.exits}
        for pid in gone & self._pidfds.keys():
            os.close(self._pidfds.pop(pid))
        for pid in self.ranks.keys() - gone - self._pidfds.keys():
            with contextlib.suppress(OSError):  # gone already, or no pidfd: plain polling
                self._pidfds[pid] = os.pidfd_open(pid)

    def poll(self) -> None:
        import psutil

        try:
            kids = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            kids = []
        if self.job:
            known = {k.pid for k in kids}
            for pid in marked_processes(JOB_ENV, self.job):
                with contextlib.suppress(psutil.Error):
                    if pid not in known:
                        kids.append(psutil.Process(pid))
        alive = set()
        for proc in kids:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                alive.add(proc.pid)
                if proc.pid not in self.ranks:
                    found = self._rank_of(proc.environ())
                    # A rank's own children (data loader workers) inherit its rank: keep the topmost only.
                    if found and self.ranks.get(proc.ppid()) != found:
                        self.ranks[proc.pid] = found
            except psutil.Error:
                continue
        gone = {e.pid for e in self.exits}
        for pid, (rank, local) in self.ranks.items():
            if pid not in alive and pid not in gone:
                self.exits.append(RankExit(rank, local, pid, round(time.monotonic() - self.started, 2)))

    @classmethod
    def _rank_of(cls, env: dict[str, str]) -> tuple[str, str] | None:
        for rank_key, local_key in cls.RANK_KEYS:
            if rank_key in env:
                return env[rank_key], env.get(local_key, env[rank_key])
        return None


class StageProcess:
    """One running stage command. Not thread-safe except for :meth:`terminate`, which any thread may call."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: str, log_path: Path,
                 tail_lines: int = 60, job: str = "", watch_ranks: bool = False,
                 backlog_bytes: int = 64 << 20) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.job = job
        self.watch_ranks = watch_ranks
        self.backlog_bytes = backlog_bytes
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.proc: subprocess.Popen[bytes] | None = None
        self.guard: subprocess.Popen[bytes] | None = None
        self.watch: RankWatch | None = None
        self.dropped_bytes = 0
        self.child_seconds: float | None = None  # from start to the child's exit
        #: Ranks that are not the launcher's descendants (a container's) are found by the job marker instead.
        self.find_ranks_by_marker = False

    def run(self, on_line: Callable[[str], None]) -> int:
        """Start the command, hand each output line to ``on_line``, return the exit code (negative: signal)."""
        if not Path(self.cwd).is_dir():
            raise FileNotFoundError(f"working directory {self.cwd} does not exist")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        if self.job:
            env[JOB_ENV] = self.job
        shim = [sys.executable, "-S", "-c", _PDEATHSIG_SHIM, str(os.getpid())]
        # The child writes stage.log itself (O_APPEND, like torchrun's --tee): its writes never wait for a reader.
        with open(self.log_path, "ab") as log:
            start_offset = log.tell()
            started = time.monotonic()
            self.proc = subprocess.Popen(
                [*shim, *self.argv], cwd=self.cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        exited = threading.Event()

        def waiter() -> None:
            assert self.proc is not None
            self.proc.wait()
            self.child_seconds = time.monotonic() - started
            exited.set()

        threading.Thread(target=waiter, daemon=True, name="stage-wait").start()
        guard_env = {k: v for k, v in env.items() if k != JOB_ENV}  # not one of the job's processes
        self.guard = subprocess.Popen(
            [sys.executable, "-S", "-c", _GUARD, str(os.getpid()), str(self.proc.pid), str(GUARD_GRACE_S)],
            env=guard_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        if self.watch_ranks:
            self.watch = RankWatch(self.proc.pid, job=self.job if self.find_ranks_by_marker else "")
            self.watch.start()
        try:
            for line in self._follow(start_offset, exited):
                self.tail.append(line)
                on_line(line)
            return self.proc.wait()
        finally:
            if self.watch is not None:
                self.watch.stop()
            with contextlib.suppress(ProcessLookupError):
                self.guard.kill()  # the task is alive and saw the job end: nothing left to guard
            self.guard.wait()

    def _follow(self, offset: int, exited: threading.Event, every_s: float = 0.05) -> Iterator[str]:
        """Lines appended to stage.log from ``offset`` on, until the child has exited and all are read.

        A consumer more than ``backlog_bytes`` behind skips to the newest output (stage.log keeps every line)
        and says so, so the task log stays live and the stage does not end long after its job."""
        partial = b""
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            while True:
                done = exited.is_set()  # read once more after the exit: what was written before it is in the file
                behind = os.fstat(fh.fileno()).st_size - fh.tell()
                if behind > self.backlog_bytes:
                    before = fh.tell()
                    fh.seek(behind - self.backlog_bytes // 2, os.SEEK_CUR)
                    fh.readline()  # on to the next line boundary
                    skipped = fh.tell() - before + len(partial)
                    self.dropped_bytes += skipped
                    partial = b""
                    yield (f"[npuflow] {skipped} bytes of output went by faster than the task log could take "
                           f"them; {self.log_path} has every line")
                data = fh.read(1 << 20)
                if data:
                    *lines, partial = (partial + data).split(b"\n")
                    for raw in lines:
                        yield raw.decode("utf-8", "replace").rstrip("\r")
                    continue
                if done:
                    break
                exited.wait(every_s)
        if partial:
            yield partial.decode("utf-8", "replace").rstrip("\r")

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


def marked_processes(var: str, value: str) -> list[int]:
    """Pids of live processes (not this one) whose environment has ``var=value``: what a marker inherited by
    every descendant finds even after their parents are gone."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != os.getpid() and proc.environ().get(var) == value \
                    and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def job_processes(job: str) -> list[int]:
    """Pids of live processes of ``job`` (leftovers of an earlier try)."""
    return marked_processes(JOB_ENV, job)


def stop_processes(find: Callable[[], list[int]], grace_s: float = 10.0) -> tuple[list[int], list[int]]:
    """SIGTERM every process ``find()`` returns, SIGKILL what it still returns after ``grace_s``.
    ``find`` is asked again each time, so processes that appear meanwhile are stopped too.
    Returns (the pids found at first, the pids still alive after SIGKILL)."""
    pids = find()
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not pids:
            break
        for pid in find():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and find():
            time.sleep(0.2)
        if not find():
            return pids, []
    return pids, find()


def stop_marked(var: str, value: str, grace_s: float = 10.0) -> tuple[list[int], list[int]]:
    """Stop every process marked ``var=value`` (see :func:`stop_processes`)."""
    return stop_processes(lambda: marked_processes(var, value), grace_s)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
