"""Naming the rank that broke a job, from torchrun's summary, the rank watcher, or the per-rank logs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from npuflow.failures import find_failing_rank, torchrun_root_cause
from npuflow.proc import RankExit

# The end of a real torchrun 2.13 run in which rank 1 was SIGKILLed (torchrun then SIGTERMs rank 0).
TORCHRUN_SUMMARY = """\
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
=======================================================
w.py FAILED
-------------------------------------------------------
Failures:
[1]:
  time      : 2026-11-23_22:15:02
  host      : localhost
  rank      : 0 (local_rank: 0)
  exitcode  : -15 (pid: 21547)  (SIGTERM)
  error_file: <N/A>
  traceback : Signal 15 (SIGTERM) received by PID 21547
-------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-11-23_22:15:01
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 21548)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 21548
=======================================================""".splitlines()

# paddle.distributed.launch 2.6 when rank 1 is SIGKILLed: it reports rank 0, which failed in gloo afterwards.
PADDLE_REPORT = [
    "LAUNCH INFO 2026-11-23 22:15:12,376 Pod failed",
    "LAUNCH ERROR 2026-11-23 22:15:12,376 Container failed !!!",
    "Container rank 0 status failed cmd ['python', '-u', 'p.py'] code 1 log /tmp/tr/plog/workerlog.0 ",
]


def test_torchrun_root_cause_is_the_first_failure_not_the_sigtermed_peer() -> None:
    assert torchrun_root_cause(TORCHRUN_SUMMARY) == ("1", "1", "killed by SIGKILL")
    assert torchrun_root_cause(PADDLE_REPORT) is None


def test_torchrun_failure_carries_the_tail_of_that_ranks_own_log(tmp_path: Path) -> None:
    rank_dir = tmp_path / "job_abc" / "attempt_0" / "1"
    rank_dir.mkdir(parents=True)
    (rank_dir / "stdout.log").write_text("epoch 3 step 7\n")
    (rank_dir / "stderr.log").write_text("")
    failure = find_failing_rank(TORCHRUN_SUMMARY, tmp_path, [], since=time.time() - 60)
    assert failure is not None and (failure.rank, failure.how) == ("1", "killed by SIGKILL")
    assert failure.log_tail == ("epoch 3 step 7",)
    assert "rank 1 (local rank 1) killed by SIGKILL" in failure.describe()


def test_paddle_first_rank_to_exit_is_blamed_over_the_launchers_report(tmp_path: Path) -> None:
    (tmp_path / "workerlog.1").write_text("step 4\nstep 5\n")
    exits = [RankExit("1", "1", 4242, 1.5), RankExit("0", "0", 4241, 4.0)]
    failure = find_failing_rank(PADDLE_REPORT, tmp_path, exits, since=time.time() - 60)
    assert failure is not None and failure.rank == "1"
    assert "not reported" in failure.how and "launcher then reported rank 0 exited with code 1" in failure.source
    assert failure.log.endswith("workerlog.1")


def test_without_a_watcher_only_fresh_worker_logs_with_a_traceback_count(tmp_path: Path) -> None:
    (tmp_path / "workerlog.0").write_text("step 1\nstep 2\n")
    (tmp_path / "workerlog.1").write_text("Traceback (most recent call last):\n  ...\nRuntimeError: NPU out of memory\n")
    (tmp_path / "workerlog.2").write_text("Traceback (most recent call last):\nValueError: from last night\n")
    old = time.time() - 3600
    os.utime(tmp_path / "workerlog.2", (old, old))
    failure = find_failing_rank(["some launcher line"], tmp_path, [], since=time.time() - 60)
    assert failure is not None and failure.rank == "1"
    assert failure.log_tail[-1] == "RuntimeError: NPU out of memory"
    assert find_failing_rank([], tmp_path / "missing", [], since=0) is None


def test_among_ranks_gone_in_the_same_poll_the_one_whose_log_ends_quietly_is_blamed(tmp_path: Path) -> None:
    (tmp_path / "workerlog.0").write_text("step 5\nTraceback (most recent call last):\nRuntimeError: gloo TIMEOUT\n")
    (tmp_path / "workerlog.1").write_text("step 4\nstep 5\n")  # SIGKILLed: no last words
    exits = [RankExit("0", "0", 11, 2.0), RankExit("1", "1", 12, 2.0)]
    failure = find_failing_rank(PADDLE_REPORT, tmp_path, exits, since=time.time() - 60)
    assert failure is not None and failure.rank == "1"
