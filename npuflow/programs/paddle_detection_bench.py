"""Benchmark an exported PaddleDetection model with Paddle Inference: latency, throughput and COCO mAP.

Runs under the toolkit's interpreter (it imports paddle, cv2, numpy, faster-coco-eval), never inside Airflow.
Preprocessing follows the model's own ``infer_cfg.yml``, as PaddleDetection's deploy/python/infer.py does, so the
mAP measured here is that of the exported artefact, not of the training checkpoint.
Timing covers input copy, ``predictor.run()`` and output copy for one batch; decoding and resizing are timed apart.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2  # before paddle: paddle 2.6 bundles its own zlib (FACTS)
import numpy as np
import yaml

from npuflow.cocoeval import coco_stats
from npuflow.programs.bench_common import TIMED_POOL, bench_arguments, check_arguments, timed, write_result
from npuflow.programs.paddle_inference import describe, make_predictor


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


def run_once(predictor, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    for name in predictor.get_input_names():
        predictor.get_input_handle(name).copy_from_cpu(inputs[name])
    predictor.run()
    names = predictor.get_output_names()
    boxes = predictor.get_output_handle(names[0]).copy_to_cpu()
    nums = predictor.get_output_handle(names[1]).copy_to_cpu() if len(names) > 1 else np.array([len(boxes)])
    return boxes, nums


def main(argv: list[str] | None = None) -> int:
    args = bench_arguments(__doc__, default_split="val2017").parse_args(argv)
    check_arguments(args)
    cfg = yaml.safe_load((args.model_dir / "infer_cfg.yml").read_text())
    ann_file = args.dataset_root / "annotations" / f"instances_{args.split}.json"
    ann = json.loads(ann_file.read_text())
    images = sorted(ann["images"], key=lambda im: im["id"])
    if not images:
        raise SystemExit(f"{ann_file}: no images to benchmark on")
    cat_ids = sorted(c["id"] for c in ann["categories"])  # ppdet maps class index -> sorted category id
    predictor, program, quantized = make_predictor(args.model_dir, args.device, args.threads)

    # Accuracy pass over the whole split (untimed), streamed: only TIMED_POOL inputs are kept for the timing.
    detections, pool, preprocess_s = [], [], 0.0
    for im in images:
        t0 = time.perf_counter()
        inputs = preprocess(args.dataset_root / args.split / im["file_name"], cfg["Preprocess"])
        preprocess_s += time.perf_counter() - t0
        if len(pool) < TIMED_POOL:
            pool.append(inputs)
        boxes, nums = run_once(predictor, inputs)
        for cls, score, x1, y1, x2, y2 in boxes[: int(nums[0])]:
            if int(cls) < 0:
                continue
            detections.append({"image_id": im["id"], "category_id": cat_ids[int(cls)], "score": float(score),
                               "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    stats = coco_stats(ann_file, detections)
    accuracy = {"map": stats["bbox_mAP"], "ap50": stats["bbox_mAP_50"], "detections": len(detections)}

    timing = timed(lambda i: run_once(predictor, pool[i % len(pool)]), args.warmup, args.iters)
    result = {**describe(args, program, quantized, len(images)), **timing,
              "preprocess_ms_per_image": preprocess_s * 1000 / len(images), "accuracy": {"split": args.split, **accuracy}}
    write_result(args.out, result, f"COCO mAP {accuracy['map']:.4f} on {args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
