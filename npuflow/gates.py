"""Quality gates: the numbers a model must reach before it ships, judged from a run's measured metrics.

A recipe declares gates by name (``gates:``), each on one measured number ``<stage>.<metric>`` (or the
difference of two, ``minus:``, e.g. the INT8 mAP drop) with one bound: ``at_least`` or ``at_most``, either a
number or ``{published: <key>, tolerance: <fraction>}`` (the tutorial's published value, less or more the
tolerance). A profile may replace a gate's bound (``profiles.<p>.gates.<name>``): production runs are held to
the tutorial, a smoke run to its own values. The report shows every gate; a ``gate`` stage fails the run on the
ones it names. Plain Python, no Airflow: the report program and the gate kind both call :func:`evaluate`.
"""

from __future__ import annotations

import math
from typing import Any


def specs(recipe: dict[str, Any], profile: str | None) -> dict[str, dict[str, Any]]:
    """The recipe's gates with the profile's bounds on top."""
    merged = {name: dict(spec) for name, spec in recipe.get("gates", {}).items()}
    for name, override in (recipe["profiles"].get(profile or "", {}).get("gates") or {}).items():
        base = merged.get(name, {})
        base = {k: v for k, v in base.items() if k not in ("at_least", "at_most")}
        merged[name] = {**base, **override}
    return merged


def threshold(spec: dict[str, Any], recipe: dict[str, Any]) -> tuple[str, float, str]:
    """(bound, threshold, how the threshold was made) of one gate."""
    bound = "at_least" if "at_least" in spec else "at_most"
    value = spec[bound]
    if isinstance(value, dict):
        pub = recipe["published"][value["published"]]["value"]
        tol = float(value.get("tolerance", 0.0))
        limit = pub * (1 - tol) if bound == "at_least" else pub * (1 + tol)
        return bound, limit, f"published {value['published']} = {pub:g} {'-' if bound == 'at_least' else '+'} {tol:.0%}"
    return bound, float(value), "the recipe's value"


def evaluate(recipe: dict[str, Any], profile: str | None, measured: dict[str, float]) -> list[dict[str, Any]]:
    """Every gate's verdict: value, threshold, passed, and by how much it missed."""
    out = []
    for name, spec in specs(recipe, profile).items():
        bound, limit, basis = threshold(spec, recipe)
        value = measured.get(spec["measured_as"])
        if value is not None and spec.get("minus"):
            other = measured.get(spec["minus"])
            value = None if other is None else value - other
        what = spec["measured_as"] + (f" - {spec['minus']}" if spec.get("minus") else "")
        if value is None or not math.isfinite(value):
            out.append({"gate": name, "measured": what, "value": value, "bound": bound, "threshold": limit,
                        "basis": basis, "passed": False, "missed_by": None,
                        "reason": f"gate {name}: {what} was not measured"})
            continue
        passed = value >= limit if bound == "at_least" else value <= limit
        missed = 0.0 if passed else abs(limit - value)
        sign = ">=" if bound == "at_least" else "<="
        reason = (f"gate {name}: {what} = {value:.4g}, needs {sign} {limit:.4g} ({basis})"
                  + ("" if passed else f": missed by {missed:.4g}"))
        out.append({"gate": name, "measured": what, "value": value, "bound": bound, "threshold": limit,
                    "basis": basis, "passed": passed, "missed_by": missed, "reason": reason})
    return out


def main(argv: list[str] | None = None) -> int:
    """The gate stage's program: the report's verdict on the named gates; exit 78 (no retry) if one missed."""
    import argparse
    import json
    from pathlib import Path

    from npuflow.errors import refuse

    p = argparse.ArgumentParser(description="Fail when a gate of the run's report missed.")
    p.add_argument("--report", type=Path, required=True)
    p.add_argument("--gates", required=True, help="comma-separated gate names")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    verdicts = {g["gate"]: g for g in json.loads(args.report.read_text()).get("gates", [])}
    wanted = [g for g in args.gates.split(",") if g]
    missing = [g for g in wanted if g not in verdicts]
    if missing:
        return refuse(f"the report has no verdict for gate(s) {missing}")
    chosen = [verdicts[g] for g in wanted]
    args.out.write_text(json.dumps({"passed": all(g["passed"] for g in chosen), "gates": chosen}, indent=2) + "\n")
    for g in chosen:
        print(("PASS " if g["passed"] else "MISS ") + g["reason"], flush=True)
    failed = [g["reason"] for g in chosen if not g["passed"]]
    if failed:
        return refuse("; ".join(failed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
