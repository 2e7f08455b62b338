"""QAT compression on the smoke set: INT8 / FP32 latency, the mAP delta, and the compress stage's wall time.

    .venv/bin/python bench/compression.py [--dag picodet_s_416_coco_npu_qat | deeplabv3p_resnet50_os8_cityscapes_1024x512_80k
                                           | ssd300_coco | yolor_p6_coco] [--iters 200]

Runs the DAG's smoke stages through ``execute_stage`` (the code the operator runs): dataset, training, export,
compression (PaddleSlim ACT on the export for the Paddle DAGs; QAT fine-tuning of the checkpoint under torchrun,
exported as QDQ ONNX, for the PyTorch ones), then the same benchmark program, data and settings on the FP32
model and on the INT8 model, with ``--iters`` timed runs each. On the CPU Paddle models run on oneDNN (its INT8
kernels for the quantized one) and ONNX models on onnxruntime's CPU provider (which fuses QDQ pairs into INT8
kernels where it can); whether INT8 is faster depends on the model: on a tiny detector the quantize/dequantize
overhead can outweigh the cheaper convolutions, and the ratio says so. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.execute import execute_stage  # noqa: E402
from npuflow.plan import build_plan  # noqa: E402
from npuflow.recipe import load_recipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dag", default="picodet_s_416_coco_npu_qat")
    ap.add_argument("--iters", type=int, default=200, help="timed runs of each benchmark")
    ap.add_argument("--keep", type=Path, help="run here and keep the run directory (default: a temporary one)")
    args = ap.parse_args()
    recipe = load_recipe(args.dag)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        plan = build_plan(recipe, {"profile": "smoke"}, run_id="bench-compression", runs_root=root)
        for stage in plan.stages:
            if stage.kind == "benchmark":
                stage.argv[stage.argv.index("--iters") + 1] = str(args.iters)
        results = {}
        for stage in plan.stages:
            if stage.kind in ("report",):
                continue
            started = time.monotonic()
            results[stage.name] = execute_stage(plan, stage, log=lambda _: None,
                                                log_format=recipe.log_format)
            print(f"{stage.name:16s} {time.monotonic() - started:7.1f} s  {results[stage.name]['summary']}",
                  flush=True)
    fp32, int8 = results["benchmark_fp32"]["result"], results["benchmark_int8"]["result"]
    compress = results["compress"]
    print()
    print(f"compress stage ({plan.stage('compress').kind}) wall time: {compress['seconds']:.1f} s "
          f"({compress['result']['quantize_ops']} quantize/dequantize ops in the INT8 model)")
    for key in ("p50", "p90", "p99"):
        print(f"latency {key}: FP32 {fp32['latency_ms'][key]:.2f} ms, INT8 {int8['latency_ms'][key]:.2f} ms, "
              f"INT8 / FP32 = {int8['latency_ms'][key] / fp32['latency_ms'][key]:.3f}")
    print(f"throughput: FP32 {fp32['throughput_ips']:.1f}, INT8 {int8['throughput_ips']:.1f} images/s, "
          f"INT8 / FP32 = {int8['throughput_ips'] / fp32['throughput_ips']:.3f}")
    score = "miou" if "miou" in fp32["accuracy"] else "map"
    evaluated = (f"; eval.py on INT8: {results['eval_int8']['result']['bbox_map']:.4f}"
                 if "eval_int8" in results else "")
    print(f"{'mIoU' if score == 'miou' else 'COCO mAP'}: FP32 {fp32['accuracy'][score]:.4f}, "
          f"INT8 {int8['accuracy'][score]:.4f}, "
          f"delta {100 * (int8['accuracy'][score] - fp32['accuracy'][score]):+.2f} points{evaluated}")
    print(f"weights (params file or .onnx): FP32 {fp32['size_mb']:.3f} MB, INT8 {int8['size_mb']:.3f} MB, "
          f"INT8 / FP32 = {int8['size_mb'] / fp32['size_mb']:.3f}")
    faster = int8["latency_ms"]["p50"] < fp32["latency_ms"]["p50"]
    backend = "onnxruntime" if fp32["settings"].get("program", "").endswith(".onnx") else "Paddle Inference, oneDNN"
    print(f"verdict: INT8 is {'faster' if faster else 'NOT faster'} than FP32 at p50 on this CPU "
          f"({fp32['settings'].get('device')}, {fp32['settings'].get('threads')} thread(s), {backend})")


if __name__ == "__main__":
    main()
