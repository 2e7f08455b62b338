"""The infer kind: the toolkit's deployment script on a frame of the run's own dataset; its prediction must be left
behind. (tests/test_e2e_smoke.py runs PaddleSeg's real deploy/python/infer.py.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.kinds.base import DatasetResult, ModelResult
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
    (Path(args["--save_dir"]) / Path(args["--image_path"]).name).write_bytes(Path(args["--image_path"]).read_bytes())
"""


def _run(tmp_path: Path, flavour: str, frames: tuple[str, ...] = ("frankfurt/frankfurt_000000_000019",
                                                                  "aachen/aachen_000000_000019")) -> dict:
    plan = build_plan(load_recipe(DEEPLAB), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)
    root = Path(plan.variables["dataset_root"])
    for frame in frames:
        (root / "leftImg8bit" / "val" / f"{frame}_leftImg8bit.png").parent.mkdir(parents=True, exist_ok=True)
        (root / "leftImg8bit" / "val" / f"{frame}_leftImg8bit.png").write_bytes(frame.encode())
    prepared = DatasetResult(root=str(root), source="synthetic", format="cityscapes").to_dict()
    write_stage_result(plan.stage("prepare_dataset").stage_dir, {"ok": True, "kind": "prepare_dataset",
                                                                "result": prepared})
    (Path(plan.stage("prepare_dataset").stage_dir) / "dataset.json").write_text(json.dumps(prepared))
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


def test_infer_records_the_prediction_of_the_upstream_model_on_the_first_val_frame(tmp_path: Path) -> None:
    result = _run(tmp_path, "write")["result"]
    assert result["model_stage"] == "export"
    assert Path(result["predictions"]["prediction"]).read_bytes() == b"aachen/aachen_000000_000019"
    assert result["demo_source"].endswith("val/aachen/aachen_000000_000019_leftImg8bit.png")


def test_a_dataset_without_a_val_frame_is_refused_before_the_script_runs(tmp_path: Path) -> None:
    with pytest.raises(StageRefused, match=r"no image matches .*leftImg8bit/val/"):
        _run(tmp_path, "write", frames=())


def test_a_script_that_writes_no_prediction_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StageRefused, match="command succeeded but left no prediction"):
        _run(tmp_path, "nothing")
