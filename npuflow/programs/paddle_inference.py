"""What both Paddle Inference benchmark programs share: the predictor, quantize ops, timing, the result file.

Runs under the toolkit's interpreter (paddle, numpy), never inside Airflow; Python 3.9 compatible.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from npuflow.paddle_program import quantize_ops


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def make_predictor(model_dir: Path, device: str, threads: int):
    """A predictor over the exported program. On the CPU both FP32 and INT8 models run on oneDNN, and a
    quantized model gets oneDNN's INT8 kernels (without them its quantize ops run as FP32 simulation)."""
    import paddle.inference as pi

    params = model_dir / "model.pdiparams"
    program = next((p for p in (model_dir / "model.pdmodel", model_dir / "model.json") if p.is_file()), None)
    if program is None or not params.is_file():
        raise SystemExit(f"error: {model_dir}: no exported model (model.pdmodel or model.json + model.pdiparams)")
    quantized = quantize_ops(program)
    config = pi.Config(str(program), str(params))
    if device == "gpu":
        config.enable_use_gpu(256, 0)
    elif device == "npu":
        config.enable_custom_device("npu", 0)
    else:
        config.disable_gpu()
        config.set_cpu_math_library_num_threads(threads)
        config.enable_mkldnn()
        if quantized:
            config.enable_mkldnn_int8()
    config.switch_ir_optim(True)
    config.enable_memory_optim()
    return pi.create_predictor(config), program.name, quantized


def bench_arguments(description: str, default_split: str) -> argparse.ArgumentParser:
    """The flags the benchmark kind passes to every program."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--device", choices=["cpu", "gpu", "npu"], default="cpu")
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--split", default=default_split)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    return p


def check_arguments(args: argparse.Namespace) -> None:
    if args.warmup < 0 or args.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")


def describe(args: argparse.Namespace, program: str, quantized: int, images: int) -> dict[str, Any]:
    """The settings part of benchmark.json: what was run, where, how often (the same for FP32 and INT8)."""
    import paddle

    return {"model_dir": str(args.model_dir), "program": program, "device": args.device,
            "paddle_version": paddle.__version__, "batch_size": 1, "warmup": args.warmup, "iters": args.iters,
            "threads": args.threads, "images": images, "quantize_ops": quantized,
            "cpu_backend": "onednn" if args.device == "cpu" else None}


def timed(run: Callable[[int], Any], warmup: int, iters: int) -> dict[str, Any]:
    """``warmup`` untimed calls, then ``iters`` timed ones: latency percentiles (ms) and throughput."""
    for i in range(warmup):
        run(i)
    latencies = []
    started = time.perf_counter()
    for i in range(iters):
        t = time.perf_counter()
        run(i)
        latencies.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - started
    return {"latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                           "p99": percentile(latencies, 99), "mean": float(np.mean(latencies))},
            "throughput_ips": iters / wall}


def write_result(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
