"""Render a recipe + run parameters into the exact commands each stage runs.

This is the one place where templates become argv lists. Each argv element is rendered on its own, so a value
with spaces or shell characters stays one literal argument: nothing here is ever given to a shell.
``npuflow plan`` prints what :func:`build_plan` returns, and the Airflow operators run exactly that.
"""

from __future__ import annotations

import json
import os
import string
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from npuflow.kinds import registry
from npuflow.kinds.base import PlanContext, StageKind, Upstream
from npuflow.launch import device_env, job_id, launch_argv, one_card_env
from npuflow.recipe import PROJECT_ROOT, SCHEMA_PATH, Recipe
from npuflow.rundir import run_dir_for
from npuflow.toolkits.checkout import checkout_dir

#: Parameters a user may set (trigger form, REST conf, ``npuflow plan --set``). None means "the profile's".
PARAMS: dict[str, dict[str, Any]] = {
    "profile": {"type": "string", "description": "Recipe profile: production on the NPU servers, smoke on CPU."},
    "stages": {"type": "array", "description": "Stages to run; the others are skipped. Empty: all of them."},
    "device_count": {"type": "integer", "minimum": 1, "maximum": 64,
                     "description": "Cards (or CPU processes) per node. Default: the profile's."},
    "devices": {"type": "string", "pattern": r"^[0-9]+(,[0-9]+)*$",
                "description": "Card ids to use on each node, e.g. 0,1,2,3. Default: 0..device_count-1."},
    "nnodes": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Number of nodes."},
    "node_rank": {"type": "integer", "minimum": 0, "maximum": 63, "description": "This node's rank."},
    "master": {"type": "string", "pattern": r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$",
               "description": "host:port of the rank-0 node, needed when nnodes > 1."},
    "hosts": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.@\-]+$"}, "minItems": 1,
              "description": "Celery queues of the nodes, in node-rank order (default: the deployment's "
                             "NPUFLOW_HOSTS); node k's train task runs on the worker of hosts[k]."},
    "rendezvous": {"type": "string", "enum": ["c10d", "static"],
                   "description": "torchrun multi-node: c10d rendezvous at master (default) or static ranks."},
    "epochs": {"type": "integer", "minimum": 1, "description": "Override the training length in epochs."},
    "iters": {"type": "integer", "minimum": 1, "description": "Override the training length in iterations."},
    "batch_size": {"type": "integer", "minimum": 1, "description": "Override the per-card batch size."},
    "dataset_root": {"type": "string", "minLength": 1, "description": "Dataset folder. Default: the recipe's."},
    "resume": {"type": "boolean",
               "description": "Resume training from the newest complete checkpoint (true) or start afresh (false). "
                              "Default: resume only when the train task is retried."},
    "promotion": {"type": "string", "enum": ["auto", "approval"],
                  "description": "A gated model at least as good as the MLflow champion replaces it at once (auto) or "
                                 "once a person approves in Airflow (approval: no answer in time keeps the "
                                 "champion). Default: the recipe's."},
    "runner": {"type": "string", "enum": ["process", "docker"],
               "description": "Run the stages as host processes or in the profile's container image. Default: the profile's."},
    "image": {"type": "string", "minLength": 1,
              "description": "The stage image when the runner is docker. Default: the recipe's container.image."},
    "toolkit_dir": {"type": "string", "minLength": 1,
                    "description": "Checkout of the toolkit (PaddleDetection, PaddleSeg, ModelZoo). Default: the recipe's."},
}

#: Variables the plan defines for every stage (declared in recipe.schema.json; recipes may not redefine them).
BUILTIN_VARIABLES = frozenset(json.loads(SCHEMA_PATH.read_text())["$defs"]["builtin_variables"]["enum"])

_TEMPLATE_PARAMS = ("epochs", "iters", "batch_size", "dataset_root", "toolkit_dir", "promotion")


class PlanError(ValueError):
    """The recipe and parameters do not give a runnable command; the message says which value is wrong."""


@dataclass
class StageCommand:
    name: str
    kind: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    outputs: dict[str, list[str]] = field(default_factory=dict)
    stage_dir: str = ""
    enabled: bool = True
    execution_timeout_minutes: int | None = None
    resume: dict[str, Any] | None = None
    free_disk: dict[str, Any] | None = None
    metrics_file: str | None = None
    expect_line: dict[str, Any] | None = None
    #: The stages this one consumes (the DAG's edges), and which input role each fills.
    needs: list[str] = field(default_factory=list)
    inputs: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: The kind's own template variables for this stage (e.g. ``act_config``) and its plan-time values for
    #: downstream commands (``model_dir``, ``root``).
    builtins: dict[str, str] = field(default_factory=dict)
    provides: dict[str, str] = field(default_factory=dict)
    #: Where the command runs when the runner is docker (npuflow.container.container_for); None: on the host.
    container: dict[str, Any] | None = None


@dataclass
class Plan:
    dag_id: str
    profile: str
    run_id: str
    run_dir: str
    device: dict[str, Any]
    dataset: dict[str, Any]
    variables: dict[str, str]
    stages: list[StageCommand]
    runner: str = "process"

    def stage(self, name: str) -> StageCommand:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise PlanError(f"{self.dag_id}: no stage {name!r}; stages are {[s.name for s in self.stages]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_set(value: Any) -> bool:
    """The template language's one rule for "unset": null or false. ``{a|b}`` takes the first set value and
    ``when: a`` holds when ``a`` is set; anything else (0, "", a string) is a value."""
    return value is not None and value is not False


class _Literal(str):
    """A value used as is: builtins and user parameters are never expanded as templates."""


class _Vars:
    """Variables resolved lazily and recursively, so a var may be a template over other vars."""

    def __init__(self, raw: dict[str, Any], where: str) -> None:
        self.raw = raw
        self.where = where
        self.cache: dict[str, Any] = {}
        self.stack: list[str] = []

    def value(self, name: str) -> Any:
        if name in self.cache:
            return self.cache[name]
        if name not in self.raw:
            raise PlanError(f"{self.where}: unknown variable {{{name}}}; known: {sorted(self.raw)}")
        if name in self.stack:
            raise PlanError(f"{self.where}: variables refer to each other in a loop: {' -> '.join([*self.stack, name])}")
        self.stack.append(name)
        try:
            raw = self.raw[name]
            templated = isinstance(raw, str) and not isinstance(raw, _Literal)
            value = self.render(raw, f"variable {name}") if templated else raw
        finally:
            self.stack.pop()
        self.cache[name] = value
        return value

    def truthy(self, expr: str) -> bool:
        """``when: v`` holds when ``v`` is set, ``when: "!v"`` when it is unset."""
        negate = expr.startswith("!")
        result = is_set(self.value(expr.lstrip("!")))
        return not result if negate else result

    def render(self, template: str, what: str) -> str:
        out = []
        for literal, name, spec, conv in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            if spec or conv:
                raise PlanError(f"{self.where}: {what}: format specs are not supported in {{{name}}}")
            # ``{a|b}``: the first of a, b that is set, so a user's value can stand in for a default.
            value = next((v for v in map(self.value, name.split("|")) if is_set(v)), None)
            if value is None:
                raise PlanError(f"{self.where}: {what}: variable {{{name}}} is not set for this profile")
            out.append(str(value).lower() if isinstance(value, bool) else str(value))
        return "".join(out)


def _device(recipe: Recipe, profile: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    kind = profile["device"]["kind"]
    count = params.get("device_count") or profile["device"]["count"]
    devices = params.get("devices")
    if devices is not None:
        if kind == "cpu":
            raise PlanError(f"{recipe.dag_id}: devices={devices!r} names cards, but this profile runs on the CPU")
        ids = [int(x) for x in devices.split(",")]
        if len(set(ids)) != len(ids):
            raise PlanError(f"{recipe.dag_id}: devices={devices!r} repeats a card")
        if params.get("device_count") and len(ids) != params["device_count"]:
            raise PlanError(f"{recipe.dag_id}: devices={devices!r} is {len(ids)} cards but device_count={count}")
        count = len(ids)
    else:
        ids = list(range(count))
    nnodes = params.get("nnodes") or 1
    node_rank = params.get("node_rank") or 0
    if node_rank >= nnodes:
        raise PlanError(f"{recipe.dag_id}: node_rank={node_rank} must be below nnodes={nnodes}")
    if nnodes > 1 and not params.get("master"):
        raise PlanError(f"{recipe.dag_id}: nnodes={nnodes} needs master=host:port of the rank-0 node")
    return {"kind": kind, "count": count, "ids": ids, "nnodes": nnodes, "node_rank": node_rank,
            "master": params.get("master"), "rendezvous": params.get("rendezvous")}


def node_stage_dir(stage_dir: Path, device: dict[str, Any], kind: StageKind) -> Path:
    """Node 0 keeps ``<run>/<stage>/`` (what downstream stages read); another node of a per-node stage writes
    its log, metrics and result to ``<run>/<stage>/node<k>/``, so nodes sharing a run folder never collide."""
    return stage_dir / f"node{device['node_rank']}" if kind.per_node and device["node_rank"] else stage_dir


def device_pool(kind: str) -> str:
    """One Airflow pool per device kind; its slots are that kind's cards on the host (see README)."""
    return f"{kind}_devices"


def device_claim_error(device: dict[str, Any], pool: str, pool_slots: int) -> str | None:
    """Why a run may not start under a task that reserved ``pool_slots`` of ``pool``, or None if it may.

    Airflow fixes a task's pool slots when the DAG is parsed, so a run asking for more cards of the pool's
    kind than were reserved would use cards the pool never granted.
    """
    if pool == device_pool(device["kind"]) and device["count"] > pool_slots:
        return (f"this run asks for {device['count']} {device['kind']} cards but the train task reserves only "
                f"{pool_slots} slot(s) of pool {pool!r}; use at most {pool_slots} or change the deployment's "
                f"default profile")
    return None


def _render_args(items: list[Any], vs: _Vars, device: dict[str, Any], what: str) -> list[str]:
    out: list[str] = []
    for item in items:
        if isinstance(item, str):
            out.append(vs.render(item, what))
        elif "launch" in item:
            python = vs.render("{python}", what)
            log_dir = vs.value("launch_log_dir") if "launch_log_dir" in vs.raw else None
            try:
                out += launch_argv(item["launch"], python, item.get("python_args", []), device, log_dir,
                                   job_id(vs.value("dag_id"), vs.value("run_id")), item.get("cpu_share", False))
            except ValueError as exc:
                raise PlanError(f"{vs.where}: {exc}") from None
        elif "when" in item:
            if vs.truthy(item["when"]):
                out += _render_args(item["argv"], vs, device, what)
        elif "each" in item:
            values = vs.value(item["each"])
            if is_set(values) and not isinstance(values, list):
                raise PlanError(f"{vs.where}: {what}: {{each: {item['each']}}} needs a list variable, got {values!r}")
            out += [vs.render(v, what) for v in (values or [])]
        else:
            values = _render_args(item["values"], vs, device, what)
            if values:
                out += [item["flag"], *values]
    return out


def _launchers(items: list[Any], vs: _Vars) -> list[str]:
    """The launchers a stage's rendered argv uses (``{launch: ...}`` items whose ``when`` holds)."""
    found = []
    for item in items:
        if isinstance(item, dict):
            if "launch" in item:
                found.append(item["launch"])
            elif "each" in item:
                continue
            elif "when" not in item or vs.truthy(item["when"]):
                found += _launchers(item.get("argv", []) + item.get("values", []), vs)
    return found


def _referenced(obj: Any) -> set[str]:
    """Every variable name a recipe fragment mentions, in templates and in ``when`` conditions."""
    if isinstance(obj, str):
        return {part for _, name, _, _ in string.Formatter().parse(obj) if name for part in name.split("|")}
    if isinstance(obj, dict):
        names = {obj["when"].lstrip("!")} if isinstance(obj.get("when"), str) else set()
        names |= {obj["each"]} if isinstance(obj.get("each"), str) else set()
        return names.union(*(_referenced(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(_referenced(v) for v in obj))
    return set()


def dataset_expectations(spec: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """What validation holds the dataset to: the spec's full-size counts, or a generated set's own counts."""
    if source["kind"] != "synthetic":
        return spec["expect"]
    expect = {"images": source["images"]}
    if "categories" in source:
        expect["categories"] = source["categories"]
    if "category_ids" in spec["expect"]:
        expect["category_ids"] = spec["expect"]["category_ids"]  # generated ids come from the real id space
    return expect


def check_params(params: dict[str, Any]) -> None:
    """Refuse keys the DAG does not declare (Airflow accepts unknown conf keys silently) and values of the
    wrong type, with the same JSON schema the DAG's Params use."""
    import jsonschema

    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise PlanError(f"unknown parameter(s) {unknown}; allowed: {sorted(PARAMS)}")
    for name, value in params.items():
        if value is None:
            continue
        schema = {k: v for k, v in PARAMS[name].items() if k != "description"}
        try:
            jsonschema.validate(value, schema)
        except jsonschema.ValidationError as exc:
            raise PlanError(f"parameter {name}={value!r}: {exc.message}") from None


def build_plan(recipe: Recipe, params: dict[str, Any] | None = None, *, run_id: str = "manual",
               runs_root: Path | None = None, interpreter: str | None = None) -> Plan:
    """Resolve profile, variables and device layout, then render every stage's argv, env and cwd."""
    params = {k: v for k, v in (params or {}).items() if v is not None and v != []}
    check_params(params)
    profile_name = params.get("profile") or recipe.default_profile
    profile = recipe.profile(profile_name)
    device = _device(recipe, profile, params)
    run_dir = run_dir_for(recipe.dag_id, run_id, runs_root)
    dataset = recipe.dataset
    # A dataset_root given by the user is a dataset already on disk: nothing is downloaded or generated there.
    source = {"kind": "local"} if params.get("dataset_root") else profile["dataset_source"]
    builtins: dict[str, Any] = {
        "dag_id": recipe.dag_id,
        "run_id": run_id,
        "run_dir": str(run_dir),
        "profile": profile_name,
        "interpreter": interpreter or sys.executable,
        # Where that interpreter's installation lives (a venv's base): mounted into smoke-profile containers.
        "interpreter_prefix": sys.base_prefix,
        "project_root": str(PROJECT_ROOT),
        "recipe_file": str(recipe.path),
        "dataset_spec": dataset["name"],
        "dataset_format": dataset["format"],
        "dataset_source": json.dumps(source, sort_keys=True),
        "dataset_expect": json.dumps(dataset_expectations(dataset, source), sort_keys=True),
        # Where the set-up step put the toolkit at the recipe's ref (npuflow.toolkits.checkout).
        "toolkit_checkout": str(checkout_dir(recipe.data["toolkit"]["name"], recipe.toolkit_ref)),
        "device_kind": device["kind"],
        "device_count": device["count"],
        "devices": ",".join(map(str, device["ids"])),
        "world_size": device["count"] * device["nnodes"],
        **{f"split_{k}": v for k, v in dataset["splits"].items()},
    }
    toolkit = recipe.toolkit
    raw: dict[str, Any] = {
        # The toolkit's layout at its ref (where it writes, what a resume reads), over the recipe's own values.
        **(toolkit.variables if toolkit is not None else {}),
        **recipe.data["vars"],
        **profile.get("vars", {}),
        **{k: _Literal(v) if isinstance(v, str) else v for k, v in builtins.items()},
    }
    raw["dataset_dir"] = recipe.data["dataset"]["root"]  # a template over vars: the folder of the dataset
    used = _referenced(recipe.data["stages"]) | _referenced(list(raw.values()))
    for name in _TEMPLATE_PARAMS:
        if name in params:
            if name not in used:
                raise PlanError(f"{recipe.dag_id}: parameter {name!r} is not used by this recipe's commands")
            raw[name] = _Literal(params[name]) if isinstance(params[name], str) else params[name]
        raw.setdefault(name, None)

    selected = params.get("stages") or list(recipe.stages)
    unknown = sorted(set(selected) - set(recipe.stages))
    if unknown:
        raise PlanError(f"{recipe.dag_id}: unknown stage(s) {unknown}; stages are {list(recipe.stages)}")

    plan = Plan(dag_id=recipe.dag_id, profile=profile_name, run_id=run_id, run_dir=str(run_dir), device=device,
                dataset={"spec": dataset["name"], "format": dataset["format"], "source": source,
                         "splits": list(dataset["splits"].values())},
                variables=_resolved(raw, recipe.path.name), stages=[],
                runner=params.get("runner") or profile.get("runner", "process"))
    container_cfg = None
    if plan.runner == "docker":
        container_cfg = {**recipe.data.get("container", {}), **profile.get("container", {})}
        if params.get("image"):
            container_cfg["image"] = params["image"]
        if not container_cfg.get("image"):
            raise PlanError(f"{recipe.dag_id}: runner=docker needs an image: the recipe's container.image, the "
                            f"profile's, or the image parameter")
    elif params.get("image"):
        raise PlanError(f"{recipe.dag_id}: image={params['image']!r} is only used with runner=docker")
    kinds = registry()
    for name in recipe.order:
        plan.stages.append(_stage(plan, recipe, name, kinds[recipe.stages[name]["kind"]], raw, profile, device,
                                  enabled=name in selected, container_cfg=container_cfg))
    return plan


def _stage(plan: Plan, recipe: Recipe, name: str, kind: StageKind, raw: dict[str, Any], profile: dict[str, Any],
           device: dict[str, Any], enabled: bool, container_cfg: dict[str, Any] | None = None) -> StageCommand:
    """One stage's command: the recipe's argv for a toolkit stage, the kind's for a project stage."""
    spec = recipe.stages[name]
    stage_dir = node_stage_dir(Path(plan.run_dir) / name, device, kind)
    where = f"{recipe.path.name} stage {name}"
    vs = _Vars({**raw, "stage_dir": _Literal(stage_dir)}, where)
    built = {s.name: s for s in plan.stages}
    roles = recipe.inputs[name]
    ctx = PlanContext(plan=plan, settings=spec.get("settings", {}), stage_dir=stage_dir,
                      inputs={role: [Upstream(n, built[n]) for n in names] for role, names in roles.items()},
                      render=lambda value, what: vs.render(value, what) if isinstance(value, str) else value)
    builtins = kind.builtin_values(ctx)
    vs = _Vars({**vs.raw, **{k: _Literal(v) for k, v in builtins.items()}}, where)
    env = {k: vs.render(v, f"env.{k}") for k, v in {**profile.get("env", {}), **spec.get("env", {})}.items()}
    command = kind.command(ctx)
    if command is None:
        cwd = vs.render(spec["cwd"], "cwd")
        argv = _render_args(spec["argv"], vs, device, "argv")
        env = {**{k: v for launcher in _launchers(spec["argv"], vs) for k, v in device_env(launcher, device).items()},
               **env}
        outputs = {k: [vs.render(p, f"outputs.{k}") for p in ([v] if isinstance(v, str) else v)]
                   for k, v in spec.get("outputs", {}).items()}
    else:
        cwd, argv, outputs = command.cwd, command.argv, command.outputs
        env = {**command.env, **env}
    if kind.uses_card:
        env = {**one_card_env(device), **env}
    container = None
    if container_cfg is not None and kind.in_container:
        from npuflow.container import container_for

        folders = [plan.run_dir, cwd, *(_value_or_none(vs, v) or "" for v in ("toolkit_dir", "dataset_dir"))]
        # A folder reached through a link (var/toolkits/<name>@<ref> -> the tutorials' checkout) needs its target
        # mounted too, or the link points at nothing inside the container.
        folders += [real for f in folders if f and (real := os.path.realpath(f)) != os.path.normpath(f)]
        container = container_for(container_cfg, device=device, holds_cards=kind.holds_cards, one_card=kind.uses_card,
                                  paths=[f for f in folders if f and Path(f).is_absolute()], render=vs.render)
    return StageCommand(
        name=name, kind=kind.name, container=container, argv=argv, env=env, cwd=cwd, outputs=outputs, stage_dir=str(stage_dir),
        enabled=enabled, execution_timeout_minutes=spec.get("execution_timeout_minutes"),
        resume=_resume(spec.get("resume", recipe.toolkit.resume if kind.training_log and recipe.toolkit else None),
                       vs, device, cwd),
        free_disk=_free_disk(spec.get("free_disk"), vs, cwd),
        metrics_file=_abs(vs.render(spec["metrics_file"], "metrics_file"), cwd) if "metrics_file" in spec else None,
        expect_line=_render_tree(spec["expect_line"], vs, "expect_line") if "expect_line" in spec else None,
        needs=list(spec.get("needs", [])), inputs=roles,
        settings=_render_tree(ctx.settings, vs, "settings"),
        builtins=builtins, provides=kind.provides(ctx, outputs, cwd),
    )


def _value_or_none(vs: _Vars, name: str) -> Any:
    try:
        return vs.value(name) if name in vs.raw else None
    except PlanError:
        return None


def _render_tree(obj: Any, vs: _Vars, what: str) -> Any:
    """A settings block with every string rendered as a template (keys stay as written)."""
    if isinstance(obj, str):
        return vs.render(obj, what)
    if isinstance(obj, dict):
        return {k: _render_tree(v, vs, f"{what}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [_render_tree(v, vs, f"{what}[{i}]") for i, v in enumerate(obj)]
    return obj


def _abs(path: str, cwd: str) -> str:
    return path if Path(path).is_absolute() else str(Path(cwd) / path)


def _resume(spec: dict[str, Any] | None, vs: _Vars, device: dict[str, Any], cwd: str) -> dict[str, Any] | None:
    """The resume block with vars rendered and the checkpoint placeholders left for npuflow.resume."""
    if spec is None:
        return None
    from npuflow.resume import PLACEHOLDERS

    rv = _Vars({**vs.raw, **{p: _Literal("{" + p + "}") for p in PLACEHOLDERS}}, vs.where + " resume")
    return {
        "checkpoints": _abs(rv.render(spec["checkpoints"], "resume.checkpoints"), cwd),
        "companions": [rv.render(c, "resume.companions") for c in spec.get("companions", [])],
        "argv": _render_args(spec["argv"], rv, device, "resume.argv"),
    }


def _free_disk(spec: dict[str, Any] | None, vs: _Vars, cwd: str) -> dict[str, Any] | None:
    if spec is None:
        return None
    gib = spec["gib"]
    value = vs.render(gib, "free_disk.gib") if isinstance(gib, str) else gib
    try:
        return {"path": _abs(vs.render(spec["path"], "free_disk.path"), cwd), "gib": float(value)}
    except ValueError:
        raise PlanError(f"{vs.where}: free_disk.gib must be a number, got {value!r}") from None


def _resolved(raw: dict[str, Any], where: str) -> dict[str, str]:
    """Every variable's value for the record in plan.json; one this profile cannot render shows as ''."""
    shown = _Vars(raw, where)
    out = {}
    for name in sorted(raw):
        try:
            value = shown.value(name)
        except PlanError:
            value = None
        out[name] = "" if value is None else str(value)
    return out
