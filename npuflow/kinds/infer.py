"""infer: the toolkit's own deployment inference on a demo image (PaddleSeg's deploy/python/infer.py).

The tutorial's last step, kept as its own stage: it shows the exported model runs under the deployment script on
the target device, and leaves the rendered prediction for a person to look at. The tutorial downloads its demo
image by hand; here the image is a frame of this run's own dataset (``settings.demo_from``: the first match of a
glob, sorted), copied to ``{demo_image}`` before the command, so no stage depends on a file nobody provides.
"""

from __future__ import annotations

import glob
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from npuflow.errors import StageRefused
from npuflow.kinds.base import DatasetResult, ModelResult, PlanContext, Result, Role, RunContext, StageKind


@dataclass
class InferResult(Result):
    model_stage: str
    predictions: dict[str, str]
    demo_source: str = ""


class Infer(StageKind):
    name = "infer"
    uses_card = True
    description = "The toolkit's deployment inference script on a demo image; keeps the rendered prediction."
    toolkit = True
    produces = InferResult
    consumes = {"model": Role(ModelResult), "dataset": Role(DatasetResult, required=False)}
    settings_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "demo_from": {"type": "string",
                          "description": "Glob of the dataset's images; the first (sorted) becomes {demo_image}."},
        },
    }
    builtins: ClassVar[dict[str, str]] = {
        "demo_image": "the demo frame this stage copies from settings.demo_from before the command"}
    ui_color = "#ffe3e3"

    def builtin_values(self, ctx: PlanContext) -> dict[str, str]:
        return {"demo_image": str(ctx.stage_dir / "input" / "demo.png")} if ctx.settings.get("demo_from") else {}

    def before(self, run: RunContext) -> None:
        pattern = run.stage.settings.get("demo_from")
        if not pattern:
            return
        found = sorted(glob.glob(pattern))
        if not found:
            raise StageRefused(f"stage {run.stage.name}: no image matches {pattern} for the demo inference")
        target = Path(run.stage.builtins["demo_image"])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found[0], target)
        (target.parent / "source.txt").write_text(found[0] + "\n")

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> InferResult:
        model = run.one("model")
        assert model is not None
        source = run.stage_dir / "input" / "source.txt"
        return InferResult(model_stage=model.name, predictions=outputs,
                           demo_source=source.read_text().strip() if source.is_file() else "")

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, InferResult)
        frame = f" (demo frame {Path(result.demo_source).name})" if result.demo_source else ""
        return f"{result.model_stage}: " + ", ".join(Path(p).name for p in result.predictions.values()) + frame
