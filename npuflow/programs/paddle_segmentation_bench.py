"""Benchmark an exported PaddleSeg model with Paddle Inference: latency, throughput, mIoU on Cityscapes val.

Runs under the toolkit's interpreter (it imports paddle, cv2, numpy), never inside Airflow. Preprocessing follows
the model's own ``deploy.yaml``, as PaddleSeg's deploy/python/infer.py does; accuracy is computed against the
``*_gtFine_labelTrainIds.png`` labels (255 = ignore) with one confusion matrix over the split, so mIoU, pixel
accuracy and per-class IoU are those of the exported artefact. Timing covers input copy, ``predictor.run()``
and output copy for one image.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import cv2  # before paddle: paddle 2.6 bundles its own zlib (FACTS)
import numpy as np
import yaml

from npuflow.programs.bench_common import TIMED_POOL, bench_arguments, check_arguments, timed, write_result
from npuflow.programs.paddle_inference import describe, make_predictor

IGNORE = 255


def preprocess(path: Path, ops: list[dict[str, Any]]) -> np.ndarray:
    """Decode and transform one image the way deploy.yaml says; returns NCHW float32."""
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"error: cannot decode {path}")
    im = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    for op in ops:
        kind = op["type"]
        if kind == "Normalize":
            mean = np.array(op.get("mean", [0.5, 0.5, 0.5]), np.float32)
            std = np.array(op.get("std", [0.5, 0.5, 0.5]), np.float32)
            im = (im / 255.0 - mean) / std
        elif kind == "Resize":
            h, w = op["target_size"][1], op["target_size"][0]  # PaddleSeg's target_size is (w, h)
            im = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            raise SystemExit(f"error: preprocess op {kind!r} of deploy.yaml is not supported by this benchmark")
    return np.ascontiguousarray(im.transpose(2, 0, 1)[None].astype(np.float32))


def pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """(image, train-id label) pairs by frame name; a frame without its label is an error, never a shift."""
    out = []
    for image in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        label = root / "gtFine" / split / image.parent.name / f"{stem}_gtFine_labelTrainIds.png"
        if not label.is_file():
            raise SystemExit(f"error: {image} has no label {label}")
        out.append((image, label))
    if not out:
        raise SystemExit(f"error: no leftImg8bit/{split}/*/*_leftImg8bit.png under {root}")
    return out


def segmentation_metrics(confusion: np.ndarray) -> dict[str, Any]:
    """mIoU, pixel accuracy and per-class IoU from PaddleSeg's own ``paddleseg.utils.metrics`` of the checkout
    on ``PYTHONPATH`` (at ``npu_cann8.0`` a class in neither labels nor predictions counts IoU 1; the 2.8 wheel
    counted 0), so they compare with the training's [EVAL] of the same toolkit."""
    import paddle
    from paddleseg.utils import metrics

    intersect = np.diag(confusion).astype(np.int64)
    areas = [paddle.to_tensor(a) for a in (intersect, confusion.sum(0).astype(np.int64),
                                            confusion.sum(1).astype(np.int64))]
    class_iou, miou = metrics.mean_iou(*areas)
    return {"miou": float(miou), "pixel_acc": float(intersect.sum() / max(confusion.sum(), 1)),
            "class_iou": [float(v) for v in class_iou], "pixels": int(confusion.sum())}


def run_once(predictor, image: np.ndarray) -> np.ndarray:
    predictor.get_input_handle(predictor.get_input_names()[0]).copy_from_cpu(image)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def class_map(out: np.ndarray) -> np.ndarray:
    """H x W class ids from the program's output: ids already (``--output_op argmax``) or logits (``none``, as
    exported for compression)."""
    if out.ndim == 4 and out.shape[1] > 1:
        out = out.argmax(axis=1)
    return out.reshape(out.shape[-2:])


def main(argv: list[str] | None = None) -> int:
    p = bench_arguments(__doc__, default_split="val")
    p.add_argument("--num-classes", type=int, default=19, help="train ids 0..N-1 (Cityscapes: 19)")
    args = p.parse_args(argv)
    check_arguments(args)
    deploy = yaml.safe_load((args.model_dir / "deploy.yaml").read_text())["Deploy"]
    predictor, program, quantized = make_predictor(args.model_dir, args.device, args.threads)
    frames = pairs(args.dataset_root, args.split)
    # Accuracy pass over the whole split (untimed): one confusion matrix, ignore label excluded. Streamed: only
    # TIMED_POOL inputs are kept for the timing.
    n = args.num_classes
    confusion = np.zeros((n, n), np.int64)
    pool, preprocess_s = [], 0.0
    for image_path, label_path in frames:
        t0 = time.perf_counter()
        image = preprocess(image_path, deploy.get("transforms", []))
        preprocess_s += time.perf_counter() - t0
        if len(pool) < TIMED_POOL:
            pool.append(image)
        pred = class_map(run_once(predictor, image)).astype(np.int64)
        label = cv2.imread(str(label_path), cv2.IMREAD_GRAYSCALE).astype(np.int64)
        if label.shape != pred.shape:
            raise SystemExit(f"error: {label_path} is {label.shape}, the prediction {pred.shape}")
        keep = label != IGNORE
        confusion += np.bincount(label[keep] * n + np.clip(pred[keep], 0, n - 1), minlength=n * n).reshape(n, n)
    accuracy = segmentation_metrics(confusion)

    # Timed: one image to class ids, so a model that leaves the argmax to the host (exported for compression
    # with --output_op none) pays for it as one with the argmax inside does.
    timing = timed(lambda i: class_map(run_once(predictor, pool[i % len(pool)])), args.warmup, args.iters)
    write_result(args.out, {**describe(args, program, quantized, len(frames)), **timing,
                            "preprocess_ms_per_image": preprocess_s * 1000 / len(frames),
                            "accuracy": {"split": args.split, **accuracy}},
                 f"mIoU {accuracy['miou']:.4f}, pixel accuracy {accuracy['pixel_acc']:.4f} on {args.split}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
