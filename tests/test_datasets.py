"""COCO generator and validator: a generated set is clean; each injected fault is found and named."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from operators.datasets.imageheader import ImageHeaderError, image_size
from operators.datasets.synth import make_coco
from operators.datasets.validate import validate


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    root = tmp_path / "coco"
    make_coco(root, {"train2017": 6, "val2017": 3}, 3, (96, 64), seed=1)
    return root


def _edit(root: Path, split: str, change: Callable[[dict], None]) -> None:
    path = root / "annotations" / f"instances_{split}.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_generated_set_is_clean_and_real(coco: Path) -> None:
    found = validate("coco", coco, ["train2017", "val2017"])
    assert found.ok, found.describe()
    assert found.counts["train2017"]["images"] == 6
    data = json.loads((coco / "annotations" / "instances_val2017.json").read_text())
    first = coco / "val2017" / data["images"][0]["file_name"]
    assert first.read_bytes()[:2] == b"\xff\xd8"  # a real JPEG
    assert image_size(first) == (96, 64)
    assert {c["id"] for c in data["categories"]} == {1, 3, 18}  # COCO's own non-contiguous ids


def _drop_first_image_file(root: Path) -> None:
    sorted((root / "train2017").glob("*.jpg"))[0].unlink()


def _truncate_image(root: Path) -> None:
    path = sorted((root / "train2017").glob("*.jpg"))[0]
    path.write_bytes(path.read_bytes()[:10])


FAULTS = [
    ("missing_image_file", _drop_first_image_file),
    ("unreadable_image", _truncate_image),
    ("image_size_mismatch", lambda r: _edit(r, "train2017", lambda d: d["images"][0].update(width=97))),
    ("annotation_unknown_image", lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(image_id=999))),
    ("annotation_unknown_category",
     lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(category_id=2))),
    ("bbox_outside_image", lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(bbox=[90, 0, 50, 10]))),
    ("bbox_not_positive", lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(bbox=[1, 1, 0, 5]))),
    ("bad_bbox", lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(bbox=[1, 1, "w", 5]))),
    ("duplicate_image_id", lambda r: _edit(r, "train2017", lambda d: d["images"].append(dict(d["images"][0])))),
    ("duplicate_annotation_id",
     lambda r: _edit(r, "train2017", lambda d: d["annotations"].append(dict(d["annotations"][0])))),
    ("bad_iscrowd", lambda r: _edit(r, "train2017", lambda d: d["annotations"][0].update(iscrowd=3))),
    ("unreadable_json", lambda r: (r / "annotations" / "instances_train2017.json").write_text("{not json")),
    ("missing_annotation_file", lambda r: (r / "annotations" / "instances_val2017.json").unlink()),
    ("bad_json_structure", lambda r: (r / "annotations" / "instances_train2017.json").write_text('{"images": 1}')),
]


@pytest.mark.parametrize(("kind", "inject"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_is_detected_and_named(coco: Path, kind: str, inject: Callable[[Path], None]) -> None:
    inject(coco)
    found = validate("coco", coco, ["train2017", "val2017"])
    assert not found.ok
    assert kind in found.errors, found.describe()


def test_missing_root() -> None:
    found = validate("coco", Path("/nonexistent/coco"), ["val2017"])
    assert "missing_dataset_root" in found.errors


def test_image_without_annotations_is_only_a_warning(coco: Path) -> None:
    _edit(coco, "val2017", lambda d: d.update(annotations=[a for a in d["annotations"] if a["image_id"] != d["images"][0]["id"]]))
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
    cmd = [sys.executable, "-m", "operators.cli", "validate-dataset", "coco", str(coco), "--split", "val2017",
           "--report", str(tmp_path / "r.json")]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    _edit(coco, "val2017", lambda d: d["annotations"][0].update(category_id=2))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "annotation_unknown_category" in proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["errors"]["annotation_unknown_category"]["count"] == 1


PY39 = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")


@pytest.mark.skipif(not PY39.exists(), reason="needs a Python 3.9 interpreter (the tutorials' NPU image has 3.9)")
def test_validation_stage_runs_under_python_3_9(coco: Path) -> None:
    """Stage modules run under the toolkit's interpreter; the seeds' paddle-npu image ships Python 3.9."""
    from tests.conftest import ROOT

    proc = subprocess.run([str(PY39), "-m", "operators.datasets.validate", "coco", str(coco), "--split", "val2017"],
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "dataset is clean" in proc.stdout
