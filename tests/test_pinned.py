"""One plan per run: pinned by the run's first task, read by every later task, refused when the DAG drifted."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from npuflow.pinned import PlanDrift, check_stage, pinned_plan, recipe_digest
from npuflow.plan import Plan, build_plan
from npuflow.recipe import load_recipe, load_recipe_file
from tests.conftest import ROOT, VENV_BIN

YOLOR = "yolor_p6_coco"


def _builder(recipe, params: dict, calls: list[int]):
    def build(node: int) -> Plan:
        calls.append(node)
        return build_plan(recipe, {**params, "node_rank": node} if node else params, run_id="r1")
    return build


def _edited(tmp_path: Path, old: str, new: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{YOLOR}.yaml"
    text = load_recipe(YOLOR).path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    (tmp_path / "datasets").symlink_to(load_recipe(YOLOR).path.parent / "datasets")
    return load_recipe_file(path)


def test_later_tasks_run_the_pinned_plan_not_the_edited_recipe(tmp_path: Path) -> None:
    run_dir, params = tmp_path / "run", {"profile": "smoke"}
    original = load_recipe(YOLOR)
    calls: list[int] = []
    plan, pin = pinned_plan(run_dir, 0, _builder(original, params, calls), recipe=original, params=params, nnodes=1)
    assert calls == [0] and pin["recipe_digest"] == recipe_digest(original)
    edited = _edited(tmp_path / "edited", '    settings: {adapter: "{adapter}"}\n  benchmark_fp32',
                     '    settings: {adapter: "{adapter}", opset: 16}\n  benchmark_fp32')
    assert recipe_digest(edited) != pin["recipe_digest"]
    again, pin2 = pinned_plan(run_dir, 0, _builder(edited, params, calls), recipe=edited, params=params, nnodes=1)
    assert calls == [0]  # nothing rebuilt from the edited recipe
    assert again == plan and pin2 == pin
    assert list(pin2["recipe"]["stages"]) == list(original.stages)  # read back in the recipe's order, not sorted
    assert again.stage("export").argv[again.stage("export").argv.index("--opset") + 1] == "17"
    fresh = build_plan(edited, params, run_id="r2").stage("export").argv  # the next run takes the edit
    assert fresh[fresh.index("--opset") + 1] == "16"


def test_the_first_pin_wins_and_each_node_reads_its_own_plan(tmp_path: Path) -> None:
    recipe, run_dir = load_recipe(YOLOR), tmp_path / "run"
    params = {"profile": "smoke", "nnodes": 2, "rendezvous": "c10d", "master": "10.0.0.1:29400"}
    pinned_plan(run_dir, 0, _builder(recipe, params, []), recipe=recipe, params=params, nnodes=2)
    record = json.loads((run_dir / "plan.json").read_text())
    other = {**params, "epochs": 99}  # a second task that would build something else reads the first's plan
    node1, _ = pinned_plan(run_dir, 1, _builder(recipe, other, []), recipe=recipe, params=other, nnodes=2)
    assert node1.device["node_rank"] == 1 and "99" not in node1.stage("train").argv
    assert json.loads((run_dir / "plan.json").read_text()) == record
    with pytest.raises(PlanDrift, match="has 2 node"):
        pinned_plan(run_dir, 2, _builder(recipe, params, []), recipe=recipe, params=params, nnodes=3)


def test_a_dag_that_no_longer_matches_the_pinned_plan_is_refused_naming_the_difference(tmp_path: Path) -> None:
    recipe, params = load_recipe(YOLOR), {"profile": "smoke"}
    plan, pin = pinned_plan(tmp_path, 0, _builder(recipe, params, []), recipe=recipe, params=params, nnodes=1)
    assert check_stage(plan, pin, "export", {"train", "prepare_dataset"}).name == "export"
    with pytest.raises(PlanDrift, match=r"has no stage 'distill'.*the DAG changed after the run started"):
        check_stage(plan, pin, "distill", set())
    with pytest.raises(PlanDrift, match=r"stage export: .* runs it after \['prepare_dataset', 'train'\], the DAG "
                                        r"after \['compress'\]"):
        check_stage(plan, pin, "export", {"compress"})


@pytest.mark.e2e
def test_a_recipe_edited_while_the_run_trains_applies_to_the_next_run(airflow_env: dict, tmp_path: Path) -> None:
    """Through real Airflow: the edit lands while train runs; export runs the pinned opset, the next run the new."""
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes)
    env = {**airflow_env, "NPUFLOW_RECIPES_DIR": str(recipes)}
    conf = {"profile": "smoke", "epochs": 2, "stages": ["prepare_dataset", "validate_dataset", "train", "export"]}
    cmd = [str(VENV_BIN / "airflow"), "dags", "test", YOLOR]
    run = subprocess.Popen([*cmd, "-c", json.dumps(conf)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    runs = Path(env["NPUFLOW_RUNS_DIR"]) / YOLOR
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/train/stage.log")):
        assert run.poll() is None and time.monotonic() < deadline, run.stdout.read()[-3000:] if run.stdout else ""
        time.sleep(0.5)
    path = recipes / f"{YOLOR}.yaml"
    old = '    settings: {adapter: "{adapter}"}\n  benchmark_fp32'
    path.write_text(path.read_text().replace(old, '    settings: {adapter: "{adapter}", opset: 16}\n  benchmark_fp32'))
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-4000:]
    first = next(runs.iterdir())
    export = json.loads((first / "export" / "result.json").read_text())
    assert export["ok"] and export["argv"][export["argv"].index("--opset") + 1] == "17"

    second = subprocess.run([*cmd, "-c", json.dumps({**conf, "stages": ["prepare_dataset"]})], env=env,
                            capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:]
    later = next(d for d in runs.iterdir() if d != first)
    argv = next(s for s in json.loads((later / "plan.json").read_text())["stages"] if s["name"] == "export")["argv"]
    assert argv[argv.index("--opset") + 1] == "16"
    pins = [json.loads((d / "plan.json").read_text())["pinned"]["recipe_digest"] for d in (first, later)]
    assert pins[0] != pins[1]


def test_the_probe_reports_what_the_stage_interpreter_resolves_with_the_stages_environment(tmp_path: Path) -> None:
    import platform
    import sys

    from npuflow.imports import probe
    from npuflow.toolkits.checkout import checkout_dir

    checkout = checkout_dir("PaddleDetection", "release_2_7_npu")
    env = probe([sys.executable, "tools/train.py", "-c", "x.yml"], {"PYTHONPATH": str(checkout)}, str(tmp_path))
    assert env is not None and env["python"] == platform.python_version()
    assert env["distributions"]["paddlepaddle"].startswith("2.6") and "numpy" in env["distributions"]
    assert Path(env["packages"]["ppdet"]).resolve().is_relative_to(checkout.resolve())
    assert "ppdet" not in probe([sys.executable, "-c", "pass"], {}, str(tmp_path))["packages"]  # not on its path
    assert probe(["/bin/echo", "hi"], {}, str(tmp_path)) is None  # not a Python: nothing to say
