"""Build one Airflow DAG from one recipe. Imported by the files in ``dags/`` at parse time: keep it light
(no paddle, torch, numpy or cv2 here or in anything it imports)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Asset, CronTriggerTimetable, Param
from npuflow.operators.approval import PromotionApproval
from npuflow.operators.stage import RecipeStageOperator

from npuflow.fleet import HOSTS_KEY, deployment_hosts
from npuflow.kinds import kind
from npuflow.plan import PARAMS, device_pool
from npuflow.recipe import Recipe, load_recipe


def model_asset(dag_id: str, name: str) -> Asset:
    """The Airflow Asset a stage updates, e.g. ``model://ppyoloe_plus_crn_l_80e_coco/exported``: deployment
    DAGs scheduled on it run when a new model is exported."""
    return Asset(f"model://{dag_id}/{name}")


def nightly(recipe: Recipe) -> CronTriggerTimetable | None:
    """The recipe's cron, and no start date: unpausing a DAG waits for the next night instead of starting last
    night's (hours-long, all-cards) run at once. ``run_immediately=timedelta(0)``, not ``False``: Airflow reads
    ``False`` like ``None`` (start last night's run when unpaused within a tenth of the period, 2.4 h)."""
    cron = recipe.data["schedule"]
    if cron is None:
        return None
    return CronTriggerTimetable(cron, timezone=recipe.data.get("timezone", "UTC"), run_immediately=timedelta(0))


#: The trigger form's groups (Airflow's Param ``section``), in the form's order. What a nightly or an ad-hoc run
#: changes first has no section, so it is the form's first, open group.
SECTIONS = {
    "Cards and dataset": ("device_count", "devices", "dataset_root"),
    "Advanced: several nodes, containers, another checkout": ("nnodes", "node_rank", "master", "hosts", "rendezvous",
                                                              "runner", "image", "toolkit_dir"),
}


def dag_params(recipe: Recipe) -> dict[str, Param]:
    """Typed params for the trigger form and REST conf; None means "the profile's value"."""
    section_of = {name: section for section, names in SECTIONS.items() for name in names}
    params: dict[str, Param] = {}
    for name in sorted(PARAMS, key=lambda n: list(SECTIONS).index(section_of[n]) + 1 if n in section_of else 0):
        spec = dict(PARAMS[name])
        description = spec.pop("description")
        if name in section_of:
            spec["section"] = section_of[name]
        if name == "profile":
            profiles = recipe.profiles
            described = "; ".join(f"{p}: {v['description']}" for p, v in profiles.items())
            params[name] = Param(recipe.default_profile, type="string", enum=sorted(profiles),
                                 description=f"{description} ({described})")
        elif name == "stages":
            # Nullable, or the trigger form marks the list required and an empty list cannot be submitted.
            params[name] = Param(None, type=["array", "null"], items={"type": "string", "enum": list(recipe.stages)},
                                 uniqueItems=True, description=f"{description} Stages: {', '.join(recipe.stages)}.")
        else:
            if "enum" in spec:
                # The form offers the choices as suggestions of an input left empty for "the profile's" (an enum
                # would need None among them, which the form lists as a "null" choice); the pattern still refuses
                # anything else before a run starts.
                choices = spec.pop("enum")
                spec.update(examples=choices, pattern=f"^({'|'.join(choices)})$")
            params[name] = Param(None, type=[spec.pop("type"), "null"], description=description, **spec)
    return params


def build_dag(dag_id: str) -> DAG:
    recipe = load_recipe(dag_id)
    data = recipe.data
    default_device = recipe.profile(recipe.default_profile)["device"]
    doc = [f"# {data['title']}", "", data.get("description", ""), "",
           f"Recipe: `recipes/{dag_id}.yaml` (toolkit {data['toolkit']['name']} @ {data['toolkit']['ref']}). "
           f"See what a trigger will run with `npuflow plan {dag_id} --profile <profile>`.", "",
           "| stage | what it does |", "| --- | --- |"]
    doc += [f"| {name} | {spec.get('description') or kind(spec['kind']).description} |"
            for name, spec in recipe.stages.items()]
    with DAG(
        dag_id=dag_id,
        description=data["title"],
        schedule=nightly(recipe),
        catchup=False,
        max_active_runs=1,
        tags=data.get("tags", []),
        doc_md="\n".join(doc),
        params=dag_params(recipe),
        default_args={"owner": "ml-platform", "retries": 0},
    ) as dag:
        tasks = {}
        hosts = deployment_hosts()  # the fleet (NPUFLOW_HOSTS): a per-node stage becomes one task per host
        for name in recipe.order:  # every stage after the stages it needs: the DAG follows the needs edges
            spec = recipe.stages[name]
            extra: dict[str, Any] = {}
            if kind(spec["kind"]).holds_cards:
                # Slots = the cards the deployment's default profile uses; see docs/architecture.md.
                extra.update(pool=device_pool(default_device["kind"]), pool_slots=default_device["count"])
            elif kind(spec["kind"]).uses_card:  # an inference or evaluation on one card claims that card
                extra.update(pool=device_pool(default_device["kind"]), pool_slots=1)
            if "retries" in spec:  # a retried card-holding stage resumes from its newest complete checkpoint
                extra.update(retries=spec["retries"], retry_delay=timedelta(seconds=spec.get("retry_delay_seconds", 60)))
            if spec.get("assets"):
                extra["outlets"] = [model_asset(dag_id, asset) for asset in spec["assets"]]
            if "execution_timeout_minutes" in spec:
                extra["execution_timeout"] = timedelta(minutes=spec["execution_timeout_minutes"])
            common = dict(task_id=name, recipe_id=dag_id, stage=name, stage_kind=spec["kind"],
                          doc_md=spec.get("description") or kind(spec["kind"]).description,
                          trigger_rule="all_done" if kind(spec["kind"]).runs_after_failures else "none_failed", **extra)
            if kind(spec["kind"]).per_node and len(hosts) > 1:
                # Node rank = map index; npuflow.operators.policy routes index k to host k's queue.
                tasks[name] = RecipeStageOperator.partial(**common, executor_config={HOSTS_KEY: hosts}).expand(
                    node_rank=list(range(len(hosts))))
            else:
                tasks[name] = RecipeStageOperator(**common)
            for need in spec.get("needs", []):
                tasks[need] >> tasks[name]
            if kind(spec["kind"]).approval:  # a person finishes what the stage proposes (a new champion)
                approve = PromotionApproval(
                    task_id=f"approve_{name}", promote_task=name, outlets=extra.get("outlets", []),
                    timeout_hours=float(spec.get("settings", {}).get("approval_timeout_hours", 24)),
                    trigger_rule="none_failed", doc_md=f"A person's approval of what {name} proposes (its "
                                                       "promotion param: approval); skipped when there is none.")
                tasks[name] >> approve
    return dag
