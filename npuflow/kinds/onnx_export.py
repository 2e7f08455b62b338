"""onnx_export: the project's ONNX export of a PyTorch toolkit's trained checkpoint (the FP32 baseline).

The command is ours (``npuflow.programs.torch_export``), run under the toolkit's interpreter in its folder,
where the toolkit's adapter rebuilds the model from the checkpoint (npuflow/torchdet/adapter.py). The checkpoint
is the train stage's declared output (``settings.checkpoint`` names which one; ``checkpoint`` by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from npuflow.errors import StageRefused
from npuflow.kinds.base import (
    Command,
    DatasetResult,
    ModelResult,
    PlanContext,
    Result,
    Role,
    RunContext,
    StageKind,
    TrainResult,
    files_mb,
    read_json,
)

TORCH_SETTINGS = {
    "adapter": {"type": "string", "description": "The toolkit's adapter module, importable from its folder."},
    "checkpoint": {"type": "string", "description": "Which declared output of the train stage to start from. "
                                                    "Default: checkpoint."},
}


def checkpoint_path(ctx: PlanContext) -> str:
    """The train stage's checkpoint file this stage starts from (plan time)."""
    train = ctx.one("checkpoint")
    assert train is not None  # a required role; the plan checked
    name = ctx.setting("checkpoint", "checkpoint")
    found = train.command.outputs.get(name)
    if not found:
        raise StageRefused(f"stage {ctx.stage_dir.name}: the train stage {train.name!r} declares no output {name!r} "
                           f"(its outputs: {sorted(train.command.outputs)})")
    return str(Path(train.command.cwd) / found[0])  # a relative output is the train stage's, under its cwd


def toolkit_env(ctx: PlanContext) -> dict[str, str]:
    """The adapter imports the toolkit's modules and npuflow's: both on the path."""
    return {"PYTHONPATH": f"{ctx.var('toolkit_dir')}:{ctx.var('project_root')}"}


def onnx_model(run: RunContext, outputs: dict[str, str], precision: str, summary_file: str) -> ModelResult:
    """The stage's ``model.onnx`` and the program's summary beside it, as a ModelResult."""
    path, train = Path(outputs["model"]), run.one("checkpoint")
    assert train is not None
    if not path.is_file():
        raise StageRefused(f"stage {run.stage.name}: {path} was not written")
    return ModelResult(model_dir=str(path.parent), files={"model": str(path), "summary": str(path.parent /
                       summary_file)}, precision=precision, size_mb=files_mb([str(path)]), source=train.name)


class OnnxExport(StageKind):
    name = "onnx_export"
    description = "Export the trained PyTorch checkpoint to ONNX (whole model with NMS) through the toolkit's adapter."
    produces = ModelResult
    consumes = {"checkpoint": Role(TrainResult), "dataset": Role(DatasetResult)}
    settings_schema = {"type": "object", "additionalProperties": False, "required": ["adapter"],
                       "properties": {**TORCH_SETTINGS,
                                      "opset": {"type": ["integer", "string"], "description": "Default 17."}}}
    ui_color = "#e5dbff"

    def command(self, ctx: PlanContext) -> Command:
        dataset = ctx.one("dataset")
        assert dataset is not None
        out = str(ctx.stage_dir / "model.onnx")
        return Command(
            argv=[ctx.var("python"), "-m", "npuflow.programs.torch_export", "--adapter", ctx.setting("adapter"),
                  "--checkpoint", checkpoint_path(ctx), "--dataset-root", dataset.command.provides["root"],
                  "--split", ctx.plan.dataset["splits"][-1], "--opset", str(ctx.setting("opset", 17)),
                  "--out", out],
            cwd=ctx.var("toolkit_dir"), env=toolkit_env(ctx), outputs={"model": [out]})

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        return {"model_dir": str(ctx.stage_dir)}

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ModelResult:
        result = onnx_model(run, outputs, "fp32", "export.json")
        summary = read_json(Path(result.files["summary"]), f"stage {run.stage.name}")
        run.log(f"onnxruntime matches torch within {summary['max_box_diff_px']:.2e} px on the example image")
        return result

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ModelResult)
        return f"exported {Path(result.files['model']).name} from {result.source} ({result.size_mb} MB)"
