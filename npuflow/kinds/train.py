"""train: the toolkit's distributed training (paddle.distributed.launch, torchrun or its own script) on cards."""

from __future__ import annotations

import ast
import glob
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from npuflow.errors import StageRefused
from npuflow.kinds.base import PlanContext, Result, Role, RunContext, StageKind, TrainResult, ValidationResult
from npuflow.logparse import calc_fps


class Train(StageKind):
    name = "train"
    description = "Distributed training with the toolkit's own launcher; a retry resumes from its checkpoint."
    toolkit = True
    holds_cards = True
    training_log = True
    per_node = True
    produces = TrainResult
    consumes = {"validation": Role(ValidationResult, required=False)}
    metrics = ("train_ips", "train_ips_per_card", "eval_bbox_map", "eval_miou")
    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "batch_per_card": {
                "type": ["integer", "string"],
                "description": "Images per card and step. For a log without a throughput field (MMDetection's "
                               "log.json), training images/s is then computed from the step times as the SSD port's "
                               "calc_fps.py <log.json> <world_size> <batch_per_card> does."},
            "fps_script": {
                "type": "string",
                "description": "The toolkit's own throughput script, run as <script> <log.json> <world_size> "
                               "<batch_per_card> on the newest metrics file (the SSD port's calc_fps.py, whose last "
                               "line is {'fps': N}). Where it cannot give a number (it skips the first 50 "
                               "iterations of each epoch), the mean step time gives it, and the metrics say so."},
            "completed_line": {
                "type": "string",
                "description": "A line (regular expression) the node of global rank 0 prints only when the training "
                               "ran to its end: the YOLOR port returns with exit code 0 from a non-finite loss, so "
                               "the exit code alone does not say the training finished."},
            "config_overlay": {
                "type": "object",
                "additionalProperties": False,
                "required": ["file", "base", "key"],
                "description": "A small config of the project's that inherits the toolkit's own: written per run as "
                               "{run_config} with its base key set to the toolkit's config, for a profile whose "
                               "changes a command-line override cannot say (PaddleSeg's export has no --opts).",
                "properties": {
                    "file": {"type": "string", "description": "The overlay (values only, no base key); empty: none."},
                    "base": {"type": "string", "description": "The toolkit config it inherits, e.g. {toolkit_dir}/{config}."},
                    "key": {"type": "string", "description": "The toolkit's inheritance key ({config_base_key})."},
                },
            },
        },
    }
    builtins = {"run_config": "this run's copy of settings.config_overlay, inheriting the toolkit's config"}
    ui_color = "#d3f9d8"

    def builtin_values(self, ctx: PlanContext) -> dict[str, str]:
        overlay = ctx.settings.get("config_overlay")
        file = ctx.render(overlay["file"], "config_overlay.file") if overlay else ""
        return {"run_config": str(ctx.stage_dir / Path(file).name)} if file else {}

    def before(self, run: RunContext) -> None:
        overlay = run.stage.settings.get("config_overlay")
        if not overlay or not overlay["file"]:  # "": the toolkit's config as it is
            return
        source, base = Path(overlay["file"]), Path(overlay["base"])
        if not base.is_file():
            raise StageRefused(f"stage {run.stage.name}: the toolkit config {base} that {source.name} inherits "
                               f"does not exist in this checkout")
        try:
            data = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise StageRefused(f"stage {run.stage.name}: cannot read the config overlay {source}: {exc}") from None
        out = Path(run.stage.builtins["run_config"])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump({overlay["key"]: [str(base)], **data}, sort_keys=False))

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: dict[str, Any] | None) -> TrainResult:
        completed = run.stage.settings.get("completed_line")
        if completed and run.hosts_rank0:
            log_text = (run.stage_dir / "stage.log").read_text(errors="replace")
            if not re.search(completed, log_text):
                raise StageRefused(f"stage {run.stage.name}: the training exited 0 but never printed its completion "
                                   f"line ({completed!r}): it stopped early (see the last lines of the log)")
        if metrics is not None:
            if metrics["train_steps"] == 0:
                if run.resumed_with:
                    # The checkpoint it resumed from was the last: a try that crashed after training (in the final
                    # evaluation, say) left nothing to train, and the toolkit finished its outputs (checked before).
                    run.log(f"stage {run.stage.name}: resumed with {' '.join(run.resumed_with)} and trained no "
                            f"step: the training had already finished; its outputs are this run's")
                    return TrainResult(metrics={**metrics, "resumed_finished": True}, outputs=outputs)
                if run.hosts_rank0:
                    raise StageRefused(f"stage {run.stage.name}: the training log had no step lines the parser "
                                       f"recognises")
                return TrainResult(metrics=metrics, outputs=outputs)  # rank 0 on another node logs the steps
            if not metrics["losses_finite"]:
                raise StageRefused(f"stage {run.stage.name}: {metrics['non_finite_losses']} step(s) logged a "
                                   f"non-finite loss")
            batch = run.stage.settings.get("batch_per_card")
            if batch and metrics.get("step_time_mean_s"):
                script = run.stage.settings.get("fps_script")
                fps, source = _script_fps(script, run.stage.metrics_file, metrics["world_size"], int(batch)) \
                    if script else (None, "")
                if fps is None:
                    fps = calc_fps(metrics["step_time_mean_s"], metrics["world_size"], int(batch))
                    source = f"{source}; the mean logged step time instead" if source else "the mean logged step time"
                    if script:
                        run.log(f"stage {run.stage.name}: {source}")
                metrics["calc_fps"], metrics["fps_source"] = fps, source
        return TrainResult(metrics=metrics or {}, outputs=outputs)

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, TrainResult)
        m = result.metrics
        if not m:
            return "finished; no metrics parser for this toolkit's log"
        if m.get("resumed_finished"):
            return "the training had finished before this try: it resumed from the last checkpoint, nothing to train"
        if m["train_steps"] == 0:
            return "this node finished; the step lines are logged on the node of global rank 0"
        return f"{m['train_steps']} logged steps, last losses {m['last_losses']}, eval {m['eval']}"

    def measured(self, result: Result) -> dict[str, float]:
        assert isinstance(result, TrainResult)
        m, out = result.metrics, {}
        if m.get("ips_global_median") is not None:
            out["train_ips"] = m["ips_global_median"]
        elif m.get("calc_fps") is not None:
            out["train_ips"] = m["calc_fps"]
        if "train_ips" in out and m.get("world_size"):
            out["train_ips_per_card"] = out["train_ips"] / m["world_size"]
        if "bbox_map" in m.get("eval", {}):
            out["eval_bbox_map"] = 100.0 * m["eval"]["bbox_map"]
        if "miou" in m.get("eval", {}):
            out["eval_miou"] = 100.0 * m["eval"]["miou"]
        return out


def _script_fps(script: str, metrics_glob: str | None, world_size: int, batch: int) -> tuple[float | None, str]:
    """Images/s as the toolkit's script computes it from the newest log, or None and why it gave none."""
    name = Path(script).name
    logs = [Path(p) for p in glob.glob(metrics_glob or "")]
    if not Path(script).is_file() or not logs:
        return None, f"{name}: {'no log' if Path(script).is_file() else f'{script} is not there'}"
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    done = subprocess.run([sys.executable, script, str(newest), str(world_size), str(batch)],
                          capture_output=True, text=True, timeout=120, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        return None, f"{name} gave no number ({why})"
    try:
        value = ast.literal_eval(lines[-1])["fps"]
    except (ValueError, SyntaxError, KeyError, TypeError):
        return None, f"{name} printed {lines[-1]!r}, not {{'fps': N}}"
    return float(value), f"{name} {newest.name} {world_size} {batch}"
