"""The prepare stage's download path end to end against a local HTTP server: archives of a generated set are
downloaded (with a login for Cityscapes), verified, extracted, derived, validated; a rerun fetches nothing."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from npuflow.datasets.faults import CLEAN
from npuflow.datasets.prepare import PASSWORD_ENV, USER_ENV, PrepareError, prepare
from npuflow.datasets.validate import validate
from npuflow.errors import EXIT_NOT_RETRYABLE
from npuflow.plan import dataset_expectations
from npuflow.recipe import PROJECT_ROOT, load_dataset_spec
from tests.fileserver import FileServer


def _zip_dirs(archive: Path, root: Path, folders: list[str]) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in folders:
            for path in sorted((root / folder).rglob("*")):
                zf.write(path, path.relative_to(root).as_posix())


def _specs_served_by(server: FileServer, recipes: Path, sources: dict[str, dict]) -> None:
    """Copies of the real specs whose archives point at the local server and whose counts fit the tiny sets."""
    (recipes / "datasets").mkdir(parents=True)
    for path in (PROJECT_ROOT / "recipes" / "datasets").glob("*.yaml"):
        spec = yaml.safe_load(path.read_text())
        if spec["name"] in sources:
            spec["expect"] = dataset_expectations(spec, sources[spec["name"]])
        for archive in spec.get("download", {}).get("archives", []):
            body = (server.root / archive["name"]).read_bytes() if (server.root / archive["name"]).exists() else b""
            if "md5" in archive:
                archive.update(url=f"{server.url}/{archive['name']}", size=len(body),
                               md5=hashlib.md5(body).hexdigest())
            else:
                archive.update(url=archive["url"].replace("https://www.cityscapes-dataset.com", server.url),
                               md5_url=archive["md5_url"].replace("https://www.cityscapes-dataset.com", server.url))
        if "login" in spec.get("download", {}):
            spec["download"]["login"]["url"] = f"{server.url}/login"
        (recipes / "datasets" / path.name).write_text(yaml.safe_dump(spec))


def _quiet(_: str) -> None:
    pass


def _coco_archives(tmp_path: Path, source: dict) -> Path:
    """The three COCO archives of a generated set, in a folder to serve."""
    generated = tmp_path / "generated"
    prepare("coco2017", generated, source, log=_quiet)
    www = tmp_path / "www"
    www.mkdir()
    for name, folder in (("annotations_trainval2017.zip", "annotations"), ("val2017.zip", "val2017"),
                         ("train2017.zip", "train2017")):
        _zip_dirs(www / name, generated, [folder])
    return www


def test_coco_download_extract_convert_to_yolo_and_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = CLEAN["yolo"]["source"]
    www = _coco_archives(tmp_path, source)
    with FileServer(www) as server:
        _specs_served_by(server, tmp_path / "recipes", {"coco2017": source, "coco2017_yolo": source})
        monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path / "recipes"))
        root = tmp_path / "data" / "coco"
        first = prepare("coco2017_yolo", root, {"kind": "download"}, log=_quiet)
        assert [d["name"] for d in first["downloaded"]] == ["annotations_trainval2017.zip", "val2017.zip",
                                                            "train2017.zip"]
        expect = load_dataset_spec("coco2017_yolo")["expect"]
        for fmt in ("coco", "yolo"):
            found = validate(fmt, root, ["train2017", "val2017"], expect)
            assert found.ok, (fmt, found.describe())
        requests = len(server.requests)
        again = prepare("coco2017_yolo", root, {"kind": "download"}, log=_quiet)
        assert len(server.requests) == requests  # verified downloads and extractions are not repeated
        assert all(d["skipped"] for d in again["downloaded"])


def test_cityscapes_download_needs_the_connection_and_derives_train_ids(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    source = CLEAN["cityscapes"]["source"]
    generated = tmp_path / "generated"
    prepare("cityscapes", generated, source, log=_quiet)
    for label in generated.rglob("*_labelTrainIds.png"):
        label.unlink()  # the real packages hold polygons; train ids are derived after download
    www = tmp_path / "www"
    www.mkdir()
    _zip_dirs(www / "gtFine_trainvaltest.zip", generated, ["gtFine"])
    _zip_dirs(www / "leftImg8bit_trainvaltest.zip", generated, ["leftImg8bit"])
    with FileServer(www) as server:
        server.login = ("city", "pass word; $(id)")
        _specs_served_by(server, tmp_path / "recipes", {"cityscapes": source})
        monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path / "recipes"))
        root = tmp_path / "cityscapes"
        with pytest.raises(PrepareError, match="Airflow Connection 'cityscapes_login'"):
            prepare("cityscapes", root, {"kind": "download"}, log=_quiet)
        monkeypatch.setenv(USER_ENV, "city")
        monkeypatch.setenv(PASSWORD_ENV, "pass word; $(id)")
        result = prepare("cityscapes", root, {"kind": "download"}, log=_quiet)
        assert {d["name"] for d in result["downloaded"]} == {"gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"}
        found = validate("cityscapes", root, ["train", "val"], load_dataset_spec("cityscapes")["expect"])
        assert found.ok, found.describe()
        assert found.counts["train"] == {"images": 4, "labels": 4}


def test_local_source_writes_nothing_and_names_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match=r"does not exist.*dataset_root"):
        prepare("coco2017", tmp_path / "nowhere", {"kind": "local"}, log=_quiet)
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "mine").mkdir()
    assert prepare("coco2017", tmp_path / "mine", {"kind": "local"}, log=_quiet)["downloaded"] == []
    assert list((tmp_path / "mine").iterdir()) == []


def test_prepare_cli_reports_a_bad_archive_and_keeps_good_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from npuflow.datasets.prepare import main

    source = CLEAN["coco"]["source"]
    www = _coco_archives(tmp_path, source)
    (www / "train2017.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    with FileServer(www) as server:
        _specs_served_by(server, tmp_path / "recipes", {"coco2017": source})
        monkeypatch.setenv("NPUFLOW_RECIPES_DIR", str(tmp_path / "recipes"))
        root = tmp_path / "coco"
        code = main(["--spec", "coco2017", "--root", str(root), "--source", json.dumps({"kind": "download"}),
                     "--out", str(tmp_path / "out.json")])
    assert code == EXIT_NOT_RETRYABLE  # a broken archive is broken on every try
    assert "train2017.zip" in capsys.readouterr().err
    assert (root / "val2017").is_dir() and (root / "annotations").is_dir()  # extracted before the bad one: kept
    assert not (root / "train2017").exists() and not (tmp_path / "out.json").exists()
    shutil.rmtree(root)
