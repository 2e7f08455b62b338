"""The report's plots, as PNG files in the run directory (matplotlib, no display).

From what the stages left: the train stage's ``metrics.jsonl`` (loss and learning rate per logged step,
throughput over time, the evaluation metric per epoch) and each benchmark's ``benchmark.json`` (the latency of
every timed run, FP32 beside INT8). A plot without data is skipped, not drawn empty.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_plots(run_dir: Path, stages: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Plot name -> PNG path (relative to the run directory)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = run_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    made: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=90)
        plt.close(fig)
        made[name] = f"plots/{name}.png"

    for name, stored in stages.items():
        if stored.get("kind") != "train":
            continue
        recs = _records(run_dir / name / "metrics.jsonl")
        train = [r for r in recs if r["type"] == "train" and "loss" in r.get("losses", {})]
        if train:
            fig, ax = plt.subplots(figsize=(6.4, 3.4))
            ax.plot(range(1, len(train) + 1), [r["losses"]["loss"] for r in train], color="tab:blue", label="loss")
            ax.set_xlabel("logged step")
            ax.set_ylabel("loss", color="tab:blue")
            if any("lr" in r for r in train):
                lr = ax.twinx()
                lr.plot(range(1, len(train) + 1), [r.get("lr") for r in train], color="tab:orange", label="lr")
                lr.set_ylabel("learning rate", color="tab:orange")
            ax.set_title(f"{name}: loss and learning rate")
            save(fig, f"{name}_loss_lr")
        # The toolkit's own clock where every step logs its time; else when the line was read (a followed
        # log.json is read in batches, once a second).
        timed = bool(train) and all(r.get("batch_cost") for r in train)
        clock = list(itertools.accumulate(r["batch_cost"] for r in train)) if timed else [r["t"] for r in train]
        speed = [(x, r["ips_global"]) for x, r in zip(clock, train, strict=True) if r.get("ips_global")]
        metrics = (stored.get("result") or {}).get("metrics", {})
        if not speed and metrics.get("calc_fps") and timed:  # no throughput field (log.json): images / step time
            images = metrics["calc_fps"] * metrics["step_time_mean_s"]
            speed = [(x, images / r["batch_cost"]) for x, r in zip(clock, train, strict=True)]
        if speed:
            fig, ax = plt.subplots(figsize=(6.4, 3.0))
            ax.plot([t for t, _ in speed], [v for _, v in speed], marker=".", linewidth=1)
            ax.set_xlabel("training seconds (logged step times, summed)" if timed else "seconds since the stage started")
            ax.set_ylabel("images/s (all cards)")
            ax.set_title(f"{name}: training throughput")
            save(fig, f"{name}_throughput")
        evals = [r for r in recs if r["type"] == "eval" and r.get("epoch") is not None
                 and ("bbox_map" in r or "miou" in r)]
        if evals:
            key = "bbox_map" if "bbox_map" in evals[0] else "miou"
            fig, ax = plt.subplots(figsize=(6.4, 3.0))
            ax.plot([r["epoch"] for r in evals], [r[key] for r in evals], marker="o")
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
            ax.set_title(f"{name}: evaluation during training")
            save(fig, f"{name}_eval")
    latencies = {}
    for name, stored in stages.items():
        bench = run_dir / name / "benchmark.json"
        if stored.get("kind") == "benchmark" and bench.is_file():
            values = json.loads(bench.read_text()).get("latencies_ms")
            if values:
                latencies[f"{name} ({stored.get('result', {}).get('precision', '?')})"] = values
    if latencies:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        for label, values in latencies.items():
            ax.hist(values, bins=30, alpha=0.6, label=label)
        ax.set_xlabel("latency per image (ms)")
        ax.set_ylabel("runs")
        ax.legend()
        ax.set_title("inference latency distribution")
        save(fig, "latency")
    return made
