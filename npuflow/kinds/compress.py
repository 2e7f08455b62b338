"""compress: quantization-aware training with distillation (PaddleSlim ACT) of an upstream model, on cards.

The toolkit's command (``deploy/auto_compression/run.py --config_path ... --save_dir ...``) stays the
recipe's; this kind writes the per-run copy of the ACT config it reads (``{act_config}``: the recipe's
``settings.config`` with ``Global.model_dir`` = the upstream model and the reader at this run's dataset), then
copies the upstream's deployment config (``infer_cfg.yml``, ``deploy.yaml``) beside the result (ACT does not)
and checks the result is quantized.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from npuflow.actconfig import PPDET_DATASET_FIELDS, reader_copy, write_act_config
from npuflow.errors import StageRefused
from npuflow.kinds.base import (
    DatasetResult,
    ModelResult,
    PlanContext,
    Result,
    Role,
    RunContext,
    StageKind,
    files_mb,
    model_dir_provided,
)
from npuflow.model_ops import quantize_ops

if TYPE_CHECKING:
    from npuflow.plan import StageCommand

# ACT's own last word: "==> The metric of final model is 0.2841"
_FINAL_METRIC = re.compile(r"==> The metric of final model is (-?[0-9.]+)")

ACT_SETTINGS = {
    "type": "object",
    "additionalProperties": False,
    "required": ["config"],
    "properties": {
        "config": {"type": "string", "description": "The toolkit's ACT config, relative to the stage's cwd."},
        "reader_config": {"type": "string",
                          "description": "The ppdet reader config it reads (Global.reader_config), relative to the cwd."},
        "set": {"type": "object", "description": "Dotted keys of the config to override (TrainConfig.train_iter)."},
        "reader_set": {"type": "object",
                       "description": "Dotted keys of the reader/dataset config to override; a number picks a list "
                                      "item (EvalReader.sample_transforms.1.Resize.target_size)."},
        "dataset_fields": {"type": "array", "items": {"type": "string"},
                           "description": "Dotted keys of the reader config that get the dataset's folder. Default: "
                                          "ppdet's TrainDataset/EvalDataset/TestDataset.dataset_dir."},
    },
}


def write_stage_config(stage: StageCommand, model: ModelResult, dataset: DatasetResult | None) -> dict[str, Any]:
    """The ``{act_config}`` of ``stage``, from its settings and its upstream model and dataset."""
    settings = stage.settings
    template = Path(stage.cwd) / settings["config"]
    if not template.is_file():
        raise StageRefused(f"stage {stage.name}: the ACT config {template} does not exist")
    return write_act_config(
        template, Path(stage.builtins["act_config"]), cwd=Path(stage.cwd), model_dir=model.model_dir,
        model_file=Path(model.files["model"]).name, params_file=Path(model.files["params"]).name,
        reader_config=settings.get("reader_config"), dataset_root=dataset.root if dataset else None,
        overrides=settings.get("set", {}), dataset_fields=settings.get("dataset_fields", PPDET_DATASET_FIELDS),
        reader_overrides=settings.get("reader_set"))


class ActConfigStage:
    """For a kind whose toolkit script reads an ACT config (run.py, eval.py): the stage gets ``{act_config}``,
    its own copy of ``settings.config`` pointed at the upstream model and dataset, written before the command."""

    toolkit = True
    consumes: ClassVar[dict[str, Role]] = {"model": Role(ModelResult), "dataset": Role(DatasetResult, required=False)}
    settings_schema: ClassVar[dict[str, Any]] = ACT_SETTINGS
    builtins: ClassVar[dict[str, str]] = {
        "act_config": "this stage's copy of settings.config, pointed at the upstream model and dataset",
        "act_reader": "this stage's copy of the reader/dataset config, pointed at the dataset (run_seg.py's --config_path)"}

    def builtin_values(self, ctx: PlanContext) -> dict[str, str]:
        config = ctx.stage_dir / Path(ctx.render(ctx.settings["config"], "settings.config")).name
        return {"act_config": str(config), "act_reader": str(reader_copy(config))}

    def before(self, run: RunContext) -> None:
        model, dataset = run.one("model"), run.one("dataset")
        assert model is not None and isinstance(model.result, ModelResult)
        write_stage_config(run.stage, model.result, dataset.result if dataset else None)  # type: ignore[arg-type]


class Compress(ActConfigStage, StageKind):
    name = "compress"
    description = "Quantization-aware training with distillation (PaddleSlim ACT) of the upstream model."
    holds_cards = True
    produces = ModelResult
    metrics = ("act_metric",)
    ui_color = "#fff3bf"

    def provides(self, ctx: PlanContext, outputs: dict[str, list[str]], cwd: str) -> dict[str, str]:
        return model_dir_provided(outputs, cwd)

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> ModelResult:
        upstream = run.one("model")
        assert upstream is not None and isinstance(upstream.result, ModelResult)
        model_dir = Path(outputs["params"]).parent
        files = dict(outputs)
        # ACT writes only the program and params; deployment needs the preprocessing too (ppdet's infer_cfg.yml,
        # PaddleSeg's deploy.yaml): every other file the upstream model declared is copied beside them.
        for name, path in upstream.result.files.items():
            if name not in ("model", "params") and name not in files:
                files[name] = shutil.copy2(path, model_dir / Path(path).name)
        ops = quantize_ops(Path(outputs["model"]))
        if ops == 0:
            raise StageRefused(f"stage {run.stage.name}: {outputs['model']} holds no quantize/dequantize ops: "
                               f"the model was not quantized")
        log_text = (run.stage_dir / "stage.log").read_text(errors="replace")
        found = _FINAL_METRIC.findall(log_text)
        return ModelResult(model_dir=str(model_dir), files={k: str(v) for k, v in files.items()}, precision="int8",
                           size_mb=files_mb([outputs["params"]]), quantize_ops=ops,
                           source=upstream.name, metric=float(found[-1]) if found else None)

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, ModelResult)
        score = f", ACT's final metric {result.metric:.4f}" if result.metric is not None else ""
        return (f"INT8 model from {result.source}: {result.quantize_ops} quantize/dequantize ops, "
                f"weights {result.size_mb} MB{score}")

    def measured(self, result: Result) -> dict[str, float]:
        assert isinstance(result, ModelResult)
        return {"act_metric": 100.0 * result.metric} if result.metric is not None else {}
