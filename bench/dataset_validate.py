"""Validation of a train2017-sized COCO instances file against pycocotools' own load of the same file.

    .venv/bin/python bench/dataset_validate.py [--images 118287] [--annotations 860001] [--repeat 2]

Generates an instances JSON with train2017's shape (118,287 images, ~860,000 annotations, the 80 real category
ids), then, each in a fresh child process, times and measures peak memory of (a) ``pycocotools.coco.COCO(path)``
and (b) our checks (``load_json`` + ``check_instances``, the JSON part of the validate stage; the image files
are the header-scan benchmark's business). Prints both and the ratios; the goal is ratio <= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]

CHILD = {
    "pycocotools": "from pycocotools.coco import COCO\nCOCO(PATH)\n",
    "npuflow": (
        "from pathlib import Path\n"
        "from npuflow.datasets.coco import check_instances, load_json\n"
        "from npuflow.datasets.findings import Findings\n"
        "found = Findings()\n"
        "check_instances(load_json(Path(PATH)), 'train2017', found,\n"
        "                {'images': {'train2017': IMAGES}, 'categories': 80, 'category_ids': [1, 90]})\n"
        "assert found.ok, found.describe()\n"
    ),
}


def generate(path: Path, n_images: int, n_anns: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480, "license": 1,
               "coco_url": f"http://images.cocodataset.org/train2017/{i:012d}.jpg", "date_captured": "2013-11-14",
               "flickr_url": ""} for i in range(1, n_images + 1)]
    anns = []
    for aid in range(1, n_anns + 1):
        w, h = rng.uniform(2, 300), rng.uniform(2, 300)
        x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
        anns.append({"id": aid, "image_id": rng.randint(1, n_images), "category_id": rng.choice(COCO_IDS),
                     "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)], "area": round(w * h * 0.7, 2),
                     "iscrowd": 0, "segmentation": [[round(x, 2), round(y, 2), round(x + w, 2), round(y, 2),
                                                     round(x + w, 2), round(y + h, 2), round(x, 2), round(y + h, 2)]]})
    cats = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_IDS]
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": anns,
                                "categories": cats}))


def measure(kind: str, path: Path, n_images: int) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child doing ``kind``, interpreter start-up included for both."""
    code = CHILD[kind].replace("PATH", repr(str(path))).replace("IMAGES", str(n_images))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} child failed with status {status}")
    return wall, usage.ru_maxrss / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=118287)
    p.add_argument("--annotations", type=int, default=860001)
    p.add_argument("--repeat", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "instances_train2017.json"
        t0 = time.perf_counter()
        generate(path, args.images, args.annotations)
        print(f"generated {path.name}: {args.images} images, {args.annotations} annotations, "
              f"{path.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s")
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in CHILD}
        for _ in range(args.repeat):
            for kind in CHILD:  # interleaved, so page cache and CPU state are shared fairly
                results[kind].append(measure(kind, path, args.images))
    row = {k: (statistics.median(w for w, _ in v), max(m for _, m in v)) for k, v in results.items()}
    for kind, (wall, mem) in row.items():
        print(f"{kind:12s} wall {wall:6.2f} s   peak RSS {mem:7.0f} MiB   (median of {args.repeat})")
    t_ratio = row["npuflow"][0] / row["pycocotools"][0]
    m_ratio = row["npuflow"][1] / row["pycocotools"][1]
    print(f"ratio npuflow/pycocotools: time {t_ratio:.2f}, peak memory {m_ratio:.2f} (goal: time <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
