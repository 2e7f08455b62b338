"""onnxruntime latency of the seed's SSD300 (VGG16) as FP32 and as the QAT path's QDQ export: INT8 / FP32.

    .venv/bin/python bench/qdq_latency.py [--iters 10] [--threads 1]

bench/compression.py measures the smoke models end to end, and they are too small for INT8 to pay on a CPU
(quantize/dequantize overhead against tiny convolutions). This measures what the same code
(npuflow/torchdet/qat.py: fake-quant on the backbone, then npuflow/torchdet/onnx_io.py) gives on the seed's
architecture at its 300 px, where convolutions dominate: the model is untrained (a few batches calibrate the
observers), which changes the weights, not the graph or its cost. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "toolkits" / "ssd"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmdet_standin.model import build_detector  # noqa: E402

from npuflow.model_ops import quantize_ops  # noqa: E402
from npuflow.torchdet import qat  # noqa: E402
from npuflow.torchdet.onnx_io import export  # noqa: E402


def latency_ms(path: Path, image: np.ndarray, iters: int, threads: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(2):
        session.run(None, {"images": image})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        session.run(None, {"images": image})
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_detector({"type": "SSD300VGG16", "num_classes": 80, "img_size": 300, "score_thr": 0.0})
    info = {"img_size": [300, 300], "categories": list(range(1, 81))}
    example = torch.rand(3, 300, 300)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export(model, info, example, fp32)
        qat.prepare(model, "backbone", (300, 300))
        with torch.no_grad():  # calibrate the observers, as the first QAT steps do
            for _ in range(3):
                model.backbone(torch.rand(2, 3, 300, 300))
        qat.freeze(model)
        export(model, info, example, int8)
        image = example[None].numpy()
        a, b = latency_ms(fp32, image, args.iters, args.threads), latency_ms(int8, image, args.iters, args.threads)
        print(f"SSD300 (VGG16) at 300 px, onnxruntime CPU, {args.threads} thread(s), median of {args.iters}:")
        print(f"FP32 {a:.1f} ms ({fp32.stat().st_size / 1e6:.1f} MB), INT8 QDQ {b:.1f} ms "
              f"({int8.stat().st_size / 1e6:.1f} MB, {quantize_ops(int8)} Q/DQ nodes); INT8 / FP32 = {b / a:.3f}")


if __name__ == "__main__":
    main()
