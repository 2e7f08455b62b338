"""Find the newest complete checkpoint of a training run and the toolkit's flag to resume from it.

What a checkpoint looks like is recipe data (the train stage's ``resume`` block): a glob for its main file,
the companion files of its set (``{checkpoint_stem}.pdopt`` for ppdet, ``{checkpoint_dir}/model.pdopt`` for
PaddleSeg) and the argv that resumes from it (``-r {checkpoint_stem}``, ``--resume_model {checkpoint_dir}``,
``--resume {checkpoint}``, ``--resume-from {checkpoint}``). A set with a file missing or truncated (a node
died while writing it) is skipped for the previous one.
"""

from __future__ import annotations

import glob
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Placeholders the plan leaves in the resume templates, filled here once a checkpoint is chosen.
PLACEHOLDERS = ("checkpoint", "checkpoint_stem", "checkpoint_dir")


@dataclass
class Checkpoint:
    path: Path

    @property
    def fields(self) -> dict[str, str]:
        return {"checkpoint": str(self.path), "checkpoint_stem": str(self.path.with_suffix("")),
                "checkpoint_dir": str(self.path.parent)}

    def fill(self, template: str) -> str:
        for name, value in self.fields.items():
            template = template.replace("{" + name + "}", value)
        return template


def integrity_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole checkpoint file, or None. Cheap: reads the first and last bytes only.

    ``paddle.save`` writes a pickle, which always ends with the STOP opcode ``.``; ``torch.save`` writes a zip,
    whose end-of-central-directory record is the last thing written.
    """
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size == 0:
        return "empty"
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-1, 2)
        last = fh.read(1)
    if head.startswith(b"PK\x03\x04"):
        return None if zipfile.is_zipfile(path) else "truncated (zip without its end record)"
    if head[:1] == b"\x80" and last != b".":
        return "truncated (pickle without its STOP opcode)"
    return None


def _order_key(path: Path) -> tuple[Any, ...]:
    """Newest first by the epoch/iteration numbers in the name, then by modification time."""
    return (tuple(int(n) for n in re.findall(r"\d+", str(path))), path.stat().st_mtime)


def find_checkpoint(spec: dict[str, Any]) -> tuple[Checkpoint | None, list[str], int]:
    """(the newest complete checkpoint or None, why newer ones were skipped, how many sets exist)."""
    found = [Path(p) for p in glob.glob(spec["checkpoints"]) if Path(p).is_file()]
    skipped = []
    for path in sorted(found, key=_order_key, reverse=True):
        ckpt = Checkpoint(path)
        files = [path, *(Path(ckpt.fill(c)) for c in spec.get("companions", []))]
        problems = [f"{f.name} {why}" for f in files if (why := integrity_problem(f))]
        if not problems:
            return ckpt, skipped, len(found)
        skipped.append(f"{path}: {', '.join(problems)}")
    return None, skipped, len(found)


def resume_argv(spec: dict[str, Any], ckpt: Checkpoint) -> list[str]:
    return [ckpt.fill(arg) for arg in spec["argv"]]
