"""The run report: what each stage measured, next to the tutorial's published numbers (JSON + Markdown).

Reads only the run directory (``plan.json`` and each ``<stage>/result.json``) and the recipe, so it can be rerun
on any finished run: ``python -m operators.report --run-dir RUN --recipe recipes/X.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from operators.rundir import RESULT_FILE, write_json


def measured_metrics(stages: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The run's numbers under the names recipes use in ``published.<name>.measured_as``."""
    out: dict[str, float] = {}
    for result in stages.values():
        if result.get("kind") == "train" and result.get("metrics"):
            m = result["metrics"]
            if m.get("ips_global_median") is not None:
                out["train_ips"] = m["ips_global_median"]
            if "bbox_map" in m.get("eval", {}):
                out["train_eval_bbox_map"] = 100.0 * m["eval"]["bbox_map"]
            if "miou" in m.get("eval", {}):
                out["miou"] = 100.0 * m["eval"]["miou"]
        if result.get("kind") == "benchmark" and result.get("benchmark"):
            b = result["benchmark"]
            out["bbox_map"] = 100.0 * b["coco"]["map"]
            out["infer_latency_p50_ms"] = b["latency_ms"]["p50"]
            out["infer_ips"] = b["throughput_ips"]
    return out


def _field_of_kind(stages: dict[str, dict[str, Any]], kind: str, field: str) -> Any:
    """``field`` of the result of the (single) stage of ``kind``, or None."""
    return next((r.get(field) for r in stages.values() if r.get("kind") == kind), None)


def build_report(run_dir: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    plan = json.loads((run_dir / "plan.json").read_text()) if (run_dir / "plan.json").is_file() else {}
    stages: dict[str, dict[str, Any]] = {}
    for name in recipe["stages"]:
        path = run_dir / name / RESULT_FILE
        if path.is_file():
            stages[name] = json.loads(path.read_text())
    measured = measured_metrics(stages)
    comparison = []
    for name, pub in recipe.get("published", {}).items():
        key = pub.get("measured_as", name)
        value = measured.get(key)
        comparison.append({
            "metric": name, "published": pub["value"], "unit": pub.get("unit", ""),
            "setting": pub.get("setting", ""), "source": pub["source"], "measured": value,
            "ratio": (value / pub["value"]) if value is not None and pub["value"] else None,
        })
    return {
        "dag_id": recipe["dag_id"], "title": recipe["title"], "run_dir": str(run_dir),
        "run_id": plan.get("run_id"), "profile": plan.get("profile"), "device": plan.get("device"),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "stages": {n: {"ok": r.get("ok"), "seconds": r.get("seconds"), "summary": r.get("summary", "")}
                   for n, r in stages.items()},
        "not_run": [n for n in recipe["stages"] if n not in stages and n != "report"],
        "dataset": _field_of_kind(stages, "validate_dataset", "counts"),
        "train": _field_of_kind(stages, "train", "metrics"),
        "export": _field_of_kind(stages, "export", "outputs"),
        "benchmark": _field_of_kind(stages, "benchmark", "benchmark"),
        "measured": measured,
        "published_comparison": comparison,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['title']}", "",
             f"Run `{report['run_id']}`, profile `{report['profile']}`, device {report['device']}", "",
             "| stage | ok | seconds | summary |", "| --- | --- | --- | --- |"]
    for name, st in report["stages"].items():
        lines.append(f"| {name} | {_fmt(st['ok'])} | {_fmt(st['seconds'])} | {st['summary']} |")
    for name in report["not_run"]:
        lines.append(f"| {name} | not run | - | |")
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
    if report["profile"] not in (None, "production"):
        lines += ["", f"Profile `{report['profile']}` trains a tiny model on generated data: its numbers check "
                      "the pipeline, they are not comparable with the published ones."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--recipe", type=Path, required=True)
    args = p.parse_args(argv)
    recipe = yaml.safe_load(args.recipe.read_text())
    report = build_report(args.run_dir, recipe)
    write_json(args.run_dir / "report.json", report)
    (args.run_dir / "report.md").write_text(render_markdown(report))
    print(f"report: {args.run_dir / 'report.json'} and {args.run_dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
