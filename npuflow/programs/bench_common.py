"""What every benchmark program shares, whatever the framework: the kind's flags, timing, the result file.

Runs under the toolkit's interpreter (numpy only), never inside Airflow; Python 3.9 compatible.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def bench_arguments(description: str, default_split: str) -> argparse.ArgumentParser:
    """The flags the benchmark kind passes to every program."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--device", choices=["cpu", "gpu", "npu"], default="cpu")
    p.add_argument("--dataset-root", type=Path, required=True)
    p.add_argument("--split", default=default_split)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    return p


def check_arguments(args: argparse.Namespace) -> None:
    if args.warmup < 0 or args.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")


#: Preprocessed inputs kept for the timed loop (cycled); the accuracy pass streams the split one image at a time,
#: so memory does not grow with it (val2017 preprocessed at 640 px would be about 25 GB).
TIMED_POOL = 32


def timed(run: Callable[[int], Any], warmup: int, iters: int) -> dict[str, Any]:
    """``warmup`` untimed calls, then ``iters`` timed ones: latency percentiles (ms) and throughput."""
    for i in range(warmup):
        run(i)
    latencies = []
    started = time.perf_counter()
    for i in range(iters):
        t = time.perf_counter()
        run(i)
        latencies.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - started
    return {"latency_ms": {"p50": percentile(latencies, 50), "p90": percentile(latencies, 90),
                           "p99": percentile(latencies, 99), "mean": float(np.mean(latencies))},
            "throughput_ips": iters / wall, "latencies_ms": [round(v, 4) for v in latencies]}


def write_result(out: Path, result: dict[str, Any], score: str) -> None:
    """benchmark.json for the kind, and one line for the task log: latency, throughput and ``score``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lat = result["latency_ms"]
    print(f"latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, p99 {lat['p99']:.2f} ms; "
          f"throughput {result['throughput_ips']:.1f} images/s; {score}", flush=True)
