"""Safe, atomic extraction of zip and tar archives.

Every entry is checked before anything is written: no absolute paths, no ``..`` escaping the target, no links
pointing outside it, no device files, and the expanded size stays under a bound (a zip bomb stops early). The
archive is unpacked into a temporary folder next to the target and its top-level entries are moved into place
only when everything went well, so a crash mid-way never leaves a half-extracted ``train2017/`` that looks done.
A marker records the extraction so a rerun skips it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

#: Default bound on expanded bytes, as a multiple of the archive's size (images compress little; JSON ~10x).
DEFAULT_RATIO = 40


class UnsafeArchive(ValueError):
    """The archive tries to write outside its target, or expands past the bound; nothing was extracted."""


def _check_name(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: entry {name!r} has an absolute path")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive.name}: entry {name!r} escapes the target with '..'")
    return path


def _check_link(archive: Path, name: str, link: str, hard: bool) -> None:
    """A link must resolve inside the target: relative, and not climbing above the target."""
    kind = "hard link" if hard else "symlink"
    if link.startswith("/") or (len(link) > 1 and link[1] == ":"):
        raise UnsafeArchive(f"{archive.name}: {kind} {name!r} points outside the target ({link!r})")
    base = PurePosixPath() if hard else PurePosixPath(name).parent  # hard links name a member path
    depth = 0
    for part in (*base.parts, *PurePosixPath(link).parts):
        depth = depth - 1 if part == ".." else depth + (part not in ("", "."))
        if depth < 0:
            raise UnsafeArchive(f"{archive.name}: {kind} {name!r} points outside the target ({link!r})")


def _bound(archive: Path, max_bytes: int | None) -> int:
    return max_bytes if max_bytes is not None else max(archive.stat().st_size * DEFAULT_RATIO, 1 << 30)


def _extract_zip(archive: Path, into: Path, max_bytes: int) -> int:
    total = 0
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                _check_link(archive, info.filename, zf.read(info).decode("utf-8", "replace"), hard=False)
            total += info.file_size
        if total > max_bytes:
            raise UnsafeArchive(f"{archive.name}: expands to {total} bytes, over the bound of {max_bytes}")
        written = 0
        for info in infos:
            target = into / _check_name(archive, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(info.external_attr >> 16):
                os.symlink(zf.read(info).decode(), target)
                continue
            # Count what is really written: a lying header must not get past the bound.
            with zf.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > max_bytes:
                        raise UnsafeArchive(f"{archive.name}: expands past the bound of {max_bytes} bytes")
                    dst.write(chunk)
    return written


def _extract_tar(archive: Path, into: Path, max_bytes: int) -> int:
    total = 0
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            _check_name(archive, m.name)
            if m.issym() or m.islnk():
                _check_link(archive, m.name, m.linkname, hard=m.islnk())
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchive(f"{archive.name}: entry {m.name!r} is a device or fifo")
            total += m.size
        if total > max_bytes:
            raise UnsafeArchive(f"{archive.name}: expands to {total} bytes, over the bound of {max_bytes}")
        # The checks above are ours (clear messages); the stdlib's "data" filter is a second guard.
        extract = tf.extractall
        if hasattr(tarfile, "data_filter"):
            extract(into, members=members, filter="data")
        else:  # Python < 3.11.4
            extract(into, members=members)
    return total


def extracted_marker(target: Path, archive: Path) -> Path:
    return target / ".npuflow" / f"extracted-{archive.name}.json"


def extract(archive: Path, target: Path, *, max_bytes: int | None = None, log: Any = print) -> dict[str, Any]:
    """Extract ``archive`` (zip, tar, tar.gz...) into ``target`` safely and atomically; skip if already done."""
    marker = extracted_marker(target, archive)
    size = archive.stat().st_size
    try:
        record = json.loads(marker.read_text())
        if record.get("archive_size") == size and all((target / e).exists() for e in record["entries"]):
            log(f"{archive.name}: already extracted into {target}, skipping")
            return {**record, "skipped": True}
    except (OSError, ValueError, KeyError):
        pass
    bound = _bound(archive, max_bytes)
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / f".extract-{archive.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    started = time.monotonic()
    try:
        if zipfile.is_zipfile(archive):
            written = _extract_zip(archive, tmp, bound)
        elif tarfile.is_tarfile(archive):
            written = _extract_tar(archive, tmp, bound)
        else:
            raise UnsafeArchive(f"{archive.name}: neither a zip nor a tar archive (corrupt or truncated?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UnsafeArchive(f"{archive.name}: broken archive: {type(exc).__name__}: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    entries = sorted(p.name for p in tmp.iterdir())
    for name in entries:
        dest = target / name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(tmp / name, dest)
    tmp.rmdir()
    record = {"archive": str(archive), "archive_size": size, "entries": entries, "bytes": written,
              "seconds": round(time.monotonic() - started, 3)}
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(record) + "\n")
    log(f"{archive.name}: extracted {written} bytes into {target} ({', '.join(entries[:5])})")
    return {**record, "skipped": False}
