"""Downloads against a real HTTP server on 127.0.0.1: resume, retries, checksums, markers, logins."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from npuflow.datasets.download import CHUNK, Archive, DownloadError, download, form_login, marker_path, verified
from tests.fileserver import FileServer

SIZE = 3 * (1 << 20) + 12345


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "data.bin").write_bytes(os.urandom(SIZE))
    with FileServer(root) as server:
        yield server


def _archive(server: FileServer, name: str = "data.bin", **kw) -> Archive:
    body = (server.root / name).read_bytes()
    return Archive(name=name, url=f"{server.url}/{name}", size=kw.pop("size", len(body)),
                   md5=kw.pop("md5", hashlib.md5(body).hexdigest()), **kw)


def _fast(**kw):
    return {"retries": 3, "backoff_s": 0.01, "log": lambda _: None, **kw}


def test_download_verifies_marks_and_rerun_skips(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "dl" / "data.bin"
    result = download(_archive(served), dest, **_fast())
    assert dest.read_bytes() == (served.root / "data.bin").read_bytes()
    assert result["skipped"] is False and result["attempts"] == 1
    assert verified(dest, _archive(served))
    before = len(served.requests)
    again = download(_archive(served), dest, **_fast())
    assert again["skipped"] is True
    assert len(served.requests) == before  # no HTTP at all on a verified rerun


def test_resume_after_connection_drop(served: FileServer, tmp_path: Path) -> None:
    served.drop_after["/data.bin"] = 2_500_000
    dest = tmp_path / "data.bin"
    result = download(_archive(served), dest, **_fast())
    assert result["attempts"] == 2
    ranges = [r for m, p, r in served.requests if p == "/data.bin"]
    # Whole chunks received before the drop are kept: the retry asks only for the rest.
    assert ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) >= 2_500_000 - CHUNK
    assert hashlib.md5(dest.read_bytes()).hexdigest() == _archive(served).md5


def test_resume_of_a_partial_file_left_by_an_earlier_run(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes((served.root / "data.bin").read_bytes()[:777_777])
    result = download(_archive(served), dest, **_fast())
    assert result["resumed_from"] == 777_777
    assert served.requests[-1][2] == "bytes=777777-"
    assert verified(dest, _archive(served))


def test_server_that_ignores_range_restarts_from_zero(served: FileServer, tmp_path: Path) -> None:
    served.ignore_range = True
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(b"x" * 5000)  # garbage that must not survive
    download(_archive(served), dest, **_fast())
    assert dest.read_bytes() == (served.root / "data.bin").read_bytes()


def test_checksum_mismatch_marks_nothing_and_keeps_good_files(served: FileServer, tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    (served.root / "good.bin").write_bytes(b"good" * 1000)
    download(_archive(served, "good.bin"), good, **_fast())
    good_marker = marker_path(good).read_bytes()
    good_stat = good.stat()
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=r"checksum mismatch.*expected 0{32}"):
        download(_archive(served, md5="0" * 32), dest, **_fast())
    assert not dest.exists() and not marker_path(dest).exists() and not dest.with_name("data.bin.part").exists()
    assert marker_path(good).read_bytes() == good_marker
    assert good.stat().st_mtime_ns == good_stat.st_mtime_ns and verified(good, _archive(served, "good.bin"))


def test_size_mismatch_is_named(served: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="size mismatch"):
        download(_archive(served, size=SIZE - 1), tmp_path / "data.bin", **_fast())


def test_404_fails_at_once(served: FileServer, tmp_path: Path) -> None:
    archive = Archive(name="nope.zip", url=f"{served.url}/nope.zip", md5="0" * 32)
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(archive, tmp_path / "nope.zip", **_fast())
    assert served.hits["/nope.zip"] == 1  # a 404 is not retried


def test_5xx_is_retried_with_backoff(served: FileServer, tmp_path: Path) -> None:
    served.fail_times["/data.bin"] = (503, 2)
    logged: list[str] = []
    result = download(_archive(served), tmp_path / "data.bin", **_fast(log=logged.append))
    assert result["attempts"] == 3
    assert sum("HTTP 503" in line and "retry" in line for line in logged) == 2


def test_persistent_5xx_gives_up_naming_the_status(served: FileServer, tmp_path: Path) -> None:
    served.fail_times["/data.bin"] = (502, 100)
    with pytest.raises(DownloadError, match="giving up after 4 attempts: HTTP 502"):
        download(_archive(served), tmp_path / "data.bin", **_fast())
    assert not (tmp_path / "data.bin").exists()


def test_a_marker_that_no_longer_matches_is_not_trusted(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    download(_archive(served), dest, **_fast())
    dest.write_bytes(b"\0" * SIZE)  # same size, new content and mtime
    assert not verified(dest, _archive(served))
    assert download(_archive(served), dest, **_fast())["skipped"] is False
    assert dest.read_bytes() == (served.root / "data.bin").read_bytes()


def test_not_enough_disk_is_refused_before_fetching(served: FileServer, tmp_path: Path) -> None:
    archive = Archive(name="data.bin", url=f"{served.url}/data.bin", size=1 << 60, md5="0" * 32)
    with pytest.raises(DownloadError, match="not enough disk"):
        download(archive, tmp_path / "data.bin", **_fast())
    assert served.requests == []


def test_progress_lines_carry_bytes_rate_and_eta(served: FileServer, tmp_path: Path) -> None:
    logged: list[str] = []
    download(_archive(served), tmp_path / "data.bin", **_fast(log=logged.append, progress_every_s=0))
    progress = [line for line in logged if "/s, eta" in line]
    assert progress and "MiB of 3.0 MiB" in progress[-1]
    assert len(progress) <= SIZE // (1 << 16)  # per received chunk at most, never per byte


def test_login_protected_package_with_published_md5(served: FileServer, tmp_path: Path) -> None:
    (served.root / "gtFine_trainvaltest.zip").write_bytes(os.urandom(50_000))
    served.login = ("alice", "s3cret")
    with pytest.raises(DownloadError, match=r"login .* was refused"):
        form_login(f"{served.url}/login", "alice", "wrong")
    session = form_login(f"{served.url}/login", "alice", "s3cret")
    archive = Archive(name="gtFine_trainvaltest.zip", url=f"{served.url}/file-handling/?packageID=1",
                      md5_url=f"{served.url}/md5-sum/?packageID=1")
    result = download(archive, tmp_path / archive.name, session=session, **_fast())
    assert result["md5"] == hashlib.md5((served.root / archive.name).read_bytes()).hexdigest()
    assert all("s3cret" not in path for _, path, _ in served.requests)  # never in a URL


def test_an_archive_put_in_place_by_hand_is_verified_not_fetched(served: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes((served.root / "data.bin").read_bytes())  # no marker
    result = download(_archive(served), dest, **_fast())
    assert result["skipped"] is True and served.requests == []
    assert verified(dest, _archive(served))
