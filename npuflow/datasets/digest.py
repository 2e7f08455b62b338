"""A content digest of a dataset that reads each file once, not once per run.

Provenance wants "which data trained this model" as a digest of the files' contents, but COCO's 123,000 images
(19 GB) are not worth re-reading every night. Each file's SHA-256 is kept in a cache (one JSON per dataset root;
the validate stage keeps them under the runs root) keyed by its path, size and modification time; a file whose
three are unchanged is not read again. The digest covers every regular file under the root but hidden ones
(partial downloads, caches) and the label caches a toolkit writes into the dataset as it trains (the YOLOR port's
``labels/<split>.cache3``): those are derived, and the next run would otherwise see "other data".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
#: Files a toolkit writes into a dataset it reads: the YOLOR port's label caches (``.cache3``; ``.cache`` in YOLOv5).
TOOLKIT_CACHES = (".cache3", ".cache")
#: Where the validate program keeps the caches when it is not told (the stage passes <runs root>/.cache/...).
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "npuflow" / "dataset-digest"


@dataclass
class Digest:
    digest: str
    files: int
    hashed: int  # files read this time (new or changed)
    bytes_hashed: int
    splits: dict[str, str] = field(default_factory=dict)  # split -> the digest of that split's files alone

    def to_dict(self) -> dict[str, object]:
        return {"digest": self.digest, "files": self.files, "hashed": self.hashed, "reused": self.files - self.hashed,
                "bytes_hashed": self.bytes_hashed, "splits": self.splits}


def in_split(rel: str, split: str) -> bool:
    """A file of ``split``: under a folder of that name (``val2017/``, ``leftImg8bit/val/``) or named for it
    (``instances_val2017.json``). A derived list file (``val2017.txt``) holds this copy's absolute paths, not
    data: it is no part of the split's digest, so two copies of the same split compare equal."""
    parts = rel.split("/")
    return split in parts[:-1] or Path(parts[-1]).stem.endswith(f"_{split}")


def cache_path(root: Path, cache_dir: Path = DEFAULT_CACHE) -> Path:
    """One cache per dataset folder (by its resolved path)."""
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return cache_dir / f"{key}.json"


def _write_json(path: Path, data: object) -> None:
    # The validate program runs on a bare Python 3.9 (the stage images'): no npuflow.rundir (it imports yaml).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _files(root: Path) -> list[tuple[str, os.stat_result]]:
    out = []
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith(".") or name.endswith(TOOLKIT_CACHES):
                continue
            path = Path(folder) / name
            st = path.stat()
            out.append((path.relative_to(root).as_posix(), st))
    return sorted(out)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def dataset_digest(root: Path, cache_dir: Path = DEFAULT_CACHE, splits: tuple[str, ...] = ()) -> Digest:
    """The digest of ``root``'s files, reading only those the cache does not know at their size and mtime, and
    one of each of ``splits`` (what "measured on the same validation set" compares)."""
    cache = cache_path(root, cache_dir)
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    entries, hashed, nbytes, whole = {}, 0, 0, hashlib.sha256()
    per_split: dict[str, Any] = {}
    for rel, st in _files(root):
        key = [st.st_size, st.st_mtime_ns]
        old = known.get(rel)
        if old and old[:2] == key:
            sha = old[2]
        else:
            sha = _sha256(root / rel)
            hashed, nbytes = hashed + 1, nbytes + st.st_size
        entries[rel] = [*key, sha]
        whole.update(f"{rel}\0{sha}\n".encode())
        for split in splits:
            if in_split(rel, split):
                per_split.setdefault(split, hashlib.sha256()).update(f"{rel}\0{sha}\n".encode())
    if hashed or entries.keys() != known.keys():
        with contextlib.suppress(OSError):  # a cache folder it may not write (a container's view): re-read next time
            _write_json(cache, entries)
    return Digest("sha256:" + whole.hexdigest(), len(entries), hashed, nbytes,
                  {split: "sha256:" + h.hexdigest() for split, h in per_split.items()})
