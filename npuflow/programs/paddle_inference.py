"""What both Paddle Inference benchmark programs share: the predictor and the settings they record.

Runs under the toolkit's interpreter (paddle, numpy), never inside Airflow; Python 3.9 compatible.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from npuflow.model_ops import quantize_ops

#: The op types oneDNN runs as INT8: those the recipes' ACT configs quantize (``QuantAware.quantize_op_types`` of
#: ppyoloe_plus_l_qat_dis.yaml, picodet_s_qat_dis.yaml and the DeepLabv3+ config). With oneDNN's default (every
#: op it can) the smoke PP-YOLOE+'s INT8 model scored mAP 0.0 where ACT's own eval.py gave 11.4; with these, 12.5.
INT8_OP_TYPES = {"conv2d", "depthwise_conv2d"}


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
            config.enable_mkldnn_int8(INT8_OP_TYPES)
    config.switch_ir_optim(True)
    config.enable_memory_optim()
    return pi.create_predictor(config), program.name, quantized


def int8_execution(device: str, quantized: int) -> str | None:
    """How a quantized program's INT8 ran, for the report: only the CPU path here executes INT8 kernels (oneDNN).
    Paddle Inference has no INT8 path on a custom device, so on the NPU (and on a GPU without TensorRT) the
    quantize/dequantize ops run around FP kernels: the timing is of simulated quantization."""
    if not quantized:
        return None
    if device == "cpu":
        return "int8 kernels (oneDNN)"
    return f"simulated: Paddle Inference has no INT8 kernels for this {device} path, quantize ops around FP kernels"


def describe(args: argparse.Namespace, program: str, quantized: int, images: int) -> dict[str, Any]:
    """The settings part of benchmark.json: what was run, where, how often (the same for FP32 and INT8)."""
    import paddle

    return {"model_dir": str(args.model_dir), "program": program, "device": args.device,
            "paddle_version": paddle.__version__, "batch_size": 1, "warmup": args.warmup, "iters": args.iters,
            "threads": args.threads, "images": images, "quantize_ops": quantized,
            "cpu_backend": "onednn" if args.device == "cpu" else None,
            "int8_execution": int8_execution(args.device, quantized)}
