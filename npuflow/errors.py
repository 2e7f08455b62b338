"""One error hierarchy for stages: what went wrong, in the words of the stage itself, and whether a retry can help.

The Airflow operator turns :class:`StageRefused` into ``AirflowFailException`` (no retry is scheduled) and lets
:class:`StageFailed` keep its retries: a crashed rank or a lost node resumes from its checkpoint, a bad
parameter or a corrupt dataset fails the same way every time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Exit code of this project's stage programs for a failure a retry cannot fix (sysexits' EX_CONFIG): a bad
#: dataset root, a missing login, a dataset that fails validation. Anything else non-zero may be transient.
EXIT_NOT_RETRYABLE = 78


def refuse(message: str) -> int:
    """A program's side of that contract: print the cause as ``error: ...`` (the line the stage's headline is
    taken from) and return the exit code, for ``return refuse(...)`` in a ``main``."""
    import sys

    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_NOT_RETRYABLE

# A line that states a cause: this project's programs print "error: ..."; Python prints "XError: ..." last.
_CAUSE = re.compile(r"^(?:error: (?P<ours>.+)|(?P<exc>(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit)): ?(?P<msg>.*))$")


class StageError(RuntimeError):
    """A stage did not finish well. ``cause`` is the headline; ``log_tail`` the last lines of its output."""

    retryable = True

    def __init__(self, cause: str, *, log_tail: str = "", detail: str = "") -> None:
        self.cause = cause
        self.detail = detail
        self.log_tail = log_tail
        text = cause + (f" ({detail})" if detail else "")
        if log_tail:
            text += f"\n--- last lines of the stage's output ---\n{log_tail}"
        super().__init__(text)


class StageFailed(StageError):
    """May succeed on a retry: a crashed or killed rank, a lost node, cards still held by another job."""


class StageRefused(StageError):
    """Fails the same way on every try: bad input, a missing upstream output, no complete checkpoint, no disk."""

    retryable = False


def cause_line(lines: Iterable[str]) -> str | None:
    """The last line of ``lines`` that states a cause (``error: ...`` or a Python exception), without prefix."""
    found = None
    for raw in lines:
        line = raw.strip()
        m = _CAUSE.match(line)
        if m:
            if m.group("ours"):
                found = m.group("ours")
            elif m.group("exc") not in ("SystemExit",) or m.group("msg"):
                found = line if m.group("exc") != "SystemExit" else m.group("msg")
    return found
