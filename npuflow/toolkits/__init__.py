"""Toolkits at a ref: what each tutorial's toolkit does at the commit the project runs, one module each.

A stage kind knows what a step of the pipeline needs and produces; a toolkit module knows one toolkit at its
pinned refs (PaddleDetection ``release_2_7_npu``, PaddleSeg ``npu_cann8.0``, the ModelZoo-PyTorch ports): where
its training writes checkpoints and the best model, which files a resume needs and the flag that takes them,
what its logs look like, where its export writes. Recipes name the toolkit and ref and hold values; the plan
takes the toolkit's layout as defaults for the recipe's variables, so a second model of a known toolkit is a
short recipe. Every fact here is checked by running the toolkit's own code at that ref (tests/test_toolkits.py).

Adding a toolkit is adding a module here that defines ``TOOLKIT`` (found by :func:`registry`), its checkout's
test in tests/test_toolkits.py and a line in docs/architecture.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import Any


@dataclass(frozen=True)
class Toolkit:
    """One toolkit: where its code comes from and how it behaves at the refs it is known at."""

    #: The name recipes give in ``toolkit.name``.
    name: str
    repository: str
    #: ref -> the commit the project runs it at (a clone is checked out at that commit).
    refs: dict[str, str]
    #: The recipe's ``log_format`` default: which parser of npuflow.logparse reads its training log.
    log_format: str
    #: Layout templates over the recipe's own variables ({save_dir}, {export_dir}, {config_name}, ...): the
    #: defaults of the plan's variables of these names, which a recipe may override.
    variables: dict[str, str] = field(default_factory=dict)
    #: The train stage's default ``resume`` block (npuflow/resume.py): the glob of a checkpoint's main file,
    #: the other files of its set and the flag that resumes from it.
    resume: dict[str, Any] | None = None
    #: The folder of this repository under shared/upstream (the tutorials' checkouts this machine has).
    upstream: str = ""

    def commit(self, ref: str) -> str:
        try:
            return self.refs[ref]
        except KeyError:
            raise KeyError(f"toolkit {self.name} is not known at ref {ref!r}; known refs: {sorted(self.refs)} "
                           f"(npuflow/toolkits/: check the layout at the new ref, then add it)") from None


@cache
def registry() -> dict[str, Toolkit]:
    """Toolkit name -> the toolkit, from every module of this package that defines ``TOOLKIT``."""
    found: dict[str, Toolkit] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "checkout":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        tk = getattr(module, "TOOLKIT", None)
        if isinstance(tk, Toolkit):
            if tk.name in found:
                raise RuntimeError(f"toolkit {tk.name!r} is defined twice ({module.__name__})")
            found[tk.name] = tk
    return found


def toolkit(name: str) -> Toolkit:
    try:
        return registry()[name]
    except KeyError:
        raise KeyError(f"no toolkit {name!r}; toolkits are {sorted(registry())}") from None
