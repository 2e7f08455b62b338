"""Benchmark an exported PaddleDetection model with Paddle Inference: latency, throughput and COCO mAP.

Runs under the toolkit's interpreter (it imports paddle, cv2, numpy, pycocotools), never inside Airflow.
Preprocessing follows the model's own ``infer_cfg.yml``, as PaddleDetection's deploy/python/infer.py does, so the
mAP measured here is that of the exported artefact, not of the training checkpoint.
Timing covers input copy, ``predictor.run()`` and output copy for one batch; decoding and resizing are timed apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2  # before paddle: paddle 2.6 bundles its own zlib (FACTS)
import numpy as np
import yaml


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def preprocess(path: Path, ops: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Decode and transform one image the way infer_cfg.yml says; returns the predictor's named inputs."""
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise ValueError(f"cannot decode {path}")
    im = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    h0, w0 = im.shape[:2]
    scale = np.array([1.0, 1.0], dtype=np.float32)
    for op in ops:
        kind = op["type"]
        if kind == "Resize":
            th, tw = op["target_size"]
            if op.get("keep_ratio", True):
                s = min(th / h0, tw / w0) if max(th, tw) >= min(th, tw) else min(th, tw) / min(h0, w0)
                sy = sx = s
            else:
                sy, sx = th / h0, tw / w0
            im = cv2.resize(im, None, fx=sx, fy=sy, interpolation=op.get("interp", 1))
            scale = np.array([sy, sx], dtype=np.float32)
        elif kind == "NormalizeImage":
            if op.get("is_scale", True):
                im = im / 255.0
            if op.get("norm_type", "mean_std") == "mean_std":
                im = (im - np.array(op["mean"], np.float32)) / np.array(op["std"], np.float32)
        elif kind == "Permute":
            im = im.transpose(2, 0, 1)
        elif kind == "PadStride":
            stride = op.get("stride", 0)
            if stride > 0:
                c, h, w = im.shape
                ph, pw = int(np.ceil(h / stride) * stride), int(np.ceil(w / stride) * stride)
                padded = np.zeros((c, ph, pw), np.float32)
                padded[:, :h, :w] = im
                im = padded
        else:
            raise ValueError(f"preprocess op {kind!r} of infer_cfg.yml is not supported by this benchmark")
    chw = np.ascontiguousarray(im[None].astype(np.float32))
    return {"image": chw, "im_shape": np.array([chw.shape[2:]], np.float32), "scale_factor": scale[None]}


QUANT_OPS = ("quantize_linear", "dequantize_linear")


def quantize_ops(program: Path) -> int:
    """Quantize/dequantize ops in the program: 0 for an FP32 model, many for ACT's INT8 (QDQ) model."""
    if program.suffix == ".pdmodel":
        from paddle.base import core

        desc = core.ProgramDesc(program.read_bytes())
        types = [desc.block(b).op(o).type() for b in range(desc.num_blocks()) for o in range(desc.block(b).op_size())]
        return sum(t in QUANT_OPS or (t.startswith("fake_") and "quantize" in t) for t in types)
    text = program.read_text(errors="replace")  # PIR JSON (paddle 3): op names are plain text
    return sum(text.count(f'"pd_op.{op}"') for op in QUANT_OPS)


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


def run_once(predictor, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(inputs[name])
    predictor.run()
    names = predictor.get_output_names()
    boxes = predictor.get_output_handle(names[0]).copy_to_cpu()
    nums = predictor.get_output_handle(names[1]).copy_to_cpu() if len(names) > 1 else np.array([len(boxes)])
    return boxes, nums


def coco_map(ann_file: Path, detections: list[dict[str, Any]]) -> dict[str, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(ann_file))
    if not detections:
        return {"map": 0.0, "ap50": 0.0, "detections": 0}
    dt = gt.loadRes(detections)
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return {"map": float(ev.stats[0]), "ap50": float(ev.stats[1]), "detections": len(detections)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--device", choices=["cpu", "gpu", "npu"], default="cpu")
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--split", default="val2017")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.warmup < 0 or args.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")

    cfg = yaml.safe_load((args.model_dir / "infer_cfg.yml").read_text())
    ann_file = args.dataset_root / "annotations" / f"instances_{args.split}.json"
    ann = json.loads(ann_file.read_text())
    images = sorted(ann["images"], key=lambda im: im["id"])
    if not images:
        raise SystemExit(f"{ann_file}: no images to benchmark on")
    cat_ids = sorted(c["id"] for c in ann["categories"])  # ppdet maps class index -> sorted category id
    predictor, program, quantized = make_predictor(args.model_dir, args.device, args.threads)

    t0 = time.perf_counter()
    inputs = [preprocess(args.dataset_root / args.split / im["file_name"], cfg["Preprocess"]) for im in images]
    preprocess_ms = (time.perf_counter() - t0) * 1000 / len(images)

    # Accuracy pass over the whole split (untimed).
    detections = []
    for i, im in enumerate(images):
        boxes, nums = run_once(predictor, inputs[i])
        for cls, score, x1, y1, x2, y2 in boxes[: int(nums[0])]:
            if int(cls) < 0:
                continue
            detections.append({"image_id": im["id"], "category_id": cat_ids[int(cls)], "score": float(score),
                               "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    accuracy = coco_map(ann_file, detections)

    for i in range(args.warmup):
        run_once(predictor, inputs[i % len(inputs)])
    latencies = []
    started = time.perf_counter()
    for i in range(args.iters):
        t = time.perf_counter()
        run_once(predictor, inputs[i % len(inputs)])
        latencies.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - started

    import paddle

    result = {
        "model_dir": str(args.model_dir), "program": program, "device": args.device,
        "paddle_version": paddle.__version__, "batch_size": 1, "warmup": args.warmup, "iters": args.iters,
        "threads": args.threads, "images": len(images), "quantize_ops": quantized,
        "cpu_backend": "onednn" if args.device == "cpu" else None,
        "latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                       "p99": percentile(latencies, 99), "mean": float(np.mean(latencies))},
        "preprocess_ms_per_image": preprocess_ms,
        "throughput_ips": args.iters / wall,
        "coco": {"split": args.split, **accuracy},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(f"latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms; "
          f"throughput {result['throughput_ips']:.1f} images/s; COCO mAP {accuracy['map']:.4f} on {args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
