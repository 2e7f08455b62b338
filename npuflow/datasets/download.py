"""HTTP(S) downloads that survive a night: resume, retry, verify, write atomically, remember what was verified.

A download goes to ``<dest>.part`` and is renamed to ``<dest>`` only after its size and MD5 match; then a marker
``<dest>.verified.json`` records what was checked (size, md5, mtime). A rerun trusts the marker only while the
file still has that size and mtime, so a finished download is skipped in milliseconds and a replaced or
truncated file is fetched again. Nothing here knows Airflow; credentials come in as arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Any

Log = Callable[[str], None]

CHUNK = 1 << 20
#: Statuses worth retrying: the server or a proxy had a bad moment.
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A download failed for good; the message names the URL and why."""


@dataclass(frozen=True)
class Archive:
    """One file to fetch: where from, where to, and what it must be."""

    name: str
    url: str
    size: int | None = None
    md5: str | None = None
    md5_url: str | None = None  # where the site publishes the MD5 (Cityscapes), when not in the spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Archive:
        return cls(name=spec["name"], url=spec["url"], size=spec.get("size"), md5=spec.get("md5"),
                   md5_url=spec.get("md5_url"))


def marker_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".verified.json")


def verified(dest: Path, archive: Archive) -> bool:
    """True when ``dest`` carries a marker that still matches the file and the archive's expectations."""
    marker = marker_path(dest)
    try:
        record = json.loads(marker.read_text())
        stat = dest.stat()
    except (OSError, ValueError):
        return False
    return (record.get("url") == archive.url and record.get("size") == stat.st_size
            and record.get("mtime_ns") == stat.st_mtime_ns
            and (archive.size is None or archive.size == stat.st_size)
            and (archive.md5 is None or archive.md5 == record.get("md5")))


def _write_marker(dest: Path, archive: Archive, md5: str) -> None:
    stat = dest.stat()
    tmp = marker_path(dest).with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": archive.url, "size": stat.st_size, "md5": md5, "mtime_ns": stat.st_mtime_ns,
                               "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    os.replace(tmp, marker_path(dest))


def check_free_space(folder: Path, needed: int, what: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DownloadError(f"not enough disk for {what}: {_human(needed)} needed in {folder}, "
                            f"{_human(free)} free")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class _Progress:
    """Bytes, rate and ETA every ``every_s`` seconds: one line per interval, not one per chunk."""

    def __init__(self, name: str, done: int, total: int | None, log: Log, every_s: float) -> None:
        self.name, self.total, self.log, self.every_s = name, total, log, every_s
        self.start_bytes = self.done = done
        self.started = self.last = time.monotonic()

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.log(self.line(now))

    def line(self, now: float) -> str:
        rate = (self.done - self.start_bytes) / max(now - self.started, 1e-9)
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            return (f"{self.name}: {_human(self.done)} of {_human(self.total)} "
                    f"({100 * self.done / self.total:.0f}%), {_human(rate)}/s, eta {eta:.0f} s")
        return f"{self.name}: {_human(self.done)}, {_human(rate)}/s"


class _HashingWriter:
    """Writes chunks to the file and feeds the MD5 in a second thread (hashlib releases the GIL), so hashing
    overlaps with the network instead of adding to it."""

    def __init__(self, fh: Any, digest: Any) -> None:
        self.fh, self.digest = fh, digest
        self.queue: Queue[bytes | None] = Queue(maxsize=64)
        self.thread = threading.Thread(target=self._hash, daemon=True)
        self.thread.start()

    def _hash(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.queue.put(chunk)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()


def _md5_of(path: Path, digest: Any | None = None) -> Any:
    digest = digest or hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest


def _session(session: Any | None) -> Any:
    import requests

    return session if session is not None else requests.Session()


def fetch_md5(url: str, session: Any | None = None, timeout: float = 60) -> str:
    """The MD5 a site publishes for a package (first token of the body, as Cityscapes serves it)."""
    resp = _session(session).get(url, timeout=timeout, allow_redirects=False)
    if resp.status_code != 200:
        raise DownloadError(f"{url}: HTTP {resp.status_code} when asking for the MD5")
    token = resp.text.split()[0] if resp.text.split() else ""
    if len(token) != 32 or any(c not in "0123456789abcdef" for c in token.lower()):
        raise DownloadError(f"{url}: the MD5 the site served is not an MD5: {resp.text[:80]!r}")
    return token.lower()


def download(archive: Archive, dest: Path, *, session: Any | None = None, log: Log = print,
             retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 60.0, progress_every_s: float = 10.0,
             ) -> dict[str, Any]:
    """Fetch ``archive`` to ``dest``; resumes ``dest.part``, retries transient failures, verifies, marks.

    Returns what was done: ``{"name", "path", "size", "md5", "skipped", "resumed_from", "attempts", "seconds"}``.
    """
    started = time.monotonic()
    if verified(dest, archive):
        log(f"{archive.name}: already downloaded and verified ({dest}), skipping")
        return _summary(archive, dest, json.loads(marker_path(dest).read_text())["md5"], started)
    session = _session(session)
    expected_md5 = archive.md5 or (fetch_md5(archive.md5_url, session) if archive.md5_url else None)
    if dest.is_file() and expected_md5 and archive.size in (None, dest.stat().st_size):
        # A file without a (matching) marker, e.g. an archive copied in by hand: re-hash it, don't re-fetch it.
        md5 = _md5_of(dest).hexdigest()
        if md5 == expected_md5:
            _write_marker(dest, archive, md5)
            log(f"{archive.name}: found at {dest} and verified (MD5 {md5}), not downloading")
            return _summary(archive, dest, md5, started)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if archive.size is not None:
        have = part.stat().st_size if part.exists() else 0
        check_free_space(dest.parent, archive.size - have, archive.name)

    resumed_from = part.stat().st_size if part.exists() else 0
    attempt = 0
    while True:
        attempt += 1
        try:
            md5 = _fetch_into(archive, part, session, log, timeout_s, progress_every_s)
            break
        except _Transient as exc:
            if attempt > retries:
                raise DownloadError(f"{archive.name}: giving up after {attempt} attempts: {exc}") from None
            delay = backoff_s * 2 ** (attempt - 1)
            log(f"{archive.name}: {exc}; retry {attempt}/{retries} in {delay:.1f} s "
                f"(keeping {_human(part.stat().st_size if part.exists() else 0)} already fetched)")
            time.sleep(delay)

    size = part.stat().st_size
    if archive.size is not None and size != archive.size:
        part.unlink()
        raise DownloadError(f"{archive.name}: size mismatch, got {size} bytes, expected {archive.size}; "
                            f"the partial file was removed")
    if expected_md5 is not None and md5 != expected_md5:
        part.unlink()
        raise DownloadError(f"{archive.name}: checksum mismatch, MD5 {md5}, expected {expected_md5}; "
                            f"the download was discarded and nothing was marked good")
    marker_path(dest).unlink(missing_ok=True)
    os.replace(part, dest)
    _write_marker(dest, archive, md5)
    log(f"{archive.name}: {_human(size)} in {time.monotonic() - started:.1f} s, MD5 {md5} verified")
    return _summary(archive, dest, md5, started, skipped=False, attempts=attempt, resumed_from=resumed_from)


def _summary(archive: Archive, dest: Path, md5: str, started: float, *, skipped: bool = True, attempts: int = 0,
             resumed_from: int = 0) -> dict[str, Any]:
    return {"name": archive.name, "path": str(dest), "size": dest.stat().st_size, "md5": md5, "skipped": skipped,
            "attempts": attempts, "resumed_from": resumed_from, "seconds": round(time.monotonic() - started, 3)}


class _Transient(Exception):
    """A failure worth another try (connection drop, timeout, 5xx)."""


def _fetch_into(archive: Archive, part: Path, session: Any, log: Log, timeout_s: float, every_s: float) -> str:
    """One attempt: append to ``part`` from where it ends (Range), or start over if the server ignores Range.

    Returns the MD5 of the whole file, computed while it streams in (the bytes already there are hashed first).
    """
    import requests
    import urllib3

    have = part.stat().st_size if part.exists() else 0
    if archive.size is not None and have > archive.size:
        part.unlink()
        have = 0
    if archive.size is not None and have == archive.size:
        return _md5_of(part).hexdigest()  # a previous attempt got every byte; verification follows
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with session.get(archive.url, headers=headers, stream=True, timeout=timeout_s, allow_redirects=True) as resp:
            status = resp.status_code
            if status in TRANSIENT_STATUS:
                raise _Transient(f"HTTP {status} from {archive.url}")
            if status == 416 and have:
                part.unlink()  # the server says our partial file is longer than the resource: start over
                raise _Transient(f"HTTP 416 for a resume at byte {have}; restarting from zero")
            if status not in (200, 206):
                raise DownloadError(f"{archive.name}: HTTP {status} from {archive.url}")
            if status == 200 and have:
                log(f"{archive.name}: the server ignored the Range request; starting over")
                have = 0
            length = resp.headers.get("Content-Length")
            total = archive.size if archive.size is not None else (have + int(length) if length else None)
            progress = _Progress(archive.name, have, total, log, every_s)
            digest = _md5_of(part) if have else hashlib.md5()
            with open(part, "ab" if have else "wb") as fh:
                writer = _HashingWriter(fh, digest)
                try:
                    for chunk in resp.iter_content(CHUNK):  # identity encoding: the bytes as served
                        writer.write(chunk)
                        progress.add(len(chunk))
                finally:
                    writer.close()
            if length is not None and progress.done - have < int(length):
                raise _Transient(f"connection closed after {_human(progress.done)}")
            return digest.hexdigest()
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
        raise _Transient(f"{type(exc).__name__}: {str(exc)[:200]}") from None


def form_login(login_url: str, username: str, password: str, timeout_s: float = 60.0) -> Any:
    """A session logged in through a site's login form (Cityscapes: a 302 means the login worked).

    The credentials are sent in the POST body only; they never appear in a URL, an argv or a log line.
    """
    import requests

    session = requests.Session()
    try:
        session.get(login_url, timeout=timeout_s, allow_redirects=False).raise_for_status()
        resp = session.post(login_url, data={"username": username, "password": password, "submit": "Login"},
                            timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        raise DownloadError(f"login at {login_url} failed: {type(exc).__name__}: {exc}") from None
    if resp.status_code != 302:
        raise DownloadError(f"login at {login_url} was refused (HTTP {resp.status_code}): check the user and "
                            f"password of the connection")
    return session
