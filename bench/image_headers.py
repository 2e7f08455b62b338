"""Header scan of many small images: files per second of the validate stage's image check.

    .venv/bin/python bench/image_headers.py [--images 20000]

Generates N small JPEGs and a COCO JSON listing them, then times ``check_image_files`` (header reads on a
thread pool, what the validate stage runs) and, for comparison, the same headers read serially and PIL opening
each file (``Image.open(...).size``, which also only parses the header). Prints files/s and the ratios.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.datasets.coco import check_image_files  # noqa: E402
from npuflow.datasets.findings import Findings  # noqa: E402
from npuflow.datasets.imageheader import image_size  # noqa: E402


def generate(folder: Path, n: int) -> dict[int, dict]:
    from PIL import Image

    rng = random.Random(0)
    folder.mkdir(parents=True)
    images = {}
    tiles = [Image.effect_noise((64 + 8 * k, 48 + 4 * k), 60).convert("RGB") for k in range(8)]
    for i in range(1, n + 1):
        tile = tiles[rng.randrange(len(tiles))]
        name = f"{i:012d}.jpg"
        tile.save(folder / name, "JPEG", quality=80)
        images[i] = {"id": i, "file_name": name, "width": tile.width, "height": tile.height}
    return images


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=20000)
    args = p.parse_args()
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "train2017"
        t0 = time.perf_counter()
        images = generate(folder, args.images)
        print(f"generated {args.images} JPEGs in {time.perf_counter() - t0:.1f} s")
        paths = [folder / img["file_name"] for img in images.values()]

        def timed(label: str, fn) -> float:
            started = time.perf_counter()
            fn()
            rate = args.images / (time.perf_counter() - started)
            print(f"{label:38s} {rate:9.0f} files/s")
            return rate

        found = Findings()
        stage = timed("validate stage (check_image_files)", lambda: check_image_files(folder, images, set(images), found))
        assert found.ok, found.describe()
        serial = timed("header reads, one thread", lambda: [image_size(q) for q in paths])
        pil = timed("PIL Image.open(...).size, one thread", lambda: [Image.open(q).size for q in paths])
    print(f"ratio stage/serial {stage / serial:.2f}, stage/PIL {stage / pil:.2f} (page cache warm: files just written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
