"""qat: quantization-aware fine-tuning of a PyTorch toolkit's trained checkpoint, on cards, to an INT8 ONNX model.

The Paddle DAGs quantize with PaddleSlim ACT (the compress kind, the tutorial's own command); no PyTorch
tutorial has a QAT step, so this command is ours: ``npuflow.programs.torch_qat`` under torchrun (one process per
card, DDP), fake-quant modules on the backbone, a few epochs with the model's own loss, then a QDQ ONNX export.
The result is a ModelResult like compress's, benchmarked by the same benchmark kind beside the FP32 export.
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
    read_json,
)
from npuflow.kinds.onnx_export import TORCH_SETTINGS, checkpoint_path, onnx_model, toolkit_env
from npuflow.launch import device_env, job_id, launch_argv
from npuflow.model_ops import quantize_ops


class Qat(StageKind):
    name = "qat"
    description = "Quantization-aware fine-tuning (fake-quant, torchrun) of the trained checkpoint to an INT8 ONNX model."
    holds_cards = True
    produces = ModelResult
    consumes = {"checkpoint": Role(TrainResult), "dataset": Role(DatasetResult)}
    settings_schema = {
        "type": "object", "additionalProperties": False, "required": ["adapter"],
        "properties": {
            **TORCH_SETTINGS,
            "epochs": {"type": ["integer", "string"], "description": "Fine-tuning epochs. Default 2."},
            "batch_per_card": {"type": ["integer", "string"], "description": "Images per card and step. Default 4."},
            "lr": {"type": ["number", "string"], "description": "AdamW learning rate. Default 1e-4."},
        },
    }
    ui_color = "#fff3bf"

    def command(self, ctx: PlanContext) -> Command:
        dataset = ctx.one("dataset")
        assert dataset is not None
        s, plan = ctx.setting, ctx.plan
        out = str(ctx.stage_dir / "model.onnx")
        # Each rank's output also lands in <stage>/log/ (torchrun --tee), as the train stage's does.
        launcher = launch_argv("torchrun", ctx.var("python"), [], plan.device, str(ctx.stage_dir / "log"),
                               job_id(plan.dag_id, plan.run_id))
        return Command(
            argv=[*launcher, "-m", "npuflow.programs.torch_qat", "--adapter", s("adapter"),
                  "--checkpoint", checkpoint_path(ctx), "--dataset-root", dataset.command.provides["root"],
                  "--split", plan.dataset["splits"][-1], "--epochs", str(s("epochs", 2)),
                  "--batch-size", str(s("batch_per_card", 4)), "--lr", str(s("lr", 1e-4)),
                  "--device", plan.device["kind"], "--out", out],
            cwd=ctx.var("toolkit_dir"), env={**device_env("torchrun", plan.device), **toolkit_env(ctx)},
            outputs={"model": [out]})

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        return {"model_dir": str(ctx.stage_dir)}

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ModelResult:
        result = onnx_model(run, outputs, "int8", "qat.json")
        result.quantize_ops = quantize_ops(Path(outputs["model"]))
        if result.quantize_ops == 0:
            raise StageRefused(f"stage {run.stage.name}: {outputs['model']} holds no QuantizeLinear/DequantizeLinear "
                               f"nodes: the model was not quantized")
        summary = read_json(Path(result.files["summary"]), f"stage {run.stage.name}")
        run.log(f"QAT loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f} over {summary['epochs']} "
                f"epoch(s) on {summary['world_size']} rank(s)")
        return result

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ModelResult)
        return (f"INT8 ONNX model from {result.source}: {result.quantize_ops} QuantizeLinear/DequantizeLinear "
                f"nodes, {result.size_mb} MB")
