"""The stage executor's contract on real child processes: failures name the cause and keep what was good."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from npuflow.errors import StageFailed, StageRefused
from npuflow.execute import execute_stage
from npuflow.plan import build_plan
from npuflow.recipe import load_recipe
from npuflow.rundir import read_stage_result
from tests.conftest import ROOT

TRAIN_LINE = ("Epoch: [0] [0/1] learning_rate: 0.001 loss: {loss} loss_cls: 0.5 eta: 0:00:01 batch_cost: 0.1 "
              "data_cost: 0.0 ips: 5.0 images/s")
# A trainer stand-in: prints ppdet-format lines, writes the checkpoint the recipe expects, exits with {code}.
TRAINER = (
    "import os, sys\n"
    "print({line!r}, flush=True)\n"
    "if {write}: os.makedirs('out', exist_ok=True); open('out/best.pdparams', 'w').write('w')\n"
    "sys.exit({code})\n"
)


def _recipe(tmp_path: Path, monkeypatch, *, loss: str = "1.5", code: int = 0, write: bool = True):
    recipe = {
        "dag_id": "toy", "title": "toy", "tutorial": "none", "schedule": None,
        "toolkit": {"name": "t", "repository": "r", "ref": "x"},
        "dataset": {"spec": "coco2017", "root": "{run_dir}/dataset"},
        "log_format": "ppdet", "published": {}, "default_profile": "cpu",
        "vars": {"python": "{interpreter}"},
        "profiles": {"cpu": {"description": "d", "device": {"kind": "cpu", "count": 1},
                             "dataset_source": {"kind": "synthetic", "images": {"train2017": 2, "val2017": 1},
                                                "categories": 2, "image_size": [64, 64]}}},
        "stages": {
            "prepare_dataset": {"kind": "prepare_dataset"},
            "validate_dataset": {"kind": "validate_dataset", "needs": ["prepare_dataset"]},
            "train": {"kind": "train", "needs": ["validate_dataset"], "cwd": "{stage_dir}",
                      "outputs": {"best_model": "out/best.pdparams"},
                      "argv": ["{python}", "-c", TRAINER.format(line=TRAIN_LINE.format(loss=loss), code=code,
                                                                write=write)]},
        },
    }
    shutil.copytree(ROOT / "recipes" / "datasets", tmp_path / "recipes" / "datasets")
    (tmp_path / "recipes" / "toy.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path / "recipes"))
    plan = build_plan(load_recipe("toy"), {}, run_id="r1", runs_root=tmp_path / "runs")
    Path(plan.stage("train").stage_dir).mkdir(parents=True)
    return plan


def _run(plan, name: str) -> dict:
    return execute_stage(plan, plan.stage(name), log=lambda _: None, log_format="ppdet")


def test_stages_run_and_record_results(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    for name in ("prepare_dataset", "validate_dataset", "train"):
        _run(plan, name)
    result = read_stage_result(plan.run_dir, "train")
    assert result["ok"] and result["metrics"]["losses_finite"]
    assert result["metrics"]["last_losses"] == {"loss": 1.5, "loss_cls": 0.5}
    assert result["outputs"]["best_model"].endswith("out/best.pdparams")
    lines = (Path(plan.stage("train").stage_dir) / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["ips_global"] == 5.0


def test_crash_names_exit_code_and_log_tail(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch, code=7)
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    with pytest.raises(StageFailed, match=r"exited with code 7(.|\n)*Epoch: \[0\]"):
        _run(plan, "train")
    assert read_stage_result(plan.run_dir, "train")["ok"] is False
    # What was good stays good.
    assert read_stage_result(plan.run_dir, "validate_dataset")["ok"] is True


def test_nan_loss_fails_the_stage(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch, loss="nan")
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    with pytest.raises(StageRefused, match="non-finite loss"):
        _run(plan, "train")


def test_missing_output_fails_even_on_exit_0(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch, write=False)
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    with pytest.raises(StageRefused, match=r"left no best_model \(out/best.pdparams\)"):
        _run(plan, "train")


def test_training_refuses_a_dataset_that_failed_validation(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    _run(plan, "prepare_dataset")
    next(Path(plan.run_dir, "dataset", "train2017").glob("*.jpg")).unlink()
    with pytest.raises(StageRefused, match="missing_image_file"):
        _run(plan, "validate_dataset")
    with pytest.raises(StageRefused, match="cannot start, validate_dataset did not succeed: "
                                           "dataset problems: missing_image_file x1"):
        _run(plan, "train")
    assert not (Path(plan.stage("train").stage_dir) / "stage.log").exists()  # no trainer was started


def test_training_needs_a_validation_result_when_validation_is_selected(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    with pytest.raises(StageRefused, match="has no result"):
        _run(plan, "train")


def test_declared_output_missing_is_named_before_reading_it(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    # The prepare stage's dataset.json is read after the command; a command that writes nothing must fail
    # with the missing output named, not with a file-not-found from reading it.
    stage = plan.stage("prepare_dataset")
    stage.argv = [stage.argv[0], "-c", "pass"]
    stage.outputs = {"dataset": [f"{stage.stage_dir}/dataset.json"]}
    with pytest.raises(StageRefused, match="left no dataset"):
        _run(plan, "prepare_dataset")


MMDET_WRITER = """
import json, time
from pathlib import Path
Path("work").mkdir(exist_ok=True)
with open("work/20261123_010203.log.json", "w") as fh:
    fh.write(json.dumps({"env_info": "x", "seed": 0}) + "\\n")
    for it in (50, 100):
        fh.write(json.dumps({"mode": "train", "epoch": 1, "iter": it, "lr": 0.002, "time": 0.5,
                             "loss_cls": 1.2, "loss_bbox": 0.4, "loss": 1.6}) + "\\n")
        fh.flush()
        print("console line the parser must not see: Epoch: [9] [1/2] loss: 99.0", flush=True)
        time.sleep(1.2)
    fh.write(json.dumps({"mode": "val", "epoch": 1, "iter": 100, "bbox_mAP": 0.251}) + "\\n")
"""


def test_a_metrics_file_is_followed_during_training_instead_of_the_console(tmp_path: Path, monkeypatch) -> None:
    plan = _recipe(tmp_path, monkeypatch)
    for name in ("prepare_dataset", "validate_dataset"):
        _run(plan, name)
    stage = plan.stage("train")
    stage.argv = [stage.argv[0], "-c", MMDET_WRITER]
    stage.outputs = {}
    stage.metrics_file = f"{stage.stage_dir}/work/*.log.json"
    result = execute_stage(plan, stage, log=lambda _: None, log_format="mmdet_json")
    assert result["metrics"]["train_steps"] == 2
    assert result["metrics"]["last_losses"] == {"loss_cls": 1.2, "loss_bbox": 0.4, "loss": 1.6}
    assert result["metrics"]["eval"]["bbox_map"] == 0.251
