"""Parse time of each DAG file, measured the way the dag-processor pays it: Airflow already imported, each
file executed on its own in a fresh module. Prints per-file times, the total and the ratio to the 0.1 s goal.

    .venv/bin/python bench/dag_parse.py [--repeat 5]

The first file also pays for importing this project's shared modules (recipe, plan, operators); the
``cold`` column shows that, the ``warm`` columns show the steady per-file cost once they are cached, which is
what every re-parse of the dag-processor costs.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 0.1


def load(path: Path, n: int) -> float:
    spec = importlib.util.spec_from_file_location(f"bench_dag_{path.stem}_{n}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    started = time.perf_counter()
    spec.loader.exec_module(module)
    took = time.perf_counter() - started
    assert hasattr(module, "dag"), f"{path} defines no dag"
    return took


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401  - the dag-processor has Airflow loaded before it parses any file
    from airflow.sdk import DAG  # noqa: F401

    print(f"import airflow.sdk: {time.perf_counter() - t0:.3f} s (paid once per process, not per file)")
    files = sorted((ROOT / "dags").glob("*.py"))
    print(f"{'file':60s} {'cold s':>8s} {'warm median s':>14s} {'warm max s':>11s} {'goal ratio':>10s}")
    total_cold = total_warm = 0.0
    worst = 0.0
    for path in files:
        cold = load(path, 0)
        warm = [load(path, i) for i in range(1, args.repeat + 1)]
        med = statistics.median(warm)
        total_cold += cold
        total_warm += med
        worst = max(worst, med)
        print(f"{path.name:60s} {cold:8.4f} {med:14.4f} {max(warm):11.4f} {med / GOAL_S:10.3f}")
    heavy = sorted(m for m in ("paddle", "torch", "numpy", "cv2") if m in sys.modules)
    print(f"total: cold {total_cold:.3f} s, warm {total_warm:.3f} s for {len(files)} files; "
          f"worst warm file / goal = {worst / GOAL_S:.3f}; heavy modules imported: {heavy or 'none'}")
    return 0 if worst <= GOAL_S and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
