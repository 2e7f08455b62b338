"""The run as a graph of named stages: ``needs`` edges, their order, and which input role each edge fills.

A stage names the stages it consumes (``needs: [export, prepare_dataset]``). Each need binds to the role of the
consumer's kind whose result type the upstream kind produces (a benchmark's ``model`` is an export's or a
compression's ModelResult), so a stage reads its inputs by the upstream stage's name, never by kind or by a
file name that happens to match. Everything here runs when a recipe is loaded, at DAG parse time: cheap.
"""

from __future__ import annotations

from typing import Any

from npuflow.kinds import registry


class GraphError(ValueError):
    """The stages' ``needs`` do not form a runnable graph; the message names the field."""


def needs_of(spec: dict[str, Any]) -> list[str]:
    return list(spec.get("needs", []))


def topological(stages: dict[str, dict[str, Any]], source: str) -> list[str]:
    """Stage names with every stage after the ones it needs; ties keep the recipe's order."""
    for name, spec in stages.items():
        for need in needs_of(spec):
            if need not in stages:
                raise GraphError(f"{source}: stages.{name}.needs: {need!r} names no stage; stages are {list(stages)}")
            if need == name:
                raise GraphError(f"{source}: stages.{name}.needs: a stage cannot need itself")
    order: list[str] = []
    done: set[str] = set()
    remaining = list(stages)
    while remaining:
        ready = [n for n in remaining if set(needs_of(stages[n])) <= done]
        if not ready:
            raise GraphError(f"{source}: stages.needs: a cycle among {remaining} ({_cycle(stages, remaining)})")
        order.append(ready[0])
        done.add(ready[0])
        remaining.remove(ready[0])
    return order


def _cycle(stages: dict[str, dict[str, Any]], among: list[str]) -> str:
    path = [among[0]]
    while True:
        nxt = next(n for n in needs_of(stages[path[-1]]) if n in among)
        if nxt in path:
            return " -> ".join([*path[path.index(nxt):], nxt])
        path.append(nxt)


def bind_inputs(stages: dict[str, dict[str, Any]], source: str) -> dict[str, dict[str, list[str]]]:
    """Stage name -> role -> the upstream stages filling it. Refuses a need no role takes, an ambiguous one,
    a single role filled twice, and a required role left empty."""
    kinds = registry()
    bound: dict[str, dict[str, list[str]]] = {}
    for name, spec in stages.items():
        kind = kinds[spec["kind"]]
        roles: dict[str, list[str]] = {role: [] for role in kind.consumes}
        for need in needs_of(spec):
            produced = kinds[stages[need]["kind"]].produces
            fits = [r for r, role in kind.consumes.items()
                    if produced is not None and issubclass(produced, role.result)]
            where = f"{source}: stages.{name}.needs: {need!r}"
            if not fits:
                wanted = {r: role.result.__name__ for r, role in kind.consumes.items()}
                raise GraphError(f"{where} is a {stages[need]['kind']} stage, whose result a {kind.name} stage does "
                                 f"not consume (it consumes {wanted or 'nothing'})")
            if len(fits) > 1:
                raise GraphError(f"{where} fits several inputs of a {kind.name} stage: {fits}")
            roles[fits[0]].append(need)
        for role_name, role in kind.consumes.items():
            if role.required and not roles[role_name]:
                raise GraphError(f"{source}: stages.{name}.needs: a {kind.name} stage needs a stage producing "
                                 f"{role.result.__name__} (its {role_name!r} input); none is listed")
            if not role.many and len(roles[role_name]) > 1:
                raise GraphError(f"{source}: stages.{name}.needs: {roles[role_name]} all fill its single "
                                 f"{role_name!r} input")
        bound[name] = roles
    return bound
