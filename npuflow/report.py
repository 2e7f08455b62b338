"""The run report: what each stage measured, next to the tutorial's published numbers (JSON + Markdown).

Reads only the run directory (``plan.json`` and each ``<stage>/result.json``) and the recipe, so it can be rerun
on any finished run: ``python -m npuflow.report --run-dir RUN --recipe recipes/X.yaml``. Each stage's numbers
come from its kind (``measured``) under ``<stage>.<metric>``, which is what ``published.*.measured_as`` names.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from npuflow import gates, history
from npuflow.kinds import registry
from npuflow.kinds.base import ModelResult
from npuflow.plots import make_plots
from npuflow.report_html import provenance_rows, render_html
from npuflow.rundir import RESULT_FILE, write_json

#: One JSON line per run (Paddle TIPC's benchmark fields), in the runs root: plot a model's nights without Airflow.
TIPC_FILE = "tipc_records.jsonl"


def measured_metrics(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Every stage's numbers as ``<stage>.<metric>`` (``benchmark_int8.bbox_map``)."""
    kinds = registry()
    out: dict[str, float] = {}
    for name, stored in stages.items():
        kind = kinds.get(stored.get("kind", ""))
        if kind is None or kind.produces is None or not stored.get("ok") or stored.get("result") is None:
            continue
        for metric, value in kind.measured(kind.produces.from_dict(stored["result"])).items():
            out[f"{name}.{metric}"] = value
    return out


def _published_for(recipe: dict[str, Any], stage: str, metric: str) -> dict[str, Any] | None:
    return next((p for p in recipe.get("published", {}).values() if p["measured_as"] == f"{stage}.{metric}"), None)


def model_rows(stages: dict[str, dict[str, Any]], recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmarked model (FP32 export, INT8 compression, ...), with deltas against the first FP32
    row: seed 002's baseline-vs-QAT table with latency, throughput and size beside the mAP."""
    rows = []
    for name, stored in stages.items():
        if stored.get("kind") != "benchmark" or not stored.get("ok") or not stored.get("result"):
            continue
        b = stored["result"]
        metric, key = ("miou", "miou") if "miou" in b["accuracy"] else ("bbox_map", "map")
        published = _published_for(recipe, name, metric)
        rows.append({"stage": name, "model_stage": b["model_stage"], "precision": b["precision"],
                     "metric": metric, "accuracy": 100.0 * b["accuracy"][key],
                     "published": published["value"] if published else None,
                     "latency_p50_ms": b["latency_ms"]["p50"], "latency_p99_ms": b["latency_ms"]["p99"],
                     "throughput_ips": b["throughput_ips"], "size_mb": b["size_mb"],
                     "quantize_ops": b["settings"].get("quantize_ops"),
                     "int8_execution": b["settings"].get("int8_execution")})
    base = next((r for r in rows if r["precision"] == "fp32"), None)
    for row in rows:
        if base is not None and row is not base:
            row["delta"] = {
                "accuracy": row["accuracy"] - base["accuracy"],
                "latency_p50_ratio": row["latency_p50_ms"] / base["latency_p50_ms"],
                "throughput_ratio": row["throughput_ips"] / base["throughput_ips"],
                "size_ratio": row["size_mb"] / base["size_mb"] if base["size_mb"] else None,
            }
            if row["published"] is not None and base["published"] is not None:
                row["delta"]["published"] = row["published"] - base["published"]
    return rows


def _of_kind(stages: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    """Typed results of the stages of ``kind``, by stage name."""
    return {n: r["result"] for n, r in stages.items() if r.get("kind") == kind and r.get("result") is not None}


def _models(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Results of every stage whose kind produces an inference model (export, onnx_export, compress, qat)."""
    kinds = registry()
    return {n: r["result"] for n, r in stages.items() if r.get("result") is not None
            and getattr(kinds.get(r.get("kind", "")), "produces", None) is ModelResult}


def _after_report(stages: dict[str, dict[str, Any]]) -> set[str]:
    after = {n for n, s in stages.items() if s["kind"] == "report"}
    grew = True
    while grew:
        more = {n for n, s in stages.items() if n not in after and after & set(s.get("needs", []))}
        after |= more
        grew = bool(more)
    return after


def build_report(run_dir: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}
    stages: dict[str, dict[str, Any]] = {}
    for name in recipe["stages"]:
        path = run_dir / name / RESULT_FILE
        if path.is_file():
            stages[name] = json.loads(path.read_text())
    measured = measured_metrics(stages)
    comparison = []
    device = plan.get("device") or {}
    cards = device.get("count", 0) * device.get("nnodes", 1)
    for name, pub in recipe.get("published", {}).items():
        value = measured.get(pub["measured_as"])
        setting = pub.get("setting", "")
        if value is not None and pub.get("cards") and cards and pub["cards"] != cards:
            # a 1-card figure is no yardstick for an 8-card run, nor the other way round
            value, setting = None, f"{setting} (this run: {cards} card(s), not compared)"
        comparison.append({
            "metric": name, "measured_as": pub["measured_as"], "published": pub["value"], "unit": pub.get("unit", ""),
            "setting": setting, "source": pub["source"], "measured": value,
            "ratio": (value / pub["value"]) if value is not None and pub["value"] else None,
        })
    own = _after_report(recipe["stages"])  # the report and what runs after it (gates, tracking, promotion)
    previous = history.previous_runs(run_dir, plan.get("profile"))
    train = _of_kind(stages, "train")
    report: dict[str, Any] = {
        "dag_id": recipe["dag_id"], "title": recipe["title"], "run_dir": str(run_dir),
        "run_id": plan.get("run_id"), "profile": plan.get("profile"), "device": plan.get("device"),
        "recipe_digest": (plan.get("pinned") or {}).get("recipe_digest"),
        "provenance": {**{k: (plan.get("pinned") or {}).get(k) for k in ("recipe_digest", "npuflow_version", "toolkit")},
                       "environments": {n: r["environment"] for n, r in stages.items() if r.get("environment")}},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": {n: {"kind": r.get("kind"), "ok": r.get("ok"), "seconds": r.get("seconds"),
                       "summary": r.get("summary", "")} for n, r in stages.items()},
        "not_run": [n for n in recipe["stages"] if n not in stages and n not in own],
        "dataset": _of_kind(stages, "validate_dataset"),
        "train": _of_kind(stages, "train"),
        "models": _models(stages),
        "benchmarks": _of_kind(stages, "benchmark"),
        "model_comparison": model_rows(stages, recipe),
        "measured": measured,
        "published_comparison": comparison,
        "gates": gates.evaluate(recipe, plan.get("profile"), measured),
        "trends": history.trends(measured, previous, recipe.get("trend_tolerance", history.DEFAULT_TOLERANCE)),
        "scaling": history.scaling(next((measured.get(f"{n}.train_ips") for n in train), None),
                                   next((r.get("metrics", {}).get("world_size") for r in train.values()), None),
                                   recipe.get("published", {}), plan.get("profile"), previous),
        "plots": make_plots(run_dir, stages),
    }
    report["inputs"] = history.compare_inputs(report, previous)
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _signed(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:+.4g}{suffix}"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['title']}", "",
             f"Run `{report['run_id']}`, profile `{report['profile']}`, device {report['device']}",
             f"recipe `{report.get('recipe_digest') or 'not pinned'}`", "",
             "| stage | ok | seconds | summary |", "| --- | --- | --- | --- |"]
    for name, st in report["stages"].items():
        lines.append(f"| {name} | {_fmt(st['ok'])} | {_fmt(st['seconds'])} | {st['summary']} |")
    for name in report["not_run"]:
        lines.append(f"| {name} | not run | - | |")
    lines += ["", "## Provenance", "", "| what | value |", "| --- | --- |"]
    lines += [f"| {what} | {value} |" for what, value in provenance_rows(report)]
    rows = report["model_comparison"]
    if rows:
        score = "mIoU" if rows[0]["metric"] == "miou" else "mAP"
        lines += ["", "## Models", "",
                  f"| model | precision | {score} (%) | published {score} (%) | latency p50 (ms) | latency p99 (ms) | "
                  "throughput (images/s) | weights (MB) | quantize ops |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['model_stage']} | {r['precision']} | {_fmt(r['accuracy'])} | "
                         f"{_fmt(r['published'])} | {_fmt(r['latency_p50_ms'])} | "
                         f"{_fmt(r['latency_p99_ms'])} | {_fmt(r['throughput_ips'])} | {_fmt(r['size_mb'])} | "
                         f"{_fmt(r['quantize_ops'])} |")
        for r in rows:
            if r.get("int8_execution"):  # on the NPU the INT8 timing is of simulated quantization: say so
                lines.append(f"| {r['model_stage']}: INT8 execution | {r['int8_execution']} | | | | | | | |")
        for r in rows:
            d = r.get("delta")
            if d:
                lines.append(f"| {r['model_stage']} vs FP32 | | {_signed(d['accuracy'])} | "
                             f"{_signed(d.get('published'))} | x{_fmt(d['latency_p50_ratio'])} | | "
                             f"x{_fmt(d['throughput_ratio'])} | x{_fmt(d['size_ratio'])} | |")
    lines += ["", "## Measured", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(report["measured"].items())]
    lines += ["", "## Against the tutorial's published numbers", ""]
    if report["published_comparison"]:
        lines += ["| metric | published | measured | ratio | setting | source |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for c in report["published_comparison"]:
            lines.append(f"| {c['metric']} | {_fmt(c['published'])} {c['unit']} | {_fmt(c['measured'])} | "
                         f"{_fmt(c['ratio'])} | {c['setting']} | {c['source']} |")
    else:
        lines.append("The tutorial publishes no numbers for this model.")
    if report["gates"]:
        lines += ["", "## Gates", "", "| gate | measured | value | needs | basis | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for g in report["gates"]:
            sign = ">=" if g["bound"] == "at_least" else "<="
            verdict = "pass" if g["passed"] else (f"**MISSED** by {_fmt(g['missed_by'])}" if g["missed_by"] is not None
                                                  else "**MISSED** (not measured)")
            lines.append(f"| {g['gate']} | {g['measured']} | {_fmt(g['value'])} | {sign} {_fmt(g['threshold'])} | "
                         f"{g['basis']} | {verdict} |")
    scale = report.get("scaling")
    if scale:
        lines += ["", "## Training throughput", "", "| cards | images/s | images/s per card | 1-card images/s | "
                  "efficiency |", "| --- | --- | --- | --- | --- |",
                  f"| {scale['cards']} | {_fmt(scale['images_per_s'])} | {_fmt(scale['images_per_s_per_card'])} | "
                  f"{_fmt(scale.get('one_card_images_per_s'))} ({scale.get('one_card_source', 'none')}) | "
                  f"{_fmt(scale.get('efficiency'))} |"]
    if report["trends"]:
        lines += ["", f"## Against the previous successful run ({report['trends'][0]['previous_run']})", "",
                  "| metric | now | previous | delta | relative | |", "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {t['metric']} | {_fmt(t['value'])} | {_fmt(t['previous'])} | {_signed(t['delta'])} | "
                  f"{_signed(t['relative'])} | {'**regression**' if t['regression'] else ''} |" for t in report["trends"]]
    if report["plots"]:
        lines += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in report["plots"].items()]
    if report["profile"] not in (None, "production"):
        lines += ["", f"Profile `{report['profile']}` trains a tiny model on generated data: its numbers check "
                      "the pipeline, they are not comparable with the published ones."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--recipe", type=Path, required=True)
    args = p.parse_args(argv)
    plan = json.loads((args.run_dir / "plan.json").read_text()) if (args.run_dir / "plan.json").is_file() else {}
    # The recipe the run pinned when it started (its gates and published numbers), not the file as edited since.
    recipe = (plan.get("pinned") or {}).get("recipe") or yaml.safe_load(args.recipe.read_text())
    report = build_report(args.run_dir, recipe)
    write_json(args.run_dir / "report.json", report)
    (args.run_dir / "report.md").write_text(render_markdown(report))
    (args.run_dir / "report.html").write_text(render_html(report, args.run_dir))
    record = history.tipc_record(report, plan)
    records = args.run_dir.parent.parent / TIPC_FILE  # per deployment: beside the DAGs' run folders
    if record and history.append_record(records, record):
        print(f"benchmark record appended to {records}")
    print(f"report: {args.run_dir / 'report.json'}, {args.run_dir / 'report.md'} and {args.run_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
