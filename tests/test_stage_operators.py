"""The Airflow operators' own logic: credentials from a Connection reach the download, nothing else."""

from __future__ import annotations

import json

import pytest
from npuflow.operators.stage import RecipeStageOperator

from npuflow.plan import build_plan
from npuflow.recipe import load_recipe

CITYSCAPES = "deeplabv3p_resnet50_os8_cityscapes_1024x512_80k"


def _operator(recipe_id: str) -> RecipeStageOperator:
    return RecipeStageOperator(task_id="prepare_dataset", recipe_id=recipe_id, stage="prepare_dataset",
                               stage_kind="prepare_dataset")


def test_login_comes_from_the_connection_the_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CITYSCAPES_LOGIN",
                       json.dumps({"conn_type": "http", "login": "alice", "password": "pass word; $(id)"}))
    op = _operator(CITYSCAPES)
    plan = build_plan(load_recipe(CITYSCAPES), {}, run_id="r")
    env = op.secret_env(plan)
    assert env == {"NPUFLOW_DATASET_USER": "alice", "NPUFLOW_DATASET_PASSWORD": "pass word; $(id)"}
    stage = plan.stage("prepare_dataset")
    assert "alice" not in json.dumps([stage.argv, stage.env])  # never in the argv or the logged env


def test_no_credentials_for_a_dataset_on_disk_or_without_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CITYSCAPES_LOGIN", json.dumps({"conn_type": "http", "login": "a", "password": "b"}))
    on_disk = build_plan(load_recipe(CITYSCAPES), {"dataset_root": "/data/cityscapes"}, run_id="r")
    assert _operator(CITYSCAPES).secret_env(on_disk) == {}
    coco = build_plan(load_recipe("ppyoloe_plus_crn_l_80e_coco"), {}, run_id="r")
    assert _operator("ppyoloe_plus_crn_l_80e_coco").secret_env(coco) == {}


def test_a_missing_connection_is_left_to_the_stage_to_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CITYSCAPES_LOGIN", raising=False)
    plan = build_plan(load_recipe(CITYSCAPES), {}, run_id="r")
    assert _operator(CITYSCAPES).secret_env(plan) == {}  # prepare then fails naming 'cityscapes_login'
