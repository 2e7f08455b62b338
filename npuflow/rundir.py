"""One run directory per DAG run: ``<runs_root>/<dag_id>/<run_id>/<stage>/...``.

Stages hand results to each other through ``<stage>/result.json`` files here (and XCom for small summaries),
never through a global path, so two runs never read each other's outputs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from npuflow.recipe import PROJECT_ROOT

RESULT_FILE = "result.json"


def runs_root() -> Path:
    return Path(os.environ.get("NPUFLOW_RUNS_DIR", PROJECT_ROOT / "var" / "runs"))


def run_dir_for(dag_id: str, run_id: str, root: Path | None = None) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id).strip("_") or "run"
    return (root or runs_root()) / dag_id / safe


def write_json(path: Path, data: Any, *, sort_keys: bool = True) -> Path:
    """Write atomically: a reader never sees half a file, even if this process dies mid-write.
    ``sort_keys=False`` where a mapping's order is data (a recipe's stages are in the order the report lists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=sort_keys, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_stage_result(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    path = Path(run_dir) / stage / RESULT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def write_stage_result(stage_dir: str | Path, result: dict[str, Any]) -> Path:
    return write_json(Path(stage_dir) / RESULT_FILE, result)
