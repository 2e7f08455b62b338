"""DAG integrity: all five DAGs load with no import errors, import nothing heavy, and carry what users need."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_recipes import EXPECTED_DAGS

# Runs in a fresh interpreter so that sys.modules shows exactly what parsing the DAG files imported.
PROBE = """
import json, sys
from datetime import timedelta
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()},
       "heavy": sorted(m for m in ("paddle", "torch", "numpy", "cv2", "ppdet", "paddleseg") if m in sys.modules),
       "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "schedule": str(dag.schedule), "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "timetable": {"type": type(dag.timetable).__name__, "cron": getattr(dag.timetable, "expression", None),
                      },
        "start_date": str(dag.start_date) if dag.start_date else None,
        "outlets": {t.task_id: [a.uri for a in t.outlets] for t in dag.tasks if t.outlets},
        "tags": sorted(dag.tags), "doc": bool(dag.doc_md), "params": {k: {**dag.params.get_param(k).schema,
                                                                          "description": dag.params.get_param(k).description}
                                                                      for k in dag.params},
        "profile_default": dag.params["profile"],
        "tasks": [(t.task_id, type(t).__name__, t.pool, t.pool_slots, t.trigger_rule, t.retries)
                  for t in dag.topological_sort()],
        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
    }
# What the scheduler does on unpause: its own (decoded) timetable, no run yet, catchup off, half an hour after
# last night's cron time. Seconds from that cron time to the first run it creates: 0 would start last night's now.
import airflow.timetables.trigger as trigger
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
from airflow.timetables.base import TimeRestriction
real_now = trigger.utcnow
for dag_id, dag in bag.dags.items():
    tt = decode_timetable(encode_timetable(dag.timetable))
    fired = tt._align_to_prev(real_now())
    trigger.utcnow = lambda fired=fired: fired + timedelta(minutes=30)
    info = tt.next_dagrun_info(last_automated_data_interval=None, restriction=TimeRestriction(None, None, False))
    out["dags"][dag_id]["first_run_after_unpause"] = (info.run_after - fired).total_seconds()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from tests.conftest import ROOT

    env = {"PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin",
           "AIRFLOW_HOME": str(tmp_path_factory.mktemp("airflow_home"))}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True,
                          check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_all_dags_load_without_import_errors(loaded: dict) -> None:
    assert loaded["errors"] == {}
    assert set(loaded["dags"]) == EXPECTED_DAGS


def test_parsing_imports_no_training_stack(loaded: dict) -> None:
    assert loaded["heavy"] == []


def test_the_trigger_form_groups_the_params_and_offers_no_null_choice(loaded: dict) -> None:
    """What a nightly or ad-hoc run changes first comes first with no section (the form's open group); cards and
    data, then multi-node, runner, image and checkout in sections; runner and rendezvous suggest their values in
    an input left empty for the profile's, instead of an enum whose None the form lists as "null"."""
    import jsonschema

    for dag_id, dag in loaded["dags"].items():
        params = dag["params"]
        assert list(params)[:6] == ["profile", "stages", "epochs", "iters", "batch_size", "resume"], dag_id
        assert all("section" not in params[n] for n in list(params)[:6])
        assert params["device_count"]["section"] == "Cards and dataset"
        for name in ("nnodes", "hosts", "runner", "image", "toolkit_dir"):
            assert params[name]["section"].startswith("Advanced"), (dag_id, name)
        assert not any(None in schema.get("enum", []) for schema in params.values()), dag_id
        runner = {k: v for k, v in params["runner"].items() if k not in ("description", "section")}
        assert runner["examples"] == ["process", "docker"] and "enum" not in runner
        jsonschema.validate(None, runner)
        jsonschema.validate("docker", runner)
        with pytest.raises(jsonschema.ValidationError, match="does not match"):
            jsonschema.validate("dockr", runner)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_dag_shape(loaded: dict, dag_id: str) -> None:
    dag = loaded["dags"][dag_id]
    assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert dag["schedule"] != "None" and dag["doc"] and dag["tags"]
    assert dag["profile_default"] == "production"
    for name in ("profile", "devices", "device_count", "nnodes", "epochs", "batch_size", "dataset_root",
                 "toolkit_dir", "stages"):
        assert name in dag["params"], name
        assert dag["params"][name].get("description")
    tasks = {t[0]: t for t in dag["tasks"]}
    assert next(iter(tasks)) == "prepare_dataset"
    assert list(tasks)[-8:] == ["report", "gate_fp32", "gate_int8", "track", "promote_fp32", "approve_promote_fp32",
                                "promote_int8", "approve_promote_int8"]
    assert tasks["approve_promote_fp32"][1] == "PromotionApproval"
    assert tasks["approve_promote_fp32"][5] == 2  # it asks again when an answer did not take effect
    _, operator, pool, slots, *_ = tasks["train"]
    assert operator == "RecipeStageOperator"
    assert pool == "npu_devices" and slots in (4, 8)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAGS))
def test_nightly_schedule_waits_for_the_next_night(loaded: dict, dag_id: str) -> None:
    """Unpausing half an hour after the nightly time must not start last night's (all-cards) run at once:
    Airflow's ``run_immediately=False`` does (it means "within 10% of the period"), ``timedelta(0)`` does not."""
    from npuflow.recipe import load_recipe

    dag = loaded["dags"][dag_id]
    assert dag["timetable"] == {"type": "CronTriggerTimetable", "cron": load_recipe(dag_id).data["schedule"]}
    assert dag["first_run_after_unpause"] == 24 * 3600
    assert dag["start_date"] is None


def test_the_promote_stages_declare_the_model_assets(loaded: dict) -> None:
    """A model asset is updated by the stage that made the gated model the champion, never by its export or a
    gate (a model that passes its gates but scores below the champion must not reach a deployment)."""
    outlets = {d: v["outlets"] for d, v in loaded["dags"].items()}
    for dag_id in EXPECTED_DAGS:
        assert outlets[dag_id] == {  # the approval task emits it when a person approves a proposed champion
            "promote_fp32": [f"model://{dag_id}/exported"], "approve_promote_fp32": [f"model://{dag_id}/exported"],
            "promote_int8": [f"model://{dag_id}/compressed"],
            "approve_promote_int8": [f"model://{dag_id}/compressed"]}


def test_pool_slots_follow_the_cards_of_the_default_profile(loaded: dict) -> None:
    slots = {d: next(t[3] for t in v["tasks"] if t[0] == "train") for d, v in loaded["dags"].items()}
    assert slots["ppyoloe_plus_crn_l_80e_coco"] == 8
    assert slots["deeplabv3p_resnet50_os8_cityscapes_1024x512_80k"] == 4


def test_airflow_cli_lists_the_dags_and_no_import_errors(airflow_env: dict) -> None:
    from tests.conftest import VENV_BIN

    airflow = str(VENV_BIN / "airflow")
    subprocess.run([airflow, "dags", "reserialize"], env=airflow_env, check=True, capture_output=True)
    listed = subprocess.run([airflow, "dags", "list", "-o", "json"], env=airflow_env, check=True,
                            capture_output=True, text=True).stdout
    assert {d["dag_id"] for d in json.loads(listed)} == EXPECTED_DAGS
    errors = subprocess.run([airflow, "dags", "list-import-errors", "-o", "json"], env=airflow_env,
                            capture_output=True, text=True)
    assert errors.returncode == 0, errors.stdout + errors.stderr


@pytest.mark.parametrize("dag_id", ["picodet_s_416_coco_npu_qat", "ppyoloe_plus_crn_l_80e_coco"])
def test_the_dag_follows_the_needs_edges_fan_out_and_fan_in(loaded: dict, dag_id: str) -> None:
    """Not a chain: the export fans out to the FP32 benchmark and the compression; the report joins both."""
    up = loaded["dags"][dag_id]["upstream"]
    assert up["benchmark_fp32"] == ["export", "prepare_dataset"]
    assert up["compress"] == ["export", "prepare_dataset"]
    assert up["benchmark_int8"] == ["compress", "prepare_dataset"]
    assert up["eval_int8"] == ["compress", "prepare_dataset"]
    assert up["report"] == ["benchmark_fp32", "benchmark_int8", "eval_int8"]
    tasks = {t[0]: t for t in loaded["dags"][dag_id]["tasks"]}
    # The stages that hold cards take the profile's cards from the device pool; those that run on one card (an
    # inference, an evaluation) take one slot; the project's bookkeeping takes none.
    assert {name: t[3] for name, t in tasks.items() if t[2] == "npu_devices"} == {
        "train": 4 if dag_id.startswith("picodet") else 8, "compress": 4 if dag_id.startswith("picodet") else 8,
        "benchmark_fp32": 1, "benchmark_int8": 1, "eval_int8": 1}
