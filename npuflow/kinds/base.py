"""What a stage kind is: one component that says what it consumes, what it produces and whether it holds cards.

A kind is plain Python (no Airflow, nothing heavy at import: DAG files load the registry at parse time). The
plan asks it for the command of a project stage (toolkit stages keep the recipe's argv, which the golden test
holds to the tutorials), the executor asks it what must hold before the command and what the command left
behind, the DAG factory asks whether it takes cards from the device pool, and the report asks it which numbers
it measured. Stages hand results on by the upstream stage's *name*: ``needs: [export]`` binds the export
stage's typed result to one of the consumer's roles, by the result's type.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from npuflow.errors import StageRefused

if TYPE_CHECKING:
    from collections.abc import Callable

    from npuflow.plan import Plan, StageCommand

    Log = Callable[[str], None]


@dataclass
class Result:
    """A stage's typed result, stored under ``result`` in ``<stage_dir>/result.json``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class DatasetResult(Result):
    root: str
    source: str
    format: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ValidationResult(Result):
    ok: bool
    counts: dict[str, Any]
    warnings: int = 0
    problems: str = ""
    content: dict[str, Any] = field(default_factory=dict)  # digest of the files, and how many were read for it


@dataclass
class TrainResult(Result):
    metrics: dict[str, Any]
    outputs: dict[str, str]


@dataclass
class ModelResult(Result):
    """An inference model on disk: the FP32 export or a compressed one."""

    model_dir: str
    files: dict[str, str]
    precision: str  # fp32 | int8
    size_mb: float  # the weights file (params); the program is not counted
    quantize_ops: int = 0  # quantize/dequantize ops in the program: > 0 only for a really quantized model
    source: str | None = None  # the upstream stage whose model this one was made from
    metric: float | None = None  # the toolkit's own score of this model (ACT's final metric), if it printed one


@dataclass
class BenchmarkResult(Result):
    model_stage: str
    precision: str
    size_mb: float
    latency_ms: dict[str, float]
    throughput_ips: float
    accuracy: dict[str, Any]
    settings: dict[str, Any]


@dataclass
class ReportResult(Result):
    json: str
    markdown: str


@dataclass(frozen=True)
class Role:
    """An input of a kind: filled by the ``needs`` whose stage produces ``result`` (one unless ``many``)."""

    result: type[Result]
    required: bool = True
    many: bool = False


@dataclass
class Upstream:
    """One named upstream stage as the consumer sees it: its planned command and, at run time, its result."""

    name: str
    command: StageCommand
    result: Result | None = None


class _Inputs:
    inputs: dict[str, list[Upstream]]

    def one(self, role: str) -> Upstream | None:
        """The upstream filling a single input ``role``, or None when an optional role is empty."""
        found = self.inputs.get(role) or []
        return found[0] if found else None


@dataclass
class PlanContext(_Inputs):
    """What a kind may use to build its command: the plan so far, its own settings, its upstreams by role."""

    plan: Plan
    settings: dict[str, Any]
    stage_dir: Path
    inputs: dict[str, list[Upstream]]
    render: Callable[[Any, str], Any]

    def var(self, name: str) -> str:
        return self.plan.variables[name]

    def setting(self, key: str, default: Any = None) -> Any:
        """A setting of the stage with its templates rendered (``"{adapter}"`` -> the var's value)."""
        return self.render(self.settings[key], f"settings.{key}") if key in self.settings else default


@dataclass
class RunContext(_Inputs):
    """What a kind sees when its stage runs: the plan, the stage, its upstreams with their results."""

    plan: Plan
    stage: StageCommand
    inputs: dict[str, list[Upstream]]
    log: Log
    hosts_rank0: bool = True  # c10d assigns ranks in rendezvous order: global rank 0 may be on another node
    resumed_with: list[str] = field(default_factory=list)  # the resume flag this try added (empty: from scratch)
    log_format: str = ""  # the recipe's: which npuflow.logparse parser reads the toolkit's lines

    @property
    def stage_dir(self) -> Path:
        return Path(self.stage.stage_dir)


@dataclass
class Command:
    """A project stage's command, built in code from the stage's settings and its upstreams."""

    argv: list[str]
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, list[str]] = field(default_factory=dict)


class StageKind:
    """Base of every kind. Subclasses set the class attributes and override what differs."""

    name: ClassVar[str]
    #: One line for the DAG docs and ``npuflow recipes``.
    description: ClassVar[str] = ""
    #: The stage runs the toolkit's own command, from the recipe's ``argv`` (golden-tested); else :meth:`command`.
    toolkit: ClassVar[bool] = False
    #: Takes cards: device pool + ``pool_slots``, preflight, rank watch, failing-rank naming, resume.
    holds_cards: ClassVar[bool] = False
    #: Runs on one card of the device kind (an inference, an evaluation): it claims one slot of the device pool
    #: and is given the first card of the layout (mapped into its container, made its card 0 by the
    #: runtime's visible-devices variable). A stage that ``holds_cards`` claims all of them instead.
    uses_card: ClassVar[bool] = False
    #: The stage's log is a training log: parsed into metrics.jsonl with the recipe's ``log_format``.
    training_log: ClassVar[bool] = False
    produces: ClassVar[type[Result] | None] = None
    consumes: ClassVar[dict[str, Role]] = {}
    #: JSON schema of the stage's ``settings`` block in the recipe (values only; templates over vars allowed).
    settings_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False}
    #: Names this kind measures, for the recipe's ``published.<m>.measured_as: <stage>.<name>``.
    metrics: ClassVar[tuple[str, ...]] = ()
    #: Variables this kind adds to its stage's templates (name -> what it is), e.g. ``{act_config}``.
    builtins: ClassVar[dict[str, str]] = {}
    ui_color: ClassVar[str] = "#e8f0fe"
    #: Runs once its upstreams are done, failed ones included (the report: a failed night still gets its report,
    #: and the gates after it fail on what was not measured). Else it runs only when none of them failed.
    runs_after_failures: ClassVar[bool] = False
    #: With the docker runner, the stage runs in the profile's image (the toolkit, its interpreter, the cards).
    #: False for the project's own bookkeeping (fetching data, validating it, the report, the gates), which runs
    #: where Airflow runs.
    in_container: ClassVar[bool] = True
    #: The DAG gets an ``approve_<stage>`` task after the stage (operators/approval.py): a person's answer in
    #: Airflow finishes what the stage proposed (a promotion).
    approval: ClassVar[bool] = False
    #: With ``nnodes > 1`` on a fleet (``NPUFLOW_HOSTS``), the stage is one mapped task per node, each routed
    #: to its host's Celery queue (the toolkit's launcher spans the nodes: training).
    per_node: ClassVar[bool] = False

    # -- plan time -------------------------------------------------------------------------------------
    def command(self, ctx: PlanContext) -> Command | None:
        """The argv of a project stage; None for a toolkit stage (the recipe's argv is rendered)."""
        return None

    def builtin_values(self, ctx: PlanContext) -> dict[str, str]:
        """Values of :attr:`builtins` for this stage."""
        return {}

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        """Plan-time values downstream commands are built from (a model's folder, a dataset's root)."""
        return {}

    def connection(self, recipe_data: dict[str, Any], plan: Plan) -> str | None:
        """The Airflow Connection whose secrets the stage's process needs (a download behind a login, MLflow)."""
        return None

    def connection_env(self, conn: Any) -> dict[str, str]:
        """That Connection as environment of the stage's process only (never argv or the task log)."""
        return {}

    # -- run time --------------------------------------------------------------------------------------
    def before(self, run: RunContext) -> None:
        """Work in code before the command (writing a per-run config); raise StageRefused if it cannot start."""

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: dict[str, Any] | None) -> Result | None:
        """Read what the command left into the typed result; raise StageRefused when it is not usable."""
        return None

    def collect_failure(self, run: RunContext, exit_code: int) -> None:
        """A chance to turn a failed command's own report into a better error (validation's problems)."""

    def summary(self, result: Result | None) -> str:
        return "ok"

    def measured(self, result: Result) -> dict[str, float]:
        """This stage's numbers under the kind's :attr:`metrics` names."""
        return {}

    def xcom(self, result: Result) -> dict[str, Any]:
        """Extra XCom entries the operator pushes (key -> JSON value)."""
        return {}

    def withheld(self, result: Result | None) -> str | None:
        """Why this stage's assets get no event this time (a model that did not become the champion): the task
        ends skipped with that reason; None announces as usual."""
        return None

    def announced(self, result: Result | None, outputs: dict[str, str]) -> dict[str, str]:
        """The files the events of this stage's assets point at (``extra["outputs"]``): its own outputs, unless
        the stage vouches for another stage's model (a gate)."""
        return outputs


def model_dir_provided(outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
    """A model-producing stage's plan-time ``model_dir``: the folder of its declared ``params`` output."""
    params = outputs.get("params")
    return {"model_dir": str((Path(cwd) / params[0]).parent)} if params else {}


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A file the command had to write; missing or unreadable is not something a retry fixes."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageRefused(f"{what}: cannot read {path}: {exc}") from None


def files_mb(paths: list[str]) -> float:
    return round(sum(Path(p).stat().st_size for p in paths if Path(p).is_file()) / 1e6, 3)
