"""The same smoke training as a host process and in a container: training throughput and stage start-up.

    .venv/bin/python bench/runner_overhead.py [--dag yolor_p6_coco] [--repeat 3] [--epochs 24]

Starts a Docker engine of its own (tests/engine.py: dockerd, a debootstrap'ed base, the stage image built from
docker/), then runs the train stage of the DAG's smoke profile through ``execute_stage`` with runner=process and
runner=docker, alternating. Throughput is the stage's own measure (images/s over the steady steps, or the
world size x batch over the mean step time); start-up is the time from the stage's start to the toolkit's first
line of output. Goal: container/host throughput >= 0.98.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npuflow.execute import execute_stage  # noqa: E402
from npuflow.plan import build_plan  # noqa: E402
from npuflow.recipe import load_recipe  # noqa: E402
from tests.engine import STAGE_IMAGES, running_engine  # noqa: E402


def throughput(result: dict) -> float:
    metrics = result["metrics"]
    if metrics.get("ips_global_median"):
        return float(metrics["ips_global_median"])
    return float(result["result"]["metrics"]["train_ips"])


def one(dag: str, runner: str, image: str, epochs: int, runs: Path, n: int) -> tuple[float, float]:
    recipe = load_recipe(dag)
    params = {"profile": "smoke", "epochs": epochs, "runner": runner, **({"image": image} if runner == "docker" else {})}
    plan = build_plan(recipe, params, run_id=f"{runner}{n}", runs_root=runs)
    for name in ("prepare_dataset", "validate_dataset"):
        execute_stage(plan, plan.stage(name), log=lambda line: None, log_format=recipe.log_format)
    first: list[float] = []
    started = time.monotonic()

    def log(line: str) -> None:
        # Our own lines (the command, env, container) come before the toolkit's first one.
        if not first and not line.startswith(("stage ", "env: ", "container: ", "preflight", "resume")):
            first.append(time.monotonic() - started)

    result = execute_stage(plan, plan.stage("train"), log=log, log_format=recipe.log_format)
    return throughput(result), first[0] if first else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dag", default="yolor_p6_coco")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=24)
    args = ap.parse_args()
    recipe = load_recipe(args.dag)
    image = recipe.profile("smoke")["container"]["image"]
    with running_engine({image: STAGE_IMAGES[image]}) as engine, tempfile.TemporaryDirectory() as tmp:
        os.environ["DOCKER_HOST"] = engine.host
        got: dict[str, list[tuple[float, float]]] = {"process": [], "docker": []}
        for i in range(args.repeat):
            for runner in ("process", "docker"):
                got[runner].append(one(args.dag, runner, image, args.epochs, Path(tmp), i))
                ips, start = got[runner][-1]
                print(f"repeat {i} {runner}: {ips:.1f} images/s, first toolkit line after {start:.2f} s", flush=True)
    host_ips = statistics.median(x for x, _ in got["process"])
    box_ips = statistics.median(x for x, _ in got["docker"])
    host_start = statistics.median(s for _, s in got["process"])
    box_start = statistics.median(s for _, s in got["docker"])
    print(f"{args.dag} smoke train, median of {args.repeat}: throughput host {host_ips:.1f}, container {box_ips:.1f} "
          f"images/s, ratio {box_ips / host_ips:.3f} (goal >= 0.98); start-up host {host_start:.2f} s, container "
          f"{box_start:.2f} s, ratio {box_start / host_start:.2f}")


if __name__ == "__main__":
    main()
