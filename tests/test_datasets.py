"""Generators and validators of the three formats: a generated set is clean; each catalogued fault is named."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from npuflow.cli import main as cli_main
from npuflow.datasets.faults import CATALOGUE, CLEAN, SPLITS, Fault, edit_instances
from npuflow.datasets.imageheader import ImageHeaderError, image_size
from npuflow.datasets.prepare import prepare
from npuflow.datasets.validate import validate
from npuflow.errors import EXIT_NOT_RETRYABLE
from npuflow.plan import dataset_expectations
from npuflow.recipe import load_dataset_spec


@pytest.fixture(scope="session")
def clean_sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One clean generated set per format, made once; tests copy the one they damage."""
    base = tmp_path_factory.mktemp("clean")
    out = {}
    for fmt, how in CLEAN.items():
        prepare(how["spec"], base / fmt, how["source"], log=lambda _: None)
        out[fmt] = base / fmt
    return out


def _copy(clean_sets: dict[str, Path], fmt: str, tmp_path: Path) -> Path:
    root = tmp_path / fmt
    shutil.copytree(clean_sets[fmt], root, symlinks=True)
    return root


@pytest.fixture
def coco(clean_sets: dict[str, Path], tmp_path: Path) -> Path:
    return _copy(clean_sets, "coco", tmp_path)


def _expect(fmt: str) -> str:
    return json.dumps(dataset_expectations(load_dataset_spec(CLEAN[fmt]["spec"]), CLEAN[fmt]["source"]))


def _validate_cli(fmt: str, root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    argv = ["validate-dataset", fmt, str(root), "--expect", _expect(fmt)]
    argv += [a for split in SPLITS[fmt] for a in ("--split", split)]
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("fmt", sorted(CLEAN))
def test_generated_set_of_each_format_is_clean(clean_sets: dict[str, Path], fmt: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _validate_cli(fmt, clean_sets[fmt], capsys)
    assert code == 0, out
    assert "dataset is clean" in out


def test_catalogue_covers_three_formats_with_distinct_faults() -> None:
    assert len(CATALOGUE) >= 15
    assert {f.format for f in CATALOGUE} == {"coco", "cityscapes", "yolo"}
    assert len({f.name for f in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("fault", CATALOGUE, ids=[f.name for f in CATALOGUE])
def test_validate_dataset_names_every_fault_of_the_catalogue(clean_sets: dict[str, Path], tmp_path: Path,
                                                             fault: Fault, capsys: pytest.CaptureFixture[str]) -> None:
    root = _copy(clean_sets, fault.format, tmp_path)
    fault.inject(root)
    code, out = _validate_cli(fault.format, root, capsys)
    assert code == EXIT_NOT_RETRYABLE, out
    assert "dataset is not usable: " in out and fault.detected_as in out, out


def test_generated_coco_is_real(coco: Path) -> None:
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    first = coco / "val2017" / data["images"][0]["file_name"]
    assert first.read_bytes()[:2] == b"\xff\xd8"  # a real JPEG
    assert image_size(first) == (96, 64)
    assert {c["id"] for c in data["categories"]} == {1, 3, 18}  # COCO's own non-contiguous ids


def test_cityscapes_train_ids_come_from_cityscapesscripts(clean_sets: dict[str, Path]) -> None:
    from PIL import Image

    from npuflow.datasets.cityscapes import label_values

    root = clean_sets["cityscapes"]
    label = sorted((root / "gtFine" / "train").glob("*/*_labelTrainIds.png"))[0]
    values = label_values(label)
    # road 0, sidewalk 1, building 2, vegetation 8, sky 10 are in every generated scene
    assert {0, 1, 2, 8, 10} <= values and all(v < 19 or v == 255 for v in values)
    with Image.open(label) as img:
        assert img.mode == "L"
    image = root / "leftImg8bit" / "train" / label.parent.name / label.name.replace(
        "_gtFine_labelTrainIds.png", "_leftImg8bit.png")
    assert image_size(image) == image_size(label) == (128, 64)


def test_coco_to_yolo_labels(clean_sets: dict[str, Path]) -> None:
    from npuflow.datasets.yolo import label_path

    root = clean_sets["yolo"]
    data = json.loads((root / "annotations" / "instances_train2017.json").read_text())
    img = data["images"][0]
    anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
    first_line = (root / "train2017.txt").read_text().splitlines()[0]
    assert first_line == f"./images/train2017/{img['file_name']}"
    label = label_path(root / first_line)
    assert label == root / "labels" / "train2017" / (Path(img["file_name"]).stem + ".txt")
    rows = [list(map(float, r.split())) for r in label.read_text().splitlines()]
    index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    x, y, w, h = anns[0]["bbox"]
    assert rows[0] == pytest.approx([index[anns[0]["category_id"]], (x + w / 2) / img["width"],
                                     (y + h / 2) / img["height"], w / img["width"], h / img["height"]], abs=1e-6)
    assert (root / "images" / "train2017" / img["file_name"]).is_file()  # the COCO image, through the link


def test_crowd_boxes_are_skipped_by_the_converter(coco: Path) -> None:
    from npuflow.datasets.derive import coco_to_yolo

    edit_instances(coco, "val2017", lambda d: [a.update(iscrowd=1) for a in d["annotations"]])
    result = coco_to_yolo(coco, ["val2017"], log=lambda _: None)
    assert result["val2017"]["boxes"] == 0
    assert all(p.read_text() == "" for p in (coco / "labels" / "val2017").glob("*.txt"))


def test_missing_root() -> None:
    found = validate("coco", Path("/nonexistent/coco"), ["val2017"])
    assert "missing_dataset_root" in found.errors


def test_image_without_annotations_is_only_a_warning(coco: Path) -> None:
    edit_instances(coco, "val2017", lambda d: d.update(
        annotations=[a for a in d["annotations"] if a["image_id"] != d["images"][0]["id"]]))
    found = validate("coco", coco, ["val2017"])
    assert found.ok
    assert "image_without_annotations" in found.warnings


def test_png_header(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (33, 17)).save(tmp_path / "a.png")
    assert image_size(tmp_path / "a.png") == (33, 17)
    (tmp_path / "b.gif").write_bytes(b"GIF89a....")
    with pytest.raises(ImageHeaderError):
        image_size(tmp_path / "b.gif")


def test_cli_exit_status_and_report(coco: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "npuflow.cli", "validate-dataset", "coco", str(coco), "--split", "val2017",
           "--report", str(tmp_path / "r.json")]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    edit_instances(coco, "val2017", lambda d: d["annotations"][0].update(category_id=2))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == EXIT_NOT_RETRYABLE
    assert "annotation_unknown_category" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["errors"]["annotation_unknown_category"]["count"] == 1


PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")


@pytest.mark.skipif(not PY39.exists(), reason="needs a Python 3.9 interpreter (the tutorials' NPU image has 3.9)")
def test_validation_stage_runs_under_python_3_9(coco: Path) -> None:
    """Stage modules run under the toolkit's interpreter; the seeds' paddle-npu image ships Python 3.9."""
    from tests.conftest import ROOT

    proc = subprocess.run([str(PY39), "-m", "npuflow.datasets.validate", "coco", str(coco), "--split", "val2017"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "dataset is clean" in proc.stdout


def test_yolo_empty_label_file_is_only_a_warning(clean_sets: dict[str, Path], tmp_path: Path) -> None:
    root = _copy(clean_sets, "yolo", tmp_path)
    sorted((root / "labels" / "train2017").glob("*.txt"))[0].write_text("")  # a background image
    found = validate("yolo", root, ["train2017"])
    assert found.ok, found.describe()
    assert "image_without_labels" in found.warnings


def test_a_second_validation_of_the_same_dataset_reuses_its_digest_without_reading_the_images(tmp_path: Path) -> None:
    from npuflow.datasets.synth import make_coco
    from npuflow.datasets.validate import main as validate_main

    root = tmp_path / "coco"
    make_coco(root, {"train2017": 6, "val2017": 3}, (96, 64), seed=3)

    def content(n: int) -> dict:
        out = tmp_path / f"report{n}.json"
        assert validate_main(["coco", str(root), "--report", str(out), "--digest-cache", str(tmp_path / "c")]) == 0
        return json.loads(out.read_text())["content"]

    first, second = content(1), content(2)
    assert first["files"] == 9 + 2 and first["hashed"] == 11  # 9 images and 2 annotation files, all read once
    assert second["digest"] == first["digest"] and second["hashed"] == 0 and second["reused"] == 11
    image = next((root / "val2017").iterdir())
    image.write_bytes(image.read_bytes() + b"\0")  # one image changes (still a valid JPEG: trailing bytes)
    third = content(3)
    assert third["hashed"] == 1 and third["digest"] != first["digest"]
