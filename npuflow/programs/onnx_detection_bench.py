"""Benchmark an ONNX detector with onnxruntime: latency, throughput and COCO mAP on the val split.

Runs under the toolkit's interpreter (onnxruntime, numpy, PIL, faster-coco-eval; no torch), never inside Airflow.
The model describes itself (``npuflow.img_size``, ``npuflow.categories`` in its metadata, written by the
export), and images are prepared exactly as the PyTorch programs prepare them (npuflow/detdata.py), so FP32
and INT8 models go through the same preprocessing and scoring. Timing covers ``session.run()`` for one image.

Whether a quantized model ran as INT8 is read from onnxruntime's own profile of one run (after its graph
optimizations and the execution provider's partitioning): which kernels ran, on which provider. An INT8 model
whose QuantizeLinear/DequantizeLinear pairs were not fused into integer kernels (QLinearConv, ...) runs FP
kernels with quantization simulated around them, and a node the CANN provider does not take falls back to the
CPU: the report says which.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from npuflow.cocoeval import coco_stats
from npuflow.detdata import load_rgb, to_coco
from npuflow.errors import refuse
from npuflow.model_ops import quantize_ops
from npuflow.programs.bench_common import TIMED_POOL, bench_arguments, check_arguments, timed, write_result

PROVIDERS = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider", "npu": "CANNExecutionProvider"}


QDQ = ("QuantizeLinear", "DequantizeLinear")


def session(model: Path, device: str, threads: int, profile_prefix: str | None = None) -> tuple[Any, str]:
    """The model's session with every graph optimization (the QDQ fusions that make INT8 kernels), and "" or why
    it runs with the basic ones: onnxruntime 1.19 (the newest for the tutorials' Python 3.9) builds a QLinearAdd
    its own type check refuses from the QAT model's per-channel residual adds."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    provider = PROVIDERS[device]
    if provider not in ort.get_available_providers():
        raise SystemExit(f"error: this onnxruntime has no {provider} (it has {ort.get_available_providers()})")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fuses QDQ pairs into INT8 kernels
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    try:
        return ort.InferenceSession(str(model), opts, providers=[provider]), ""
    except Fail as exc:
        if "QLinear" not in str(exc):
            raise
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        why = str(exc).splitlines()[0].split("] : ")[-1][:200]
        return (ort.InferenceSession(str(model), opts, providers=[provider]),
                f"onnxruntime {ort.__version__} refused its own fused INT8 graph ({why}): basic optimizations only")


def kernels_run(model: Path, device: str, threads: int, feed: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Operator -> execution provider -> how many of its kernels one run executed, from onnxruntime's profile."""
    with tempfile.TemporaryDirectory() as tmp:
        sess, _ = session(model, device, threads, profile_prefix=str(Path(tmp) / "profile"))
        sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    ran: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            ran[event["args"]["op_name"]][event["args"]["provider"]] += 1
    return {op: dict(providers) for op, providers in ran.items()}


def is_integer_kernel(op: str) -> bool:
    """onnxruntime's kernels that compute in 8-bit integers (QLinearConv, QLinearMatMul, ConvInteger, ...)."""
    return op.startswith(("QLinear", "QGemm")) or op.endswith("Integer")


def int8_execution(ran: dict[str, dict[str, int]], quantized: int, device: str, downgraded: str = "") -> str | None:
    """One line for the report: did the quantized model run integer kernels, and where; None for an FP32 model."""
    if not quantized:
        return None

    def where(ops: dict[str, dict[str, int]]) -> str:
        return ", ".join(f"{op} x{n} on {provider}" for op, providers in sorted(ops.items())
                         for provider, n in sorted(providers.items()))

    integer = {op: providers for op, providers in ran.items() if is_integer_kernel(op)}
    qdq = sum(sum(providers.values()) for op, providers in ran.items() if op in QDQ)
    fallback = {op: {p: n for p, n in providers.items() if p != PROVIDERS[device]}
                for op, providers in ran.items()}
    fallback = {op: providers for op, providers in fallback.items() if providers}
    text = (f"int8 kernels: {where(integer)}" if integer else
            "simulated: no integer kernel ran, the quantize/dequantize ops wrap FP kernels")
    if integer and qdq:
        text += f"; {qdq} QuantizeLinear/DequantizeLinear kernels still run between them"
    if fallback:
        text += f"; fell back from {PROVIDERS[device]}: {where(fallback)}"
    if downgraded:
        text += f"; {downgraded}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = bench_arguments(__doc__, default_split="val2017").parse_args(argv)
    check_arguments(args)
    model = args.model_dir / "model.onnx"
    if not model.is_file():
        return refuse(f"{args.model_dir}: no model.onnx")
    import onnxruntime as ort

    sess, downgraded = session(model, args.device, args.threads)
    meta = {k.removeprefix("npuflow."): json.loads(v)
            for k, v in sess.get_modelmeta().custom_metadata_map.items() if k.startswith("npuflow.")}
    if "img_size" not in meta or "categories" not in meta:
        return refuse(f"{model} has no npuflow.img_size/npuflow.categories metadata: export it with "
                      f"npuflow.programs.torch_export")
    size = tuple(meta["img_size"])
    ann_file = args.dataset_root / "annotations" / f"instances_{args.split}.json"
    images = sorted(json.loads(ann_file.read_text())["images"], key=lambda im: im["id"])
    if not images:
        raise SystemExit(f"{ann_file}: no images to benchmark on")
    detections, pool = [], []  # accuracy pass over the whole split (untimed), streamed; TIMED_POOL kept
    for im in images:
        rgb, (w0, h0) = load_rgb(args.dataset_root / args.split / im["file_name"], size)
        feed = {"images": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])}
        if len(pool) < TIMED_POOL:
            pool.append(feed)
        boxes, scores, labels = sess.run(None, feed)
        detections += to_coco(boxes, scores, labels, im["id"], (w0 / size[1], h0 / size[0]), meta["categories"])
    stats = coco_stats(ann_file, detections)

    timing = timed(lambda i: sess.run(None, pool[i % len(pool)]), args.warmup, args.iters)
    quantized = quantize_ops(model)
    ran = kernels_run(model, args.device, args.threads, pool[0])
    result = {"model_dir": str(args.model_dir), "program": model.name, "device": args.device,
              "onnxruntime_version": ort.__version__, "provider": PROVIDERS[args.device], "batch_size": 1,
              "warmup": args.warmup, "iters": args.iters, "threads": args.threads, "images": len(images),
              "quantize_ops": quantized, "int8_execution": int8_execution(ran, quantized, args.device, downgraded),
              "kernels": ran, **timing,
              "accuracy": {"split": args.split, "map": stats["bbox_mAP"], "ap50": stats["bbox_mAP_50"],
                           "detections": len(detections), "coco_stats": stats}}
    write_result(args.out, result, f"COCO mAP {stats['bbox_mAP']:.4f} on {args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
