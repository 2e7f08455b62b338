"""Dataset validation: the checks that must pass before a night of NPU time is spent.

``python -m npuflow.datasets.validate {coco,cityscapes,yolo} ROOT [--split S ...] [--expect JSON]`` (also
``npuflow validate-dataset``) writes a JSON report (counts, each problem kind with its total and first examples)
and exits 0 when clean, 1 on errors. Warnings (an image without annotations, say) are reported and let the run
go on. Runs under the project's interpreter and, like every stage module, under Python 3.9.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from npuflow.datasets.cityscapes import validate_cityscapes
from npuflow.datasets.coco import validate_coco
from npuflow.datasets.digest import DEFAULT_CACHE, dataset_digest
from npuflow.datasets.findings import Findings
from npuflow.datasets.yolo import validate_yolo
from npuflow.errors import refuse

VALIDATORS = {"coco": validate_coco, "cityscapes": validate_cityscapes, "yolo": validate_yolo}
DEFAULT_SPLITS = {"coco": ["train2017", "val2017"], "cityscapes": ["train", "val"], "yolo": ["train2017", "val2017"]}


def validate(fmt: str, root: Path, splits: list[str], expect: dict[str, Any] | None = None) -> Findings:
    found = Findings()
    if not root.is_dir():
        found.error("missing_dataset_root", str(root))
        return found
    for split in splits:
        VALIDATORS[fmt](root, split, found, expect)
    return found


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("format", choices=sorted(VALIDATORS))
    p.add_argument("root", type=Path)
    p.add_argument("--split", action="append", help="split to check (repeatable); default: the format's usual two")
    p.add_argument("--expect", type=json.loads, default={},
                   help='counts to hold the set to, as JSON: {"images": {"val2017": 5000}, "categories": 80}')
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--digest-cache", type=Path, default=DEFAULT_CACHE,
                   help="folder of the per-dataset digest caches (default: %(default)s)")
    return p


def run(args: argparse.Namespace) -> int:
    splits = args.split or DEFAULT_SPLITS[args.format]
    started = time.time()
    found = validate(args.format, args.root, splits, args.expect)
    report = {**found.to_dict(), "format": args.format, "root": str(args.root), "splits": splits,
              "expect": args.expect, "seconds": round(time.time() - started, 3)}
    if found.ok:  # provenance: what the models are trained on, re-reading only files that changed
        content = dataset_digest(args.root, args.digest_cache, tuple(splits))
        report["content"] = content.to_dict()
        print(f"content {content.digest} ({content.files} files, {content.hashed} read, "
              f"{content.files - content.hashed} unchanged since the last digest)")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.format} dataset {args.root}: counts {json.dumps(found.counts)} in {report['seconds']} s")
    for kind, info in report["warnings"].items():
        print(f"warning: {kind} x{info['count']}, e.g. {info['examples'][0]}")
    if not found.ok:
        return refuse(f"dataset is not usable: {found.describe()}")
    print("dataset is clean")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
