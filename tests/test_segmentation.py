"""DeepLabv3+ under PaddleSeg with real launchers and 2 CPU ranks: the guard against PaddleSeg's silent CPU
fallback on a real log, and a rank killed mid-training whose retry resumes from the newest complete iter_N/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from npuflow.errors import StageFailed, StageRefused
from npuflow.execute import job_marker
from npuflow.proc import job_processes
from tests.test_training import _kill_rank_when, _plan, _prepared, _run

DEEPLAB = "deeplabv3p_resnet50_os8_cityscapes_1024x512_80k"

pytestmark = pytest.mark.e2e


def test_a_training_whose_log_never_shows_the_device_is_stopped_and_refused(tmp_path: Path) -> None:
    """The stand-in logs "Set device: cpu", as PaddleSeg does after falling back; the guard wants npu."""
    plan = _prepared(_plan(tmp_path, DEEPLAB, {"iters": 400}))
    stage = plan.stage("train")
    reason = "PaddleSeg falls back to the CPU silently when the cpu device is missing"
    assert stage.expect_line == {"pattern": r"Set device: cpu\b", "within_s": 60, "reason": reason}  # the profile's
    stage.expect_line = {"pattern": r"Set device: npu\b", "within_s": 15, "reason": "the npu device is missing"}
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(StageRefused, match=r"printed no line matching 'Set device: npu\\\\b' within 15 s of its start, "
                                           r"so it is not running where the recipe says \(the npu device is missing\)"):
        _run(plan, "train", log=lines.append)
    assert time.monotonic() - started < 45
    assert any("Set device: cpu" in line for line in lines)  # the real log line the guard did not accept
    assert not job_processes(job_marker(plan, stage))  # the launcher and both ranks are gone


def test_a_killed_rank_fails_the_try_and_the_retry_resumes_from_the_newest_iter(tmp_path: Path) -> None:
    plan = _prepared(_plan(tmp_path, DEEPLAB, {"iters": 40}))
    _state, log, on_start = _kill_rank_when("iter: 22/40")
    with pytest.raises(StageFailed) as failed:
        _run(plan, "train", log=log, on_start=on_start, attempt=1)
    assert "failing rank 1 (local rank 1)" in str(failed.value)
    save_dir = Path(plan.variables["save_dir"])
    done = sorted(int(p.name.split("_")[1]) for p in save_dir.glob("iter_*") if (p / "model.pdopt").is_file())
    assert done and done[-1] >= 20  # snapshots every 10 iterations

    lines: list[str] = []
    result = _run(plan, "train", log=lines.append, attempt=2)
    assert result["ok"] and result["argv"][-2:] == ["--resume_model", str(save_dir / f"iter_{done[-1]}")]
    logged = sorted({int(m.group(1)) for line in lines for m in [re.search(r"iter: (\d+)/40", line)] if m})
    assert logged and logged[0] > done[-1] and logged[-1] == 40  # nothing before the snapshot trained again
