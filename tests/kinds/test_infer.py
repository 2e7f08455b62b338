"""The infer kind: the toolkit's deployment script on the demo image; its prediction must be left behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.kinds.base import ModelResult
from npuflow.plan import build_plan
from npuflow.recipe import load_recipe
from npuflow.rundir import write_stage_result

DEEPLAB = "deeplabv3p_resnet50_os8_cityscapes_1024x512_80k"
# Stands in for deploy/python/infer.py: writes the prediction where --save_dir says unless told not to.
INFER = """
import sys
from pathlib import Path
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
assert Path(args["--config"]).name == "deploy.yaml"
if sys.argv[-1] != "nothing":
    Path(args["--save_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(args["--save_dir"]) / Path(args["--image_path"]).name).write_bytes(b"png")
"""


def _run(tmp_path: Path, flavour: str) -> dict:
    plan = build_plan(load_recipe(DEEPLAB), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)
    export = plan.stage("export")
    model_dir = Path(export.provides["model_dir"])
    model_dir.mkdir(parents=True)
    files = {name: str(model_dir / f) for name, f in (("model", "model.pdmodel"), ("params", "model.pdiparams"),
                                                       ("deploy", "deploy.yaml"))}
    for path in files.values():
        Path(path).write_text("x")
    write_stage_result(export.stage_dir, {"ok": True, "kind": "export", "result": ModelResult(
        model_dir=str(model_dir), files=files, precision="fp32", size_mb=0.1).to_dict()})
    stage = plan.stage("infer")
    stage.argv = [sys.executable, "-c", INFER, *stage.argv[2:-2], "--flavour", flavour]
    return execute_stage(plan, stage, log=lambda _: None, log_format="paddleseg")


def test_infer_records_the_prediction_of_the_upstream_model(tmp_path: Path) -> None:
    result = _run(tmp_path, "write")["result"]
    assert result["model_stage"] == "export"
    assert Path(result["predictions"]["prediction"]).name == "frankfurt_000000_000019_leftImg8bit.png"


def test_a_script_that_writes_no_prediction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageRefused, match="command succeeded but left no prediction"):
        _run(tmp_path, "nothing")
