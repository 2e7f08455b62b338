"""Rendering recipes + parameters into argv lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from npuflow.plan import PlanError, build_plan
from npuflow.recipe import RecipeError, list_recipes, load_recipe

PPYOLOE = "ppyoloe_plus_crn_l_80e_coco"


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(PPYOLOE)


def test_cpu_profile_uses_nproc_per_node_and_run_dir_outputs(recipe, tmp_path: Path) -> None:
    plan = build_plan(recipe, {"profile": "smoke"}, run_id="manual__2026-01-01T00:00:00+00:00", runs_root=tmp_path)
    train = plan.stage("train").argv
    assert train[train.index("paddle.distributed.launch") + 1:][:2] == ["--nproc_per_node", "2"]
    assert "--devices" not in train
    run_dir = tmp_path / PPYOLOE / "manual__2026-01-01T00_00_00_00_00"
    assert plan.run_dir == str(run_dir)
    # All -o overrides go behind one -o: ppdet's argparse keeps only the last -o group.
    assert train.count("-o") == 1
    assert f"save_dir={run_dir}/train/output" in train


@pytest.mark.parametrize("value", ["0; touch /tmp/pwned", "$(id)", "`id`", "a b && rm -rf /", "x' \"y"])
def test_param_values_stay_one_literal_argument(recipe, value: str) -> None:
    plan = build_plan(recipe, {"profile": "production", "dataset_root": value}, run_id="t")
    validate = plan.stage("validate_dataset").argv
    assert value in validate
    train = plan.stage("train").argv
    assert f"TrainDataset.dataset_dir={value}" in train


def test_user_values_are_not_expanded_as_templates(recipe) -> None:
    plan = build_plan(recipe, {"dataset_root": "/data/{run_dir}"}, run_id="t")
    assert "/data/{run_dir}" in plan.stage("validate_dataset").argv


def test_overrides_appear_only_when_set(recipe, tmp_path) -> None:
    base = build_plan(recipe, {}, run_id="t", runs_root=tmp_path).stage("train").argv
    run_dir = tmp_path / recipe.dag_id / "t"
    # the run's own folders are always set; nothing else is overridden unless a param says so
    outputs = ["-o", f"save_dir={run_dir}/train/output", f"output_eval={run_dir}/train"]
    assert base[base.index("-o"):] == outputs
    tuned = build_plan(recipe, {"epochs": 3, "batch_size": 4}, run_id="t", runs_root=tmp_path).stage("train").argv
    assert tuned[tuned.index("-o"):] == [*outputs, "epoch=3", "TrainReader.batch_size=4"]


def test_devices_param_selects_cards(recipe) -> None:
    train = build_plan(recipe, {"devices": "4,5,6,7"}, run_id="t").stage("train").argv
    assert train[train.index("--devices") + 1] == "4,5,6,7"
    assert build_plan(recipe, {"device_count": 2}, run_id="t").device["ids"] == [0, 1]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        pytest.param({"epochs": 0}, "minimum", id="zero-epochs"),
        pytest.param({"epochs": "ten"}, "not of type 'integer'", id="epochs-not-int"),
        pytest.param({"devices": "0,0"}, "repeats a card", id="repeated-card"),
        pytest.param({"devices": "0;1"}, "does not match", id="devices-bad-syntax"),
        pytest.param({"devices": "0,1", "device_count": 4}, "is 2 cards but device_count=4", id="count-mismatch"),
        pytest.param({"nnodes": 2}, "needs master", id="multinode-without-master"),
        pytest.param({"nnodes": 2, "node_rank": 2, "master": "10.0.0.1:6170"}, "below nnodes", id="rank-too-high"),
        pytest.param({"profile": "nightly"}, "no profile 'nightly'", id="unknown-profile"),
        pytest.param({"stages": ["train", "deploy"]}, "unknown stage", id="unknown-stage"),
        pytest.param({"iters": 100}, "not used by this recipe", id="param-the-recipe-does-not-use"),
        pytest.param({"eppochs": 3}, "unknown parameter", id="typo-in-key"),
        pytest.param({"profile": "smoke", "devices": "0,1"}, "runs on the CPU", id="card-ids-on-cpu"),
    ],
)
def test_bad_params_are_refused_with_the_reason(recipe, params: dict, message: str) -> None:
    with pytest.raises((PlanError, RecipeError), match=message):
        build_plan(recipe, params, run_id="t")


def test_multinode_launch_args(recipe) -> None:
    train = build_plan(recipe, {"nnodes": 2, "node_rank": 1, "master": "10.0.0.1:6170"}, run_id="t").stage("train").argv
    i = train.index("--master")
    assert train[i:i + 6] == ["--master", "10.0.0.1:6170", "--nnodes", "2", "--rank", "1"]


def test_stage_selection_marks_the_rest_disabled(recipe) -> None:
    plan = build_plan(recipe, {"stages": ["prepare_dataset", "validate_dataset"]}, run_id="t")
    assert [s.name for s in plan.stages if s.enabled] == ["prepare_dataset", "validate_dataset"]


def test_variable_loops_are_reported(tmp_path: Path, monkeypatch) -> None:
    import yaml

    data = yaml.safe_load(Path(load_recipe(PPYOLOE).path).read_text())
    data["vars"]["a"] = "{b}"
    data["vars"]["b"] = "{a}"
    data["stages"]["export"]["argv"].append("{a}")
    (tmp_path / f"{PPYOLOE}.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "datasets").symlink_to(Path(load_recipe(PPYOLOE).path).parent / "datasets")
    monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path))
    with pytest.raises(PlanError, match="loop"):
        build_plan(load_recipe(PPYOLOE), {}, run_id="t")


def test_cli_plan_prints_the_stages_as_json() -> None:
    out = subprocess.run([sys.executable, "-m", "npuflow.cli", "plan", PPYOLOE, "--profile", "production"],
                         capture_output=True, text=True, check=True).stdout
    stages = json.loads(out)["stages"]
    assert [s["name"] for s in stages] == ["prepare_dataset", "validate_dataset", "train", "export", "benchmark_fp32",
                                           "compress", "eval_int8", "benchmark_int8", "report", "gate_fp32",
                                           "gate_int8", "track", "promote_fp32", "promote_int8"]
    assert set(stages[2]) == {"name", "kind", "needs", "argv", "env", "cwd", "resume", "free_disk"}
    assert stages[2]["needs"] == ["validate_dataset"] and stages[5]["needs"] == ["export", "prepare_dataset"]
    assert stages[2]["resume"]["argv"] == ["-r", "{checkpoint_stem}"]  # filled once a checkpoint is chosen


def test_cli_plan_refuses_a_bad_value_with_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "npuflow.cli", "plan", PPYOLOE, "--set", "epochs=-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "epochs" in proc.stderr


@pytest.mark.parametrize(
    ("params", "pool", "slots", "refused"),
    [
        pytest.param({}, "npu_devices", 8, False, id="default-fits"),
        pytest.param({"device_count": 4}, "npu_devices", 8, False, id="fewer-cards-fit"),
        pytest.param({"devices": "0,1,2,3,4,5,6,7,8"}, "npu_devices", 8, True, id="more-cards-than-reserved"),
        pytest.param({"profile": "smoke"}, "npu_devices", 8, False, id="cpu-run-takes-no-npu"),
    ],
)
def test_device_claim_against_the_pool(recipe, params: dict, pool: str, slots: int, refused: bool) -> None:
    from npuflow.plan import device_claim_error

    error = device_claim_error(build_plan(recipe, params, run_id="t").device, pool, slots)
    assert (error is not None) == refused
    if refused:
        assert "reserves only 8 slot(s) of pool 'npu_devices'" in error


@pytest.mark.parametrize("dag_id", list_recipes())
def test_every_variable_the_plan_defines_is_declared_in_the_schema(dag_id: str) -> None:
    from npuflow.plan import _TEMPLATE_PARAMS, BUILTIN_VARIABLES

    recipe = load_recipe(dag_id)
    for profile, spec in recipe.profiles.items():
        plan = build_plan(recipe, {"profile": profile}, run_id="r")
        toolkit = set(recipe.toolkit.variables) if recipe.toolkit else set()  # npuflow/toolkits/: the layout
        own = set(recipe.data["vars"]) | set(spec.get("vars", {})) | set(_TEMPLATE_PARAMS) | toolkit
        assert set(plan.variables) - own <= BUILTIN_VARIABLES, set(plan.variables) - own - BUILTIN_VARIABLES
