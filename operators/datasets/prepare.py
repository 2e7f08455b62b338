"""The dataset stage: make the dataset available at ``--root`` as the profile's source says.

``local``: the dataset must already be on disk (the production default until downloads land); a missing
folder fails here, in seconds, instead of an hour into training. ``synthetic``: generate a tiny set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from operators.datasets.synth import make_coco

GENERATORS = {"coco": make_coco}


def prepare(fmt: str, root: Path, source: dict) -> dict:
    started = time.time()
    if source["kind"] == "local":
        if not root.is_dir():
            raise SystemExit(f"dataset root {root} does not exist: put the {fmt} dataset there "
                             f"or pass dataset_root=<folder>")
        return {"source": "local", "root": str(root), "generated": False}
    if fmt not in GENERATORS:
        raise SystemExit(f"no generator for dataset format {fmt!r} yet")
    # Generate into a sibling temporary folder and move it into place: a half-written set never looks finished.
    tmp = root.with_name(f".{root.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = GENERATORS[fmt](tmp, source["images"], source["categories"], tuple(source["image_size"]),
                             seed=source.get("seed", 0))
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return {"source": "synthetic", "root": str(root), "generated": True, "images": counts,
            "seconds": round(time.time() - started, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--format", required=True, choices=["coco", "cityscapes", "yolo"])
    p.add_argument("--root", required=True, type=Path)
    p.add_argument("--source", required=True, help="the profile's dataset_source, as JSON")
    p.add_argument("--out", required=True, type=Path, help="result JSON")
    args = p.parse_args(argv)
    result = prepare(args.format, args.root, json.loads(args.source))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"dataset ready at {args.root}: {json.dumps(result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
