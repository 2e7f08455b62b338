"""Peak memory of the Paddle detection benchmark as its split grows: the accuracy pass streams the images.

    .venv/bin/python bench/benchmark_memory.py [--sizes 8 64 256] [--image 640 480]

Trains and exports the PicoDet smoke model with PaddleDetection's own tools (one epoch, through
``execute_stage``), then runs ``npuflow.programs.paddle_detection_bench`` on generated COCO val splits of each
size at the given resolution, each in a fresh process, and prints its peak RSS (``ru_maxrss`` of the child).
Before the streaming, every preprocessed image (3 x 416 x 416 float32 for PicoDet, 3 x 640 x 640 for
PP-YOLOE+) was held at once: val2017's 5,000 images at 640 px are about 25 GB. The ratio of the largest to the
smallest split says whether memory still grows with the split; nothing here is a pass/fail threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.datasets.synth import make_coco  # noqa: E402
from npuflow.execute import execute_stage  # noqa: E402
from npuflow.plan import build_plan  # noqa: E402
from npuflow.recipe import load_recipe  # noqa: E402

DAG = "picodet_s_416_coco_npu_qat"


def peak_rss_mib(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Run ``argv`` in a fresh process and return that process's own peak RSS (``wait4``'s rusage)."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"the benchmark failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256])
    ap.add_argument("--image", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    args = ap.parse_args()
    recipe = load_recipe(DAG)
    with tempfile.TemporaryDirectory() as tmp:
        plan = build_plan(recipe, {"profile": "smoke", "epochs": 1}, run_id="bench-memory", runs_root=Path(tmp))
        for name in ("prepare_dataset", "validate_dataset", "train", "export"):
            execute_stage(plan, plan.stage(name), log=lambda _: None, log_format=recipe.log_format)
        bench = plan.stage("benchmark_fp32")
        env = {**os.environ, **bench.env}
        rows = []
        for n in sorted(args.sizes):
            data = Path(tmp) / f"coco{n}"
            make_coco(data, {"val2017": n}, tuple(args.image), seed=n)
            argv = list(bench.argv)
            argv[argv.index("--dataset-root") + 1] = str(data)
            argv[argv.index("--out") + 1] = str(Path(tmp) / f"bench{n}.json")
            rows.append((n, peak_rss_mib(argv, env, bench.cwd)))
            json.loads((Path(tmp) / f"bench{n}.json").read_text())  # it wrote its result
    for n, mib in rows:
        print(f"val images {n:5d} at {args.image[0]}x{args.image[1]}: peak RSS {mib:8.1f} MiB")
    (n0, m0), (n1, m1) = rows[0], rows[-1]
    print(f"peak RSS ratio {n1} vs {n0} images: {m1 / m0:.3f} (1.0: flat; held in memory it grew by "
          f"~{(n1 - n0) * 3 * 416 * 416 * 4 / 2**20:.0f} MiB of preprocessed images)")


if __name__ == "__main__":
    main()
