"""The stage kinds: every module in this package defines one :class:`~npuflow.kinds.base.StageKind`.

Adding a kind is adding a module here (found by :func:`registry`), its tests, and a line in
docs/architecture.md; the recipe schema, the plan, the DAG factory, the operator and the report read this.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from npuflow.kinds.base import StageKind


@cache
def registry() -> dict[str, StageKind]:
    """Kind name -> the kind, one instance each."""
    kinds: dict[str, StageKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, StageKind) and obj.__module__ == module.__name__:
                if obj.name in kinds:
                    raise RuntimeError(f"stage kind {obj.name!r} is defined twice ({module.__name__})")
                kinds[obj.name] = obj()
    return kinds


def kind(name: str) -> StageKind:
    try:
        return registry()[name]
    except KeyError:
        raise KeyError(f"no stage kind {name!r}; kinds are {sorted(registry())}") from None
