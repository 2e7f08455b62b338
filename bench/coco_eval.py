"""faster-coco-eval against pycocotools on a generated val2017-sized case: the time ratio and the 12 stats.

    .venv/bin/python bench/coco_eval.py [--images 5000] [--seed 0]

The case has COCO val2017's shape: 5,000 images, ~36,000 ground-truth boxes over 80 non-contiguous category ids
(areas spread over small/medium/large, a few crowd boxes), and 100 detections per image (~500,000), some near
a ground-truth box and the rest anywhere, with random scores. Both libraries evaluate the same files; the
script prints each one's wall time (load + evaluate + accumulate + summarize), the ratio, and whether all 12
stats are equal. Nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# COCO's 80 category ids (1..90 with gaps).
CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def make_case(images: int, seed: int) -> tuple[dict, list[dict]]:
    rng = random.Random(seed)
    imgs, anns, dets = [], [], []
    for image_id in range(1, images + 1):
        w, h = rng.choice([(640, 480), (640, 427), (500, 375), (480, 640)])
        imgs.append({"id": image_id, "width": w, "height": h, "file_name": f"{image_id:012d}.jpg"})
        boxes = []
        for _ in range(max(1, int(rng.gauss(7.6, 4)))):
            bw, bh = (rng.uniform(4, w * 0.9) * rng.choice([0.1, 0.3, 1.0]) for _ in range(2))
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            cat = rng.choice(CATEGORY_IDS)
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": int(rng.random() < 0.01)})
            boxes.append((x, y, bw, bh, cat))
        for k in range(100):
            if k < len(boxes) * 2:
                x, y, bw, bh, cat = boxes[k % len(boxes)]
                j = lambda v: v * rng.uniform(0.95, 1.05)  # noqa: E731
                box = [j(x), j(y), j(bw), j(bh)]
                cat = cat if rng.random() < 0.8 else rng.choice(CATEGORY_IDS)
            else:
                bw, bh = rng.uniform(4, w / 2), rng.uniform(4, h / 2)
                box, cat = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], rng.choice(CATEGORY_IDS)
            dets.append({"image_id": image_id, "category_id": cat, "bbox": box, "score": rng.random()})
    gt = {"images": imgs, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in CATEGORY_IDS]}
    return gt, dets


def run(lib: str, gt_file: Path, dt_file: Path) -> tuple[float, list[float]]:
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        if lib == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval as Eval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as Eval
        gt = COCO(str(gt_file))
        ev = Eval(gt, gt.loadRes(str(dt_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - started, [float(v) for v in ev.stats[:12]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gt, dets = make_case(args.images, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gt_file, dt_file = Path(tmp) / "gt.json", Path(tmp) / "dt.json"
        gt_file.write_text(json.dumps(gt))
        dt_file.write_text(json.dumps(dets))
        print(f"case: {len(gt['images'])} images, {len(gt['annotations'])} ground-truth boxes, "
              f"{len(dets)} detections, {len(CATEGORY_IDS)} categories", flush=True)
        slow, slow_stats = run("pycocotools", gt_file, dt_file)
        print(f"pycocotools      {slow:7.2f} s", flush=True)
        fast, fast_stats = run("faster-coco-eval", gt_file, dt_file)
        print(f"faster-coco-eval {fast:7.2f} s", flush=True)
    worst = max(abs(a - b) for a, b in zip(slow_stats, fast_stats, strict=True))
    print(f"faster-coco-eval / pycocotools time = {fast / slow:.3f} ({slow / fast:.1f}x faster)")
    print(f"all 12 stats equal: {worst < 1e-12} (largest difference {worst:.2e}); "
          f"AP {fast_stats[0]:.4f}, AP50 {fast_stats[1]:.4f}, AR100 {fast_stats[8]:.4f}")


if __name__ == "__main__":
    main()
