"""report.html: the run's report as one self-contained page (plots inlined as data: URIs, no external assets),
so it opens from the Airflow UI's link, a mail attachment or the run folder alike."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:.6em 0 1.4em}td,th{border:1px solid #ccc;padding:.25em .6em;font-size:.9em}
th{background:#f1f3f5;text-align:left}.pass{color:#2b8a3e;font-weight:600}.miss{color:#c92a2a;font-weight:700}
.banner{padding:.7em 1em;border-radius:6px;font-weight:600;margin:1em 0}.ok{background:#d3f9d8}.bad{background:#ffe3e3}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
"""


def provenance_rows(report: dict[str, Any]) -> list[list[str]]:
    """What produced this run's models, as (what, value) rows for the Markdown and HTML reports."""
    prov = report.get("provenance") or {}
    rows = [["recipe", prov.get("recipe_digest") or "not pinned (a run before plans were pinned)"],
            ["npuflow", prov.get("npuflow_version") or "-"]]
    for name, result in (report.get("dataset") or {}).items():
        content = (result or {}).get("content") or {}
        if content:
            rows.append([f"dataset ({name})", f"{content['digest']} ({content['files']} files; {content['hashed']} "
                                               f"read for this digest, {content['reused']} unchanged)"])
    tk = prov.get("toolkit")
    if tk:
        if tk.get("checkout") == "git":
            where = f"git commit {tk['commit']}" + (", with local changes" if tk.get("local_changes") else "")
        else:
            where = tk.get("checkout", "-")
        rows.append([f"toolkit {tk['name']}@{tk['ref']}", f"pinned commit {tk.get('pinned_commit')}; {tk['path']}: {where}"])
    seen: dict[tuple[str, str], list[str]] = {}  # one row per distinct environment, naming its stages
    for stage, env in (prov.get("environments") or {}).items():
        if env.get("image_id"):  # a container stage: the image it ran, by content
            what = ", ".join([f"{env['image']} = {env['image_id']}", *env.get("repo_digests", [])])
            seen.setdefault(("ran in image", what), []).append(stage)
            continue
        parts = [f"Python {env['python']}"] + [f"{d} {v}" for d, v in sorted(env.get("distributions", {}).items())]
        parts += [f"{p} from {origin}" for p, origin in sorted(env.get("packages", {}).items())]
        seen.setdefault(("imported by", ", ".join(parts)), []).append(stage)
    rows += [[f"{how} {', '.join(stages)}", what] for (how, what), stages in seen.items()]
    inputs = report.get("inputs")
    if inputs:
        changed = "; ".join(f"{k}: {_short(then)} → {_short(now)}" for k, (then, now) in inputs["changed"].items())
        rows.append([f"inputs against run {inputs['previous_run']}", f"changed: {changed}" if changed else "the same"])
        if inputs["same_inputs_runs"]:
            rows.append(["earlier runs with these inputs", ", ".join(map(str, inputs["same_inputs_runs"]))])
    return rows


def _short(value: Any) -> str:
    """A digest to its first 19 characters (``sha256:`` and 12 hex), anything else as it is."""
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return text[:19] + "…" if text.startswith("sha256:") and len(text) > 19 else text


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(_fmt(c))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class _Raw(str):
    """Cell content that is already HTML."""


def render_html(report: dict[str, Any], run_dir: Path) -> str:
    e = html.escape
    gates = report.get("gates", [])
    missed = [g for g in gates if not g["passed"]]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report['title'])}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{e(report['title'])}</h1>",
             f"<p>Run <code>{e(str(report['run_id']))}</code>, profile <code>{e(str(report['profile']))}</code>, "
             f"recipe <code>{e(str(report.get('recipe_digest') or 'not pinned'))}</code>, "
             f"generated {e(str(report['generated_at']))}</p>"]
    if gates:
        cls, text = ("bad", f"{len(missed)} of {len(gates)} gate(s) missed") if missed else \
            ("ok", f"all {len(gates)} gate(s) passed")
        parts.append(f"<div class='banner {cls}' id='verdict'>{e(text)}</div>")
        parts.append("<h2>Gates</h2>" + _table(
            ["gate", "measured", "value", "needs", "basis", "verdict"],
            [[g["gate"], g["measured"], g["value"], (">= " if g["bound"] == "at_least" else "<= ") + _fmt(g["threshold"]),
              g["basis"], _Raw("<span class='pass'>pass</span>" if g["passed"] else
                               f"<span class='miss'>MISSED by {e(_fmt(g['missed_by']))}</span>")] for g in gates]))
    parts.append("<h2>Stages</h2>" + _table(["stage", "ok", "seconds", "summary"],
                                            [[n, s["ok"], s["seconds"], s["summary"]] for n, s in report["stages"].items()]))
    parts.append("<h2>Provenance</h2>" + _table(["what", "value"], provenance_rows(report)))
    rows = report.get("model_comparison", [])
    if rows:
        parts.append("<h2>Models</h2>" + _table(
            ["model", "precision", rows[0]["metric"] + " (%)", "latency p50 (ms)", "latency p99 (ms)", "images/s",
             "size (MB)", "quantize ops"],
            [[r["model_stage"], r["precision"], r["accuracy"], r["latency_p50_ms"], r["latency_p99_ms"],
              r["throughput_ips"], r["size_mb"], r["quantize_ops"]] for r in rows]))
    scale = report.get("scaling")
    if scale:
        parts.append("<h2>Training throughput</h2>" + _table(
            ["cards", "images/s", "images/s per card", "1-card images/s", "efficiency"],
            [[scale["cards"], scale["images_per_s"], scale["images_per_s_per_card"],
              scale.get("one_card_images_per_s"), scale.get("efficiency")]]))
    trend = report.get("trends", [])
    if trend:
        parts.append("<h2>Against the previous successful run</h2>" + _table(
            ["metric", "now", "previous", "delta", "relative", "regression"],
            [[t["metric"], t["value"], t["previous"], t["delta"], t["relative"],
              _Raw("<span class='miss'>REGRESSION</span>" if t["regression"] else "")] for t in trend]))
    if report.get("published_comparison"):
        parts.append("<h2>Against the tutorial</h2>" + _table(
            ["metric", "published", "measured", "ratio", "setting", "source"],
            [[c["metric"], f"{_fmt(c['published'])} {c['unit']}", c["measured"], c["ratio"], c["setting"],
              c["source"]] for c in report["published_comparison"]]))
    plots = report.get("plots", {})
    if plots:
        parts.append("<h2>Plots</h2>")
        for name, rel in plots.items():
            data = base64.b64encode((run_dir / rel).read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
