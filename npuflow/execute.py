"""Execute one planned stage: its inputs, the command, its outputs, and the stage's result file.

Plain Python, no Airflow: the operator in ``npuflow.operators.stage`` calls :func:`execute_stage` and the tests call
it directly. What differs between stage kinds (what it needs before, what it writes in code, what to read
after, whether it holds cards) is asked of the stage's kind (``npuflow.kinds``), never decided by the model.
"""

from __future__ import annotations

import glob
import json
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from npuflow.errors import EXIT_NOT_RETRYABLE, StageError, StageFailed, StageRefused, cause_line
from npuflow.failures import find_failing_rank
from npuflow.fleet import failed_siblings, mark_failed
from npuflow.imports import probe
from npuflow.kinds import registry
from npuflow.kinds.base import RunContext, StageKind, Upstream
from npuflow.logparse import PARSERS, MetricsSummary, parser_for
from npuflow.plan import Plan, StageCommand
from npuflow.preflight import PreflightError, run_preflight
from npuflow.proc import JOB_ENV, Poller, StageProcess, describe_exit
from npuflow.resume import find_checkpoint, resume_argv
from npuflow.rundir import read_stage_result, write_stage_result

Log = Callable[[str], None]

__all__ = ["StageError", "StageFailed", "StageRefused", "execute_stage", "job_marker"]


def resolve_output(stage: StageCommand, candidates: list[str]) -> Path | None:
    """First existing path among ``candidates`` (relative ones are relative to the stage's cwd)."""
    for cand in candidates:
        path = Path(cand) if Path(cand).is_absolute() else Path(stage.cwd) / cand
        if path.exists():
            return path
    return None


def _existing(stage: StageCommand) -> dict[str, str]:
    """The stage's declared outputs that exist, by name."""
    found = {name: resolve_output(stage, cands) for name, cands in stage.outputs.items()}
    return {name: str(path) for name, path in found.items() if path is not None}


def _missing(stage: StageCommand, found: dict[str, str]) -> list[str]:
    return [f"{name} ({' or '.join(cands)})" for name, cands in stage.outputs.items() if name not in found]


def read_inputs(plan: Plan, stage: StageCommand, kind: StageKind) -> dict[str, list[Upstream]]:
    """Each input role's upstream stages with their typed results, read from this run's directory.

    An upstream that ran must have succeeded and its outputs must still be there. One the ``stages`` param left
    out may be missing only where the input is optional (a run that skips validation). A kind that runs after
    failures (the report) takes its optional inputs as they are: failed or never run, they are left out."""
    kinds = registry()
    inputs: dict[str, list[Upstream]] = {}
    for role_name, names in stage.inputs.items():
        role = kind.consumes[role_name]
        tolerant = kind.runs_after_failures and not role.required
        for name in names:
            up = plan.stage(name)
            stored = read_stage_result(plan.run_dir, name)
            if tolerant and (stored is None or not stored.get("ok")):
                continue
            if stored is None:
                if up.enabled:
                    raise StageRefused(f"stage {stage.name}: cannot start, {name} has no result in {plan.run_dir}")
                if role.required:
                    raise StageRefused(f"stage {stage.name}: cannot start, it consumes the result of {name}, which "
                                       f"the stages parameter left out of this run")
                continue
            if not stored.get("ok"):
                raise StageRefused(f"stage {stage.name}: cannot start, {name} did not succeed: "
                                   f"{stored.get('summary')}")
            missing = _missing(up, _existing(up))
            if missing:
                raise StageRefused(f"stage {stage.name}: cannot start, stage {name!r} left no {', '.join(missing)}")
            produces = kinds[up.kind].produces
            result = produces.from_dict(stored["result"]) if produces and stored.get("result") is not None else None
            inputs.setdefault(role_name, []).append(Upstream(name, up, result))
    return inputs


class _TrainProgress:
    """Parses training lines into metrics.jsonl and logs progress as a percentage with an ETA."""

    def __init__(self, plan: Plan, stage: StageCommand, log: Log, log_format: str, every_s: float = 15.0):
        self.parse = parser_for(log_format)
        self.summary = MetricsSummary(world_size=int(plan.variables["world_size"]))
        self.metrics_path = Path(stage.stage_dir) / "metrics.jsonl"
        self.metrics = open(self.metrics_path, "a")  # noqa: SIM115 - closed in close()
        self.log = log
        self.every_s = every_s
        self.started = time.monotonic()
        self.last_report = 0.0
        self.parse_errors = 0

    def __call__(self, line: str) -> None:
        # Never let a parsing problem stop the consumer: the task log and metrics would stop there.
        try:
            self._consume(line)
        except Exception as exc:
            if not self.parse_errors:
                self.log(f"warning: could not parse a log line ({exc!r}): {line[:200]}")
            self.parse_errors += 1

    def _consume(self, line: str) -> None:
        rec = self.parse(line)
        if rec is None:
            return
        rec = self.summary.add(rec)
        self.metrics.write(json.dumps({"t": round(time.monotonic() - self.started, 3), **rec}) + "\n")
        self.metrics.flush()
        now = time.monotonic()
        if rec["type"] == "train" and "eta_s" in rec and now - self.last_report >= self.every_s:
            self.last_report = now
            elapsed = now - self.started
            pct = 100.0 * elapsed / (elapsed + rec["eta_s"]) if elapsed + rec["eta_s"] > 0 else 0.0
            of = rec.get("iters_per_epoch", rec.get("iters_total"))
            self.log(f"progress {pct:.0f}% epoch {rec['epoch']} iter {rec['iter']}/{of} "
                     f"eta {int(rec['eta_s'])} s loss {rec['losses'].get('loss')} "
                     f"ips {rec.get('ips_global')} images/s (all cards)")

    def close(self) -> dict[str, Any]:
        self.metrics.close()
        return {**self.summary.to_dict(), "unparsed_lines": self.parse_errors}


def _resume_args(stage: StageCommand, attempt: int, resume: bool | None, log: Log) -> list[str]:
    """The toolkit's resume flag for the newest complete checkpoint, when this try should resume.

    A retry (attempt > 1) resumes unless ``resume`` is False; a first try only when ``resume`` is True. A try
    that should resume but finds only incomplete checkpoints fails rather than silently starting afresh.
    """
    spec = stage.resume
    want = resume if resume is not None else attempt > 1
    if spec is None:
        if want:
            log(f"warning: the recipe gives {stage.name} no resume block: try {attempt} starts from scratch")
        return []
    ckpt, skipped, existing = find_checkpoint(spec)
    for why in skipped:
        log(f"resume: skipping incomplete checkpoint {why}")
    if not want:
        if existing:
            log(f"warning: {existing} checkpoint(s) match {spec['checkpoints']} but this is try {attempt} and "
                f"resume={resume}: training starts from scratch (set resume=true to continue from them)")
        return []
    if ckpt is None:
        if existing:
            raise StageRefused(f"stage {stage.name}: try {attempt} should resume, but none of the {existing} "
                              f"checkpoint(s) matching {spec['checkpoints']} is complete: {'; '.join(skipped)}")
        log(f"resume: no checkpoint matches {spec['checkpoints']} yet: try {attempt} starts from scratch")
        return []
    args = resume_argv(spec, ckpt)
    if not args:
        log(f"warning: this profile has no resume flag: try {attempt} starts from scratch although "
            f"{ckpt.path} exists")
        return []
    log(f"resume: try {attempt} continues from {ckpt.path} ({' '.join(args)})")
    return args


class _FollowFile(Poller):
    """Feed the lines a toolkit appends to its own log file (MMDetection's ``<ts>.log.json``) to ``consume``.

    Follows the newest file matching ``pattern`` written since the stage started; a new file (the toolkit
    restarted) is followed from its start.
    """

    def __init__(self, pattern: str, since: float, consume: Callable[[str], None], every_s: float = 1.0):
        super().__init__("follow-metrics", every_s)
        self.pattern, self.since, self.consume = pattern, since, consume
        self.path: str | None = None
        self.offset = 0
        self.partial = ""

    def poll(self) -> None:
        files = [p for p in glob.glob(self.pattern) if Path(p).stat().st_mtime >= self.since]
        if not files:
            return
        newest = max(files, key=lambda p: Path(p).stat().st_mtime)
        if newest != self.path:
            self.path, self.offset, self.partial = newest, 0, ""
        with open(newest, encoding="utf-8", errors="replace") as fh:
            fh.seek(self.offset)
            data = fh.read()
            self.offset = fh.tell()
        *lines, self.partial = (self.partial + data).split("\n")
        for line in lines:
            self.consume(line)


class _ExpectLine(Poller):
    """Stops the job when the toolkit has not printed ``pattern`` within ``within_s`` seconds of its start: a
    toolkit that silently fell back to the CPU must fail in its first minute, not after days of training."""

    def __init__(self, spec: dict[str, Any], proc: StageProcess, log: Log):
        super().__init__("expect-line", 0.5)
        self.pattern = re.compile(spec["pattern"])
        self.within_s = float(spec["within_s"])
        self.proc, self.log = proc, log
        self.deadline = time.monotonic() + self.within_s
        self.seen = threading.Event()
        self.fired = False

    def check(self, line: str) -> None:
        if not self.seen.is_set() and self.pattern.search(line):
            self.seen.set()

    def poll(self) -> None:
        if not self.seen.is_set() and not self.fired and time.monotonic() > self.deadline:
            self.fired = True
            self.log(f"no line matching {self.pattern.pattern!r} within {self.within_s:g} s: stopping the job")
            self.proc.terminate(10.0)


def _container_process(stage: StageCommand, argv: list[str], job: str, secret_env: dict[str, str],
                       log: Log) -> StageProcess:
    """The stage's command in its container: the supervisor (``npuflow.container``) runs under the host runner,
    so its process group, PDEATHSIG, stage.log and kill work as for a host command. Credentials reach the
    container through the supervisor's environment, never the spec file."""
    from npuflow.container import describe, write_spec

    spec = {**stage.container, "argv": argv, "cwd": stage.cwd, "job": job, "home": stage.stage_dir,
            "log_path": str(Path(stage.stage_dir) / "stage.log"),
            "env": {**stage.env, **stage.container["env"], JOB_ENV: job}, "pass_env": sorted(secret_env)}
    path = Path(stage.stage_dir) / "container.json"
    write_spec(path, spec)
    log(describe(spec))
    proc = StageProcess([sys.executable, "-m", "npuflow.container", str(path)], env=secret_env, cwd=stage.cwd,
                        log_path=Path(stage.stage_dir) / "stage.log", tail_lines=100, job=job,
                        watch_ranks=registry()[stage.kind].holds_cards)
    proc.find_ranks_by_marker = True  # the ranks are the engine's children, not the supervisor's
    return proc


def _remove_containers(job: str, log: Log) -> None:
    """Whatever the supervisor did not get to remove (it was SIGKILLed): nothing of the job may survive."""
    from npuflow.container import ContainerError, remove_job_containers

    try:
        left = remove_job_containers(job)
    except ContainerError as exc:
        log(f"warning: could not check for containers of {job}: {exc}")
        return
    if left:
        log(f"removed container(s) of this stage that were still there: {', '.join(left)}")


def _fail(stage_dir: Path, result: dict[str, Any], error: StageError) -> NoReturn:
    """Record the failure in result.json (its summary is the error's cause) and raise it."""
    result["summary"] = error.cause.removeprefix(f"stage {result['stage']}: ")
    write_stage_result(stage_dir, result)
    raise error


def job_marker(plan: Plan, stage: StageCommand) -> str:
    """The ``NPUFLOW_JOB`` value of this stage's processes on this node (two nodes may share a host)."""
    return f"{plan.dag_id}/{plan.run_id}/{stage.name}/node{plan.device['node_rank']}"


def launcher_log_dir(argv: list[str], cwd: str) -> Path:
    """Where the stage's launcher writes its per-rank logs: its ``--log_dir`` (paddle) or ``--log-dir``
    (torchrun) as the argv says, else paddle.distributed.launch's default, ``log`` in its working directory."""
    for flag in ("--log_dir", "--log-dir"):
        if flag in argv[:-1]:
            return Path(cwd) / argv[argv.index(flag) + 1]
    return Path(cwd) / "log"


def execute_stage(plan: Plan, stage: StageCommand, *, log: Log, log_format: str,
                  on_start: Callable[[StageProcess], None] | None = None,
                  secret_env: dict[str, str] | None = None, attempt: int = 1,
                  resume: bool | None = None) -> dict[str, Any]:
    """Run ``stage`` of ``plan``; return the summary written to ``<stage_dir>/result.json``.

    Raises :class:`StageRefused` when a retry cannot help and :class:`StageFailed` when it may; both name the
    cause first. ``secret_env`` (credentials) reaches the process only: it is never logged nor written to
    result.json. ``attempt`` is the task's try number: a card-holding stage's retry resumes from its newest
    complete checkpoint. One node of a multi-node stage that fails tells the others (``npuflow.fleet``).
    """
    multi_node = plan.device["nnodes"] > 1 and registry()[stage.kind].per_node
    try:
        return _execute_stage(plan, stage, log=log, log_format=log_format, on_start=on_start,
                              secret_env=secret_env, attempt=attempt, resume=resume, multi_node=multi_node)
    except StageError as exc:
        if multi_node:
            mark_failed(plan.run_dir, stage.name, attempt, plan.device["node_rank"], exc.cause)
        raise


class _SiblingWatch(Poller):
    """Stops this node's job when another node of the same try has failed: the job cannot succeed without it,
    and the collective might only notice at its timeout."""

    def __init__(self, plan: Plan, stage: StageCommand, attempt: int, proc: StageProcess, log: Log):
        super().__init__("sibling-watch", 1.0)
        self.args = (plan.run_dir, stage.name, attempt, plan.device["node_rank"])
        self.proc, self.log = proc, log
        self.failed: list[dict[str, Any]] = []

    def poll(self) -> None:
        if self.failed:
            return
        self.failed = failed_siblings(*self.args)
        if self.failed:
            self.log(f"node {self.failed[0]['node']} of this job failed ({self.failed[0]['cause']}): stopping this node")
            self.proc.terminate(10.0)


def _execute_stage(plan: Plan, stage: StageCommand, *, log: Log, log_format: str,
                   on_start: Callable[[StageProcess], None] | None, secret_env: dict[str, str] | None,
                   attempt: int, resume: bool | None, multi_node: bool) -> dict[str, Any]:
    kind = registry()[stage.kind]
    stage_dir = Path(stage.stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    run = RunContext(plan=plan, stage=stage, inputs=read_inputs(plan, stage, kind), log=log, log_format=log_format)
    job = job_marker(plan, stage)
    argv = list(stage.argv)
    progress = None
    if kind.holds_cards:
        try:
            run_preflight(plan.device, stage.free_disk, job, log, env_path=stage.env.get("PATH"))
        except PreflightError as exc:
            raise (StageFailed if exc.retryable else StageRefused)(f"stage {stage.name}: preflight: {exc}") from None
        run.resumed_with = _resume_args(stage, attempt, resume, log)
        argv += run.resumed_with
    if kind.training_log:
        if log_format in PARSERS:
            progress = _TrainProgress(plan, stage, log, log_format)
        else:
            log(f"no metrics parser for log format {log_format!r} yet: this run records no training metrics")
    kind.before(run)
    log(f"stage {stage.name} ({stage.kind}) try {attempt} in {stage.cwd}: {json.dumps(argv)}")
    if stage.env:
        log(f"env: {json.dumps(stage.env)}")
    # With a metrics file (MMDetection's log.json) the console is only shown; the file is parsed.
    parse_console = progress is not None and stage.metrics_file is None

    if stage.container is not None:
        proc = _container_process(stage, argv, job, secret_env or {}, log)
    else:
        proc = StageProcess(argv, env={**stage.env, **(secret_env or {})}, cwd=stage.cwd,
                            log_path=stage_dir / "stage.log", tail_lines=100, job=job, watch_ranks=kind.holds_cards)
    expect = _ExpectLine(stage.expect_line, proc, log) if stage.expect_line else None
    siblings = _SiblingWatch(plan, stage, attempt, proc, log) if multi_node else None

    def on_line(line: str) -> None:
        log(line)
        if parse_console:
            progress(line)
        if expect is not None:
            expect.check(line)

    if on_start is not None:
        on_start(proc)
    started = time.time()
    for poller in (expect, siblings):
        if poller is not None:
            poller.start()
    follow = None
    if progress is not None and stage.metrics_file is not None:
        follow = _FollowFile(stage.metrics_file, started - 1, progress)
        follow.start()
    try:
        code = proc.run(on_line)
    except FileNotFoundError as exc:
        raise StageRefused(f"stage {stage.name} could not start: {exc}") from exc
    finally:
        for poller in (follow, expect, siblings):
            if poller is not None:
                poller.stop()
        if stage.container is not None:
            _remove_containers(job, log)
        metrics = progress.close() if progress is not None else None
    result: dict[str, Any] = {
        "stage": stage.name, "kind": stage.kind, "attempt": attempt, "argv": argv, "env": stage.env,
        "cwd": stage.cwd, "exit_code": code, "seconds": round(time.time() - started, 3),
        "inputs": {role: [u.name for u in ups] for role, ups in run.inputs.items()}, "ok": False,
    }
    if metrics is not None:
        result["metrics"] = metrics
    tail = "\n".join(list(proc.tail)[-40:])
    if expect is not None and expect.fired:
        reason = stage.expect_line.get("reason")
        _fail(stage_dir, result, StageRefused(
            f"stage {stage.name}: the toolkit printed no line matching {expect.pattern.pattern!r} within "
            f"{expect.within_s:g} s of its start, so it is not running where the recipe says"
            f"{f' ({reason})' if reason else ''}; stopped", log_tail=tail))
    if siblings is not None and siblings.failed and code != 0:
        first = siblings.failed[0]
        _fail(stage_dir, result, StageFailed(
            f"stage {stage.name}: node {first['node']} of this job failed ({first['cause']}), so node "
            f"{plan.device['node_rank']} was stopped with it; a retry reruns every node", log_tail=tail))
    if code != 0:
        result["summary"] = f"command {describe_exit(code)}"  # what result.json says if the kind adds nothing
        why = ""
        if kind.holds_cards:
            log_dir = launcher_log_dir(stage.argv, stage.cwd)
            failure = find_failing_rank(list(proc.tail), log_dir, proc.watch.exits if proc.watch else [],
                                        since=started - 1)
            if failure is not None:
                result["failed_rank"] = {"rank": failure.rank, "local_rank": failure.local_rank,
                                         "how": failure.how, "log": failure.log}
                why = f"; failing {failure.describe()}"
        try:
            kind.collect_failure(run, code)
        except StageError as exc:
            _fail(stage_dir, result, exc)
        cause = cause_line(proc.tail)
        error = StageRefused if code == EXIT_NOT_RETRYABLE else StageFailed
        headline = f"stage {stage.name}: " + (cause or f"command {describe_exit(code)}{why}")
        _fail(stage_dir, result, error(headline, detail=f"command {describe_exit(code)}{why}" if cause else "",
                                       log_tail=tail))

    # c10d assigns ranks in rendezvous order: global rank 0 (which logs the steps and writes the checkpoints)
    # may be on any node.
    ranks_here = {rank for rank, _ in proc.watch.ranks.values()} if proc.watch else set()
    run.hosts_rank0 = not ranks_here or "0" in ranks_here
    outputs = _existing(stage)
    missing = _missing(stage, outputs)
    result["outputs"] = outputs
    if stage.container is None:  # provenance: the versions this stage's Python resolves (a container: its image)
        result["environment"] = probe(argv, stage.env, stage.cwd)
    else:
        from npuflow.container import image_record

        result["environment"] = image_record(stage.stage_dir)
    if missing and run.hosts_rank0:
        _fail(stage_dir, result, StageRefused(
            f"stage {stage.name}: command succeeded but left no {', '.join(missing)}", log_tail=tail))
    if missing:
        log(f"stage {stage.name}: no {', '.join(missing)} on this node: global rank 0 ran on another, which writes them")
    try:
        typed = kind.collect(run, outputs, metrics)
    except StageError as exc:
        _fail(stage_dir, result, exc)
    result.update(ok=True, summary=kind.summary(typed) if typed is not None else "ok",
                  result=typed.to_dict() if typed is not None else None)
    write_stage_result(stage_dir, result)
    log(f"stage {stage.name} done in {result['seconds']} s: {result['summary']}")
    result["xcom"] = kind.xcom(typed) if typed is not None else {}
    result["announced"] = kind.announced(typed, outputs)
    result["withheld"] = kind.withheld(typed)
    return result
