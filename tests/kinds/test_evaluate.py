"""The evaluate kind: ACT's eval.py on the upstream model, scored from the pycocotools table it prints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.kinds.base import ModelResult
from npuflow.rundir import write_stage_result
from tests.kinds.test_compress import plan_with_upstreams

# Stands in for eval.py: checks the config names the INT8 model, prints pycocotools' summary (or nothing).
EVAL = """
import sys, yaml
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
cfg = yaml.safe_load(open(args["--config_path"]))
print("Loaded model from:", cfg["Global"]["model_dir"])
if sys.argv[-1] == "table":
    print(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.297")
    print(" Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.451")
"""


def _plan(tmp_path: Path):
    plan = plan_with_upstreams(tmp_path)
    int8_dir = Path(plan.stage("compress").provides["model_dir"])
    int8_dir.mkdir(parents=True)
    files = {"model": str(int8_dir / "model.pdmodel"), "params": str(int8_dir / "model.pdiparams")}
    for path in files.values():
        Path(path).write_text("int8")
    write_stage_result(plan.stage("compress").stage_dir, {"ok": True, "kind": "compress", "result": ModelResult(
        model_dir=str(int8_dir), files=files, precision="int8", size_mb=0.1, quantize_ops=2).to_dict()})
    return plan, int8_dir


def _run(plan, flavour: str) -> dict:
    stage = plan.stage("eval_int8")
    stage.argv = [sys.executable, "-c", EVAL, *[a for a in stage.argv if a.startswith("--config_path")], flavour]
    return execute_stage(plan, stage, log=lambda _: None, log_format="ppdet")


def test_evaluate_scores_the_upstream_model_from_the_coco_table(tmp_path: Path) -> None:
    plan, int8_dir = _plan(tmp_path)
    result = _run(plan, "table")
    assert result["result"] == {"model_stage": "compress", "bbox_map": 0.297}
    config = yaml.safe_load(Path(plan.stage("eval_int8").builtins["act_config"]).read_text())
    assert config["Global"]["model_dir"] == str(int8_dir)  # the INT8 model, not the FP32 export


def test_an_evaluation_without_its_table_is_refused(tmp_path: Path) -> None:
    plan, _ = _plan(tmp_path)
    with pytest.raises(StageRefused, match="printed no COCO AP table"):
        _run(plan, "silent")
