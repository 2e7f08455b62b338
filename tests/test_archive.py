"""Extraction refuses malicious archives (nothing written outside the target) and is atomic."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from npuflow.datasets.archive import UnsafeArchive, extract


def _zip(path: Path, entries: list[tuple[str, bytes]], symlinks: list[tuple[str, str]] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
    return path


def _file(name: str, size: int = 3) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


MALICIOUS = [
    ("zip_dotdot", lambda d: _zip(d / "a.zip", [("ok.txt", b"1"), ("../evil.txt", b"pwned")]), "'..'"),
    ("zip_absolute", lambda d: _zip(d / "a.zip", [("/tmp/npuflow-evil.txt", b"pwned")]), "absolute path"),
    ("zip_symlink_out", lambda d: _zip(d / "a.zip", [], symlinks=[("data/link", "../../evil")]), "symlink"),
    ("tar_dotdot", lambda d: _tar(d / "a.tgz", [_file("a/../../evil.txt")]), "'..'"),
    ("tar_absolute", lambda d: _tar(d / "a.tgz", [_file("/tmp/npuflow-evil.txt")]), "absolute path"),
    ("tar_symlink_out", lambda d: _tar(d / "a.tgz", [_link("data/link", "/etc", tarfile.SYMTYPE),
                                                       _file("data/link/passwd")]), "symlink"),
    ("tar_symlink_climb", lambda d: _tar(d / "a.tgz", [_link("data/link", "../../..", tarfile.SYMTYPE)]), "symlink"),
    ("tar_hardlink_out", lambda d: _tar(d / "a.tgz", [_link("data/hard", "../../../etc/passwd", tarfile.LNKTYPE)]),
     "hard link"),
    ("tar_hardlink_absolute", lambda d: _tar(d / "a.tgz", [_link("hard", "/etc/passwd", tarfile.LNKTYPE)]), "hard link"),
    ("tar_device", lambda d: _tar(d / "a.tgz", [_link("dev", "", tarfile.CHRTYPE)]), "device"),
]


@pytest.mark.parametrize(("make", "why"), [m[1:] for m in MALICIOUS], ids=[m[0] for m in MALICIOUS])
def test_malicious_archive_is_refused_and_writes_nothing(tmp_path: Path, make, why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "deep" / "target"
    target.mkdir(parents=True)
    (target / "kept.txt").write_text("already here")
    archive = make(outside)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UnsafeArchive, match=why):
        extract(archive, target, log=lambda _: None)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert (target / "kept.txt").read_text() == "already here"
    assert not Path("/tmp/npuflow-evil.txt").exists()


def test_expansion_past_the_bound_stops(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", [("zeros.bin", b"\0" * (4 << 20))])
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchive, match="over the bound"):
        extract(archive, target, max_bytes=1 << 20, log=lambda _: None)
    assert list(target.iterdir()) == []


def test_truncated_archive_is_named_broken(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", [("x/y.txt", b"y" * 100_000)])
    archive.write_bytes(archive.read_bytes()[:-200])
    with pytest.raises(UnsafeArchive, match=r"a.zip: (broken archive|neither a zip nor a tar)"):
        extract(archive, tmp_path / "t", log=lambda _: None)


def test_extraction_is_atomic_marked_and_skipped_on_rerun(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tgz", [_file("val2017/1.jpg"), _file("val2017/2.jpg"),
                                        _link("val2017/latest.jpg", "2.jpg", tarfile.SYMTYPE)])
    target = tmp_path / "coco"
    (target / "val2017").mkdir(parents=True)
    (target / "val2017" / "stale.jpg").write_text("from an older extraction")
    first = extract(archive, target, log=lambda _: None)
    assert first["skipped"] is False and first["entries"] == ["val2017"]
    assert sorted(p.name for p in (target / "val2017").iterdir()) == ["1.jpg", "2.jpg", "latest.jpg"]
    assert [p.name for p in target.iterdir() if p.name.startswith(".extract")] == []
    assert extract(archive, target, log=lambda _: None)["skipped"] is True
    (target / "val2017" / "1.jpg").unlink()
    (target / "val2017").rename(target / "moved")
    assert extract(archive, target, log=lambda _: None)["skipped"] is False  # marker no longer matches
