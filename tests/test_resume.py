"""Finding the newest complete checkpoint and the toolkit's flag to resume from it."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest

from npuflow.errors import StageRefused
from npuflow.execute import _resume_args
from npuflow.plan import StageCommand
from npuflow.resume import find_checkpoint, integrity_problem, resume_argv

PPDET = {"companions": ["{checkpoint_stem}.pdopt"], "argv": ["-r", "{checkpoint_stem}"]}


def _ppdet_snapshot(folder: Path, epoch: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{epoch}.pdparams").write_bytes(pickle.dumps({"w": [epoch] * 100}, protocol=4))
    (folder / f"{epoch}.pdopt").write_bytes(pickle.dumps({"last_epoch": epoch + 1}, protocol=4))


def _stage(spec: dict) -> StageCommand:
    return StageCommand(name="train", kind="train", argv=[], env={}, cwd="/", resume=spec)


def test_newest_is_by_epoch_number_not_by_name(tmp_path: Path) -> None:
    for epoch in (2, 10, 9):
        _ppdet_snapshot(tmp_path, epoch)
    spec = {**PPDET, "checkpoints": f"{tmp_path}/[0-9]*.pdparams"}
    ckpt, skipped, existing = find_checkpoint(spec)
    assert ckpt is not None and ckpt.path.name == "10.pdparams" and not skipped and existing == 3
    assert resume_argv(spec, ckpt) == ["-r", str(tmp_path / "10")]


def test_a_set_with_a_missing_or_truncated_file_is_skipped(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        _ppdet_snapshot(tmp_path, epoch)
    (tmp_path / "3.pdopt").unlink()
    data = (tmp_path / "2.pdparams").read_bytes()
    (tmp_path / "2.pdparams").write_bytes(data[:-20])
    ckpt, skipped, _ = find_checkpoint({**PPDET, "checkpoints": f"{tmp_path}/[0-9]*.pdparams"})
    assert ckpt is not None and ckpt.path.name == "1.pdparams"
    assert skipped == [f"{tmp_path}/3.pdparams: 3.pdopt missing",
                       f"{tmp_path}/2.pdparams: 2.pdparams truncated (pickle without its STOP opcode)"]


def test_torch_zip_checkpoints_are_checked_for_their_end_record(tmp_path: Path) -> None:
    path = tmp_path / "epoch_001.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"x" * 1000)
    assert integrity_problem(path) is None
    path.write_bytes(path.read_bytes()[:600])
    assert integrity_problem(path) == "truncated (zip without its end record)"
    (tmp_path / "empty.pt").write_bytes(b"")
    assert integrity_problem(tmp_path / "empty.pt") == "empty"


def test_a_retry_resumes_a_first_try_does_not_and_says_why(tmp_path: Path) -> None:
    _ppdet_snapshot(tmp_path, 4)
    stage = _stage({**PPDET, "checkpoints": f"{tmp_path}/[0-9]*.pdparams"})
    lines: list[str] = []
    assert _resume_args(stage, 2, None, lines.append) == ["-r", str(tmp_path / "4")]
    assert _resume_args(stage, 1, None, lines.append) == []
    assert "starts from scratch (set resume=true" in lines[-1]
    assert _resume_args(stage, 1, True, lines.append) == ["-r", str(tmp_path / "4")]
    assert _resume_args(stage, 3, False, lines.append) == []


def test_a_retry_refuses_to_start_afresh_when_only_broken_checkpoints_exist(tmp_path: Path) -> None:
    _ppdet_snapshot(tmp_path, 1)
    (tmp_path / "1.pdopt").write_bytes(b"")
    stage = _stage({**PPDET, "checkpoints": f"{tmp_path}/[0-9]*.pdparams"})
    with pytest.raises(StageRefused, match=r"try 2 should resume, but none of the 1 checkpoint\(s\) .* is complete"):
        _resume_args(stage, 2, None, lambda _: None)
    lines: list[str] = []
    empty = _stage({**PPDET, "checkpoints": f"{tmp_path}/none/*.pdparams"})
    assert _resume_args(empty, 2, None, lines.append) == []
    assert "no checkpoint matches" in lines[0]
