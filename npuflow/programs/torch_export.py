"""Export a PyTorch toolkit's checkpoint to ONNX: the whole detector, pre- and post-processing (NMS) included.

    python -m npuflow.programs.torch_export --adapter npuflow_adapter --checkpoint last.pt \
        --dataset-root <coco> --split val2017 --out <stage>/model.onnx

Runs under the toolkit's interpreter with the toolkit's folder as cwd (where its adapter lives; see
npuflow/torchdet/adapter.py). The trace runs on a real val image the model detects something in (a traced
graph keeps only the branches its example took), then onnxruntime runs the file on that image and must give the
boxes torch gave. Exit code 78: a problem no retry changes (no adapter, no checkpoint, a mismatch).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from npuflow.errors import refuse

#: onnxruntime and torch agree to ~2e-4 on torchvision's SSD (FACTS); a real mismatch is far larger.
TOLERANCE_PX = 1e-2


def model_arguments(description: str) -> argparse.ArgumentParser:
    """The flags both PyTorch programs take: which toolkit adapter, which checkpoint, which data."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, help="the toolkit's adapter module, importable from --toolkit-dir")
    p.add_argument("--toolkit-dir", type=Path, default=Path.cwd())
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--split", default="val2017", help="the split the example image for the trace comes from")
    p.add_argument("--out", type=Path, required=True)
    return p


def example_image(model: Any, data: Any, info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The first val image the model detects something in, and torch's detections on it. An adapter whose decode
    has no branch on the number of boxes (``trace_safe``) may trace on an image with none: an untrained model."""
    import torch

    model.eval()
    first = None
    with torch.no_grad():
        for i in range(len(data)):
            img, _ = data[i]
            det = model([img])[0]
            if len(det["boxes"]):
                return img, det
            first = first or (img, det)
    if first is not None and info.get("trace_safe"):
        return first
    raise LookupError(f"the model detects nothing on any of the {len(data)} {data.img_dir.name} images: a traced "
                      f"export would keep no detection branch")


def onnx_mismatch(path: Path, img: Any, det: dict[str, Any]) -> float:
    """How far onnxruntime's boxes are from torch's on the example (input pixels); inf if the counts differ.

    The boxes are matched regardless of order (the largest distance from any box of one set to the nearest box of
    the same label in the other): detections with near-tied scores come out of the two runtimes in either order."""
    import numpy as np
    import onnxruntime as ort

    boxes, _, labels = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": img[None].numpy()})
    ref, ref_labels = det["boxes"].numpy(), det["labels"].numpy()
    if boxes.shape != ref.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    dist = np.abs(boxes[:, None, :] - ref[None, :, :]).max(-1)  # [onnx, torch], L-inf per pair
    dist[labels[:, None] != ref_labels[None, :]] = np.inf
    return float(max(dist.min(1).max(), dist.min(0).max()))


def main(argv: list[str] | None = None) -> int:
    p = model_arguments(__doc__)
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        return refuse(f"checkpoint {args.checkpoint} does not exist")

    import torch  # before anything that may import paddle (FACTS)

    from npuflow.torchdet.adapter import AdapterError, load_adapter
    from npuflow.torchdet.data import CocoBoxes
    from npuflow.torchdet.onnx_io import export

    try:
        adapter = load_adapter(args.adapter, args.toolkit_dir)
        model, info = adapter.load(str(args.checkpoint))
    except AdapterError as exc:
        return refuse(str(exc))
    data = CocoBoxes.split(args.dataset_root, args.split, tuple(info["img_size"]))
    try:
        img, det = example_image(model, data, info)
    except LookupError as exc:
        return refuse(str(exc))
    export(model, info, img, args.out, opset=args.opset)
    diff = onnx_mismatch(args.out, img, det)
    if not diff <= TOLERANCE_PX:
        return refuse(f"{args.out}: onnxruntime's boxes differ from torch's by {diff} px on the example image")
    summary = {"checkpoint": str(args.checkpoint), "onnx": str(args.out), "opset": args.opset,
               "img_size": info["img_size"], "categories": info["categories"], "torch_version": torch.__version__,
               "max_box_diff_px": diff, "example_detections": len(det["boxes"])}
    args.out.with_name("export.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"exported {args.checkpoint} -> {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, opset {args.opset}); "
          f"onnxruntime matches torch within {diff:.2e} px on the example image", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
