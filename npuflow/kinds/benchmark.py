"""benchmark: latency percentiles, throughput and accuracy of an upstream inference model on the val split.

The program (``settings.program``, a module in npuflow/programs) runs under the toolkit's interpreter; the
FP32 export and a compressed model go through the same program, data and settings, so their rows compare.
"""

from __future__ import annotations

import math
from typing import Any

from npuflow.errors import StageRefused
from npuflow.kinds.base import (
    BenchmarkResult,
    Command,
    DatasetResult,
    ModelResult,
    PlanContext,
    Result,
    Role,
    RunContext,
    StageKind,
    read_json,
)

PROGRAMS = {"paddle_detection": "npuflow.programs.paddle_detection_bench",
            "paddle_segmentation": "npuflow.programs.paddle_segmentation_bench",
            "onnx_detection": "npuflow.programs.onnx_detection_bench"}


def headline(accuracy: dict[str, Any]) -> str:
    """The program's main score: COCO mAP for detection, mIoU for segmentation."""
    if "miou" in accuracy:
        return f"mIoU {accuracy['miou']:.4f}, pixel accuracy {accuracy['pixel_acc']:.4f}"
    return f"mAP {accuracy['map']:.4f}"


class Benchmark(StageKind):
    name = "benchmark"
    uses_card = True
    description = "Warm-up, latency p50/p90/p99, throughput and accuracy of the upstream model on the val split."
    produces = BenchmarkResult
    consumes = {"model": Role(ModelResult), "dataset": Role(DatasetResult)}
    settings_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["program"],
        "properties": {
            "program": {"enum": sorted(PROGRAMS)},
            "warmup": {"type": ["integer", "string"],
                       "description": "Untimed runs first. Default: the var bench_warmup, else 20."},
            "iters": {"type": ["integer", "string"],
                      "description": "Timed runs, one image each. Default: bench_iters, else 200."},
            "threads": {"type": ["integer", "string"], "description": "CPU math threads. Default: bench_threads, else 1."},
        },
    }
    metrics = ("bbox_map", "miou", "pixel_acc", "latency_p50_ms", "latency_p99_ms", "throughput_ips", "size_mb")
    ui_color = "#ffe3e3"

    def command(self, ctx: PlanContext) -> Command:
        model, dataset = ctx.one("model"), ctx.one("dataset")
        assert model is not None and dataset is not None  # required roles; the plan checked
        s = ctx.settings
        out = str(ctx.stage_dir / "benchmark.json")

        def value(key: str, default: int) -> str:
            """The setting, else the recipe's var ``bench_<key>`` (a profile's value for all benchmarks)."""
            found = ctx.setting(key)
            return str(found) if found is not None else ctx.plan.variables.get(f"bench_{key}") or str(default)

        return Command(
            argv=[ctx.var("python"), "-m", PROGRAMS[s["program"]], "--model-dir", model.command.provides["model_dir"],
                  "--device", ctx.var("device_kind"), "--dataset-root", dataset.command.provides["root"],
                  "--split", ctx.plan.dataset["splits"][-1], "--warmup", value("warmup", 20),
                  "--iters", value("iters", 200), "--threads", value("threads", 1), "--out", out],
            cwd=ctx.plan.run_dir, env={"PYTHONPATH": ctx.var("project_root")}, outputs={"benchmark": [out]})

    def collect(self, run: RunContext, outputs: dict[str, str], metrics: Any) -> BenchmarkResult:
        bench = read_json(run.stage_dir / "benchmark.json", f"stage {run.stage.name}")
        model = run.one("model")
        assert model is not None and isinstance(model.result, ModelResult)
        lat = bench["latency_ms"]
        if not (all(math.isfinite(v) for v in lat.values()) and bench["throughput_ips"] > 0):
            raise StageRefused(f"stage {run.stage.name}: the benchmark measured no usable latency: {lat}")
        return BenchmarkResult(
            model_stage=model.name, precision=model.result.precision, size_mb=model.result.size_mb, latency_ms=lat,
            throughput_ips=bench["throughput_ips"], accuracy=bench["accuracy"],
            settings={k: bench[k] for k in ("device", "batch_size", "warmup", "iters", "threads", "images",
                                            "quantize_ops", "program", "int8_execution") if k in bench})

    def summary(self, result: Result | None) -> str:
        assert isinstance(result, BenchmarkResult)
        lat = result.latency_ms
        return (f"{result.model_stage} ({result.precision}): p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, "
                f"{result.throughput_ips:.1f} images/s, {headline(result.accuracy)}")

    def measured(self, result: Result) -> dict[str, float]:
        assert isinstance(result, BenchmarkResult)
        acc = result.accuracy
        scores = {name: 100.0 * acc[key] for name, key in (("bbox_map", "map"), ("miou", "miou"),
                                                            ("pixel_acc", "pixel_acc")) if key in acc}
        return {**scores, "latency_p50_ms": result.latency_ms["p50"],
                "latency_p99_ms": result.latency_ms["p99"], "throughput_ips": result.throughput_ips,
                "size_mb": result.size_mb}
