"""The compress kind on real child processes: what it writes before ACT, what it checks after.

The pattern for a kind's own tests: plan the stage from a real recipe, put the upstream results the kind
consumes into the run directory, run :func:`execute_stage` with the stage's command swapped for a small real
program, and assert on the typed result and on the refusal when the output is not what the kind promises.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.kinds.base import DatasetResult, ModelResult
from npuflow.plan import build_plan
from npuflow.recipe import load_recipe
from npuflow.rundir import write_stage_result

PICODET = "picodet_s_416_coco_npu_qat"

# Stands in for run.py: reads the config the kind wrote, writes a program (with or without quantize ops) where
# --save_dir says, and prints ACT's last line.
ACT = """
import sys, yaml
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
cfg = yaml.safe_load(open(args["--config_path"]))
assert Path(cfg["Global"]["model_dir"], cfg["Global"]["model_filename"]).is_file(), cfg["Global"]
out = Path(args["--save_dir"]); out.mkdir(parents=True, exist_ok=True)
# op types as a saved ProgramDesc stores them: field 3, length-prefixed
qdq = b"\\x1a\\x0fquantize_linear\\x1a\\x11dequantize_linear\\x1a\\x06conv2d"
ops = qdq if sys.argv[-1] == "quantized" else b"\\x1a\\x06conv2d"
(out / "model.pdmodel").write_bytes(ops * 10)
(out / "model.pdiparams").write_bytes(b"p" * 100)
print("==> The metric of final model is 0.2841")
"""


def plan_with_upstreams(tmp_path: Path):
    plan = build_plan(load_recipe(PICODET), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)
    export, prepare = plan.stage("export"), plan.stage("prepare_dataset")
    model_dir = Path(export.provides["model_dir"])
    model_dir.mkdir(parents=True)
    files = {"model": model_dir / "model.pdmodel", "params": model_dir / "model.pdiparams",
             "infer_cfg": model_dir / "infer_cfg.yml"}
    for path in files.values():
        path.write_text("fp32")
    model = ModelResult(model_dir=str(model_dir), files={k: str(v) for k, v in files.items()}, precision="fp32",
                        size_mb=0.1)
    dataset_root = Path(prepare.provides["root"])
    dataset_root.mkdir(parents=True)
    (Path(prepare.stage_dir)).mkdir(parents=True)
    (Path(prepare.stage_dir) / "dataset.json").write_text("{}")
    write_stage_result(export.stage_dir, {"ok": True, "kind": "export", "result": model.to_dict()})
    write_stage_result(prepare.stage_dir, {"ok": True, "kind": "prepare_dataset", "result": DatasetResult(
        root=str(dataset_root), source="synthetic", format="coco").to_dict()})
    return plan


def _run(plan, flavour: str) -> dict:
    stage = plan.stage("compress")
    stage.argv = [sys.executable, "-c", ACT, *[a for a in stage.argv if a.startswith("--")], flavour]
    return execute_stage(plan, stage, log=lambda _: None, log_format="ppdet")


def test_compress_writes_its_config_copies_infer_cfg_and_reads_the_metric(tmp_path: Path) -> None:
    plan = plan_with_upstreams(tmp_path)
    result = _run(plan, "quantized")["result"]
    assert result["precision"] == "int8" and result["source"] == "export" and result["quantize_ops"] == 20
    assert result["metric"] == pytest.approx(0.2841)
    assert Path(result["files"]["infer_cfg"]).read_text() == "fp32"  # copied beside the INT8 model
    config = Path(plan.stage("compress").builtins["act_config"])
    assert config.parent == Path(plan.stage("compress").stage_dir)
    assert yaml.safe_load(config.read_text())["Global"]["model_dir"] == plan.stage("export").provides["model_dir"]


def test_an_unquantized_result_is_refused_not_passed_on(tmp_path: Path) -> None:
    plan = plan_with_upstreams(tmp_path)
    with pytest.raises(StageRefused, match="holds no quantize/dequantize ops: the model was not quantized"):
        _run(plan, "plain")
    stored = json.loads((Path(plan.stage("compress").stage_dir) / "result.json").read_text())
    assert stored["ok"] is False and "not quantized" in stored["summary"]


def test_compress_refuses_to_start_without_the_export(tmp_path: Path) -> None:
    plan = build_plan(load_recipe(PICODET), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)
    with pytest.raises(StageRefused, match="cannot start, export has no result"):
        execute_stage(plan, plan.stage("compress"), log=lambda _: None, log_format="ppdet")
