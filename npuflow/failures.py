"""Name the rank that broke a distributed job: its rank, exit code or signal, and the tail of its own log.

Three sources, best first:
1. torchrun's "Root Cause (first observed failure)" block, which has the rank, local rank and exit code;
2. the :class:`npuflow.proc.RankWatch` record of which rank process disappeared first (paddle's launcher
   reports whichever container it polls, usually rank 0 failing in a collective *after* another rank died);
3. per-rank logs that end in a Python traceback.
The per-rank logs are ``workerlog.<local_rank>`` (paddle) or ``<id>/attempt_N/<local_rank>/std{out,err}.log``
(torchrun with ``--log-dir``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from npuflow.proc import RankExit, describe_exit

_FIELD = re.compile(r"^\s*(rank|exitcode|host)\s*:\s*(.*)$")
_PADDLE_CONTAINER = re.compile(r"Container rank (\d+) status failed .*? code (-?\d+)")


@dataclass
class RankFailure:
    rank: str
    local_rank: str
    how: str  # "exited with code 1", "killed by SIGKILL", or what is known
    source: str
    log: str = ""
    log_tail: tuple[str, ...] = ()

    def describe(self) -> str:
        head = f"rank {self.rank} (local rank {self.local_rank}) {self.how} [{self.source}]"
        if self.log_tail:
            head += f"\n--- tail of {self.log} ---\n" + "\n".join(self.log_tail)
        return head


def torchrun_root_cause(lines: list[str]) -> tuple[str, str, str] | None:
    """(rank, local_rank, how) from torchrun's ChildFailedError summary, or None."""
    try:
        start = max(i for i, line in enumerate(lines) if "Root Cause (first observed failure)" in line)
    except ValueError:
        return None
    fields: dict[str, str] = {}
    for line in lines[start + 1:start + 12]:
        m = _FIELD.match(line)
        if m:
            fields.setdefault(m.group(1), m.group(2))
    m = re.match(r"(\d+)\s*\(local_rank:\s*(\d+)\)", fields.get("rank", ""))
    code = re.match(r"(-?\d+)", fields.get("exitcode", ""))
    if not m or not code:
        return None
    return m.group(1), m.group(2), describe_exit(int(code.group(1)))


def _rank_logs(log_dir: Path, local_rank: str, since: float) -> list[Path]:
    """This attempt's log files of one local rank, newest first."""
    if not log_dir.is_dir():
        return []
    found = [*log_dir.glob(f"workerlog.{local_rank}"),
             *log_dir.glob(f"**/attempt_*/{local_rank}/stderr.log"),
             *log_dir.glob(f"**/attempt_*/{local_rank}/stdout.log")]
    recent = [p for p in found if p.stat().st_mtime >= since]
    return sorted(recent, key=lambda p: p.stat().st_mtime, reverse=True)


def _tail(path: Path, lines: int = 15) -> tuple[str, ...]:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 64 * 1024))
        text = fh.read().decode("utf-8", "replace")
    return tuple(ln for ln in text.splitlines() if ln.strip())[-lines:]


def _with_log(failure: RankFailure, log_dir: Path | None, since: float) -> RankFailure:
    if log_dir is None:
        return failure
    tails = [(p, _tail(p)) for p in _rank_logs(log_dir, failure.local_rank, since) if p.stat().st_size]
    if tails:
        # Prefer the file with the traceback (stderr for torchrun), else the newest non-empty one.
        path, tail = next(((p, t) for p, t in tails if any("Error" in ln or "Traceback" in ln for ln in t)),
                          tails[0])
        failure.log, failure.log_tail = str(path), tail
    return failure


_VICTIM = re.compile(r"Traceback|Error|received by PID|Aborted|TIMEOUT")


def _first_to_go(exits: list[RankExit], log_dir: Path | None, since: float) -> RankExit:
    """The first rank seen gone; among ranks gone within the same poll, one whose log ends quietly (SIGKILL,
    the OOM killer) rather than with an error about its peers, which is how the survivors die."""
    same = [e for e in exits if e.after_s == exits[0].after_s]
    if len(same) > 1 and log_dir is not None:
        for exit_ in same:
            logs = _rank_logs(log_dir, exit_.local_rank, since)
            if logs and not any(_VICTIM.search(line) for line in _tail(logs[0], 40)):
                return exit_
    return exits[0]


def find_failing_rank(output: list[str], log_dir: Path | None, exits: list[RankExit],
                      since: float) -> RankFailure | None:
    """The rank to blame for a failed launcher exit, or None when no rank can be named."""
    root = torchrun_root_cause(output)
    if root is not None:
        rank, local, how = root
        return _with_log(RankFailure(rank, local, how, "torchrun's root cause"), log_dir, since)
    reported = {m.group(1): int(m.group(2)) for m in map(_PADDLE_CONTAINER.search, output) if m}
    if exits:
        first = _first_to_go(exits, log_dir, since)
        how = (describe_exit(reported[first.rank]) if first.rank in reported
               else "ended first of the job's ranks (its exit status was not reported)")
        source = f"pid {first.pid}, gone {first.after_s} s after start"
        others = {r: c for r, c in reported.items() if r != first.rank}
        if others:
            source += "; the launcher then reported " + ", ".join(
                f"rank {r} {describe_exit(c)}" for r, c in sorted(others.items()))
        return _with_log(RankFailure(first.rank, first.local_rank, how, source), log_dir, since)
    if reported:
        rank, code = min(reported.items())
        return _with_log(RankFailure(rank, rank, describe_exit(code), "the launcher's report"), log_dir, since)
    if log_dir is not None and log_dir.is_dir():
        for path in sorted(log_dir.glob("workerlog.*")):
            if path.stat().st_mtime >= since and "Traceback (most recent call last)" in path.read_text(errors="replace"):
                local = path.suffix.lstrip(".")
                return RankFailure(local, local, "raised an exception", "its log", str(path), _tail(path))
    return None

