"""MMDetection-style Python configs: a file of top-level assignments, overridden by ``--cfg-options k=v``."""

from __future__ import annotations

import ast
import runpy
import types
from pathlib import Path
from typing import Any


def load(path: str | Path) -> dict[str, Any]:
    names = runpy.run_path(str(path))
    return {k: v for k, v in names.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)}


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string, as mmcv's DictAction takes it


def merge_options(cfg: dict[str, Any], options: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` pairs in place; a key that names nothing in the config is an error, as a typo
    would otherwise train with the default silently."""
    for option in options:
        key, sep, text = option.partition("=")
        if not sep:
            raise SystemExit(f"error: --cfg-options {option!r}: expected key=value")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise SystemExit(f"error: --cfg-options {key}: the config has no section {part!r}")
            node = node[part]
        node[leaf] = _value(text)
    return cfg
