"""The ModelZoo YOLOR port, run from the pinned checkout (issue 21): each production break of the old recipe held by
a test on the port's own files, and its train.py / test.py run on this CPU through the train and test stages.

The whole smoke DAG through Airflow is in tests/test_e2e_smoke.py; export, QAT and benchmarks of its checkpoint
through the adapter (npuflow/torchdet/yolor.py) run there too.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from npuflow.errors import StageFailed, StageRefused
from npuflow.execute import execute_stage
from npuflow.plan import Plan, build_plan
from npuflow.recipe import load_recipe
from npuflow.toolkits import toolkit
from npuflow.toolkits.checkout import checkout_dir, sync

YOLOR = "yolor_p6_coco"
PORT = checkout_dir("ModelZoo-PyTorch", "master") / "PyTorch/contrib/cv/detection/YOLOR"


@pytest.fixture(scope="module", autouse=True)
def checkout() -> None:
    sync(toolkit("ModelZoo-PyTorch"), "master", clone=False)


def _script_train_line() -> list[str]:
    """test/train_full_8p.sh's ``python3 train.py`` line of its non-aarch64 branch, as argv (redirect dropped)."""
    text = (PORT / "test" / "train_full_8p.sh").read_text()
    block = text[text.index("else\n   python3 train.py"):].split("&\nfi")[0]
    line = " ".join(part.strip().rstrip("\\") for part in block.splitlines()[1:])
    return shlex.split(line.split(">")[0])


def _flags(argv: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    key = None
    for arg in argv:
        if arg.startswith("--"):
            key = arg
            out[key] = []
        elif key is not None:
            out[key].append(arg)
    return out


def _production(**params: Any) -> Plan:
    return build_plan(load_recipe(YOLOR), {"profile": "production", **params}, run_id="golden")


def test_production_trains_with_the_scripts_own_flags_and_values_and_the_runs_epochs_and_batch() -> None:
    script = _flags(_script_train_line())
    ours = _flags(_production().stage("train").argv)
    # Every flag of the script's line, with its value, but the adaptations the golden test lists.
    adapted = {"--data", "--full"}
    assert {k: v for k, v in script.items() if k not in adapted} == \
        {k: v for k, v in ours.items() if k in script and k not in adapted}
    assert set(ours) - set(script) == {"--npu", "--project", "--exist-ok", "--workers"}
    assert script["--data"] == ["data/coco.yaml"] and ours["--data"] == ["/data/coco/coco.yaml"]
    # The script hard-codes --epochs 300 --batch-size 64; the run's params reach train.py.
    changed = _flags(_production(epochs=12, batch_size=32).stage("train").argv)
    assert changed["--epochs"] == ["12"] and changed["--batch-size"] == ["32"]


def test_production_env_is_env_npu_sh_and_nothing_is_run_through_the_script() -> None:
    exports = dict(re.findall(r"^export (\w+)=(\S*)", (PORT / "test" / "env_npu.sh").read_text(), re.M))
    plan = _production()
    assert {k: v.strip('"') for k, v in exports.items()} == {k: plan.stage("train").env[k] for k in exports}
    for stage in plan.stages:
        assert "bash" not in stage.argv and not any(a.endswith(".sh") for a in stage.argv), stage.name


def test_no_stage_writes_into_the_checkout_or_links_over_its_data(tmp_path: Path) -> None:
    """The script's ``ln -snf $data_path ./data/coco`` and train.py's default ``runs/train`` are gone: every
    output is under the run, at a path that does not move on a rerun (``--exist-ok``)."""
    plan = _production()
    train = plan.stage("train")
    assert Path(train.outputs["checkpoint"][0]).is_relative_to(plan.run_dir)
    flags = _flags(train.argv)
    assert flags["--project"] == [f"{plan.run_dir}/train/runs"] and "--exist-ok" in flags
    assert Path(_flags(plan.stage("test").argv)["--project"][0]).is_relative_to(plan.run_dir)


def test_the_test_stage_is_train_py_fulls_test_line() -> None:
    text = (PORT / "train.py").read_text()
    full = text[text.index('os.system(f"python3 test.py'):].split('2>&1')[0]
    script = _flags(shlex.split(full.split('"', 1)[1].replace("\\", " ").replace("{wdir}", "WEIGHTS")))
    ours = _flags(_production().stage("test").argv)
    same = {"--img", "--batch", "--conf", "--iou", "--cfg", "--name", "--device"}
    assert {k: script[k] for k in same} == {k: ours[k] for k in same}
    assert ours["--weights"] == _production().stage("train").outputs["checkpoint"]


def _smoke(tmp_path: Path, **params: Any) -> Plan:
    return build_plan(load_recipe(YOLOR), {"profile": "smoke", **params}, run_id="t1", runs_root=tmp_path)


def _run(plan: Plan, name: str, log=lambda line: None, **kwargs: Any) -> dict[str, Any]:
    return execute_stage(plan, plan.stage(name), log=log, log_format="yolor", **kwargs)


def test_the_smoke_profile_runs_the_same_files_with_the_same_flags() -> None:
    smoke, production = _smoke(Path("/tmp")), _production()
    for name in ("train", "test"):
        s, p = smoke.stage(name), production.stage(name)
        assert s.argv[1] == p.argv[1] and list(_flags(s.argv)) == list(_flags(p.argv)), name
        assert Path(s.cwd).resolve() == PORT.resolve()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.e2e
def test_the_ports_train_and_test_run_here_and_leave_the_checkout_as_it_was(tmp_path: Path) -> None:
    before = _files(PORT)
    plan = _smoke(tmp_path)
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    lines: list[str] = []
    result = _run(plan, "train", log=lines.append)
    assert result["ok"] and result["metrics"]["train_steps"] == 8  # 16 images / 4 per step x 2 epochs
    assert any(line.startswith("Epoch:[ 1][   3/   4][cpu][FPS:") for line in lines)  # the port's own line
    weights = Path(plan.variables["weights_dir"])
    assert sorted(p.name for p in weights.iterdir()) == ["epoch_000.pt", "last.pt", "last_000.pt", "last_001.pt"]
    assert result["metrics"]["ips_global_median"] > 0  # FPS over all cards, as the port prints it
    tested = _run(plan, "test")
    assert tested["ok"] and "bbox_map" in tested["result"]["scores"]
    assert _files(PORT) == before  # no runs/, no data/coco link, no test/output


@pytest.mark.e2e
def test_a_non_finite_loss_that_exits_0_fails_the_stage(tmp_path: Path) -> None:
    plan = _smoke(tmp_path)
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    hyp = yaml.safe_load((PORT / "data" / "hyp.scratch.1280.yaml").read_text())
    hyp_file = tmp_path / "hyp.nan.yaml"
    hyp_file.write_text(yaml.safe_dump({**hyp, "obj": float("nan")}))  # objectness gain NaN: the first loss is NaN
    stage = plan.stage("train")
    stage.argv[stage.argv.index("--hyp") + 1] = str(hyp_file)
    with pytest.raises(StageRefused, match=r"completion line|non-finite"):
        _run(plan, "train")
    assert "WARNING: non-finite loss, ending training" in (Path(stage.stage_dir) / "stage.log").read_text()
    result = yaml.safe_load((Path(stage.stage_dir) / "result.json").read_text())
    assert result["exit_code"] == 0  # what the tutorial's script would have reported as success


@pytest.mark.e2e
def test_a_killed_training_resumes_from_the_ports_last_pt(tmp_path: Path) -> None:
    plan = _smoke(tmp_path, epochs=3)
    _run(plan, "prepare_dataset")
    _run(plan, "validate_dataset")
    weights = Path(plan.variables["weights_dir"])
    state: dict[str, Any] = {}

    def log(line: str) -> None:
        if line.startswith("Epoch:[ 1][   0/") and "killed" not in state:  # last.pt of epoch 0 is written
            state["killed"] = True
            os.killpg(os.getpgid(state["proc"].proc.pid), signal.SIGKILL)

    with pytest.raises(StageFailed):
        _run(plan, "train", log=log, on_start=lambda proc: state.update(proc=proc), attempt=1)
    assert (weights / "last.pt").is_file()
    time.sleep(0.5)
    lines: list[str] = []
    result = _run(plan, "train", log=lines.append, attempt=2)
    assert result["ok"] and result["argv"][-2:] == ["--weights", str(weights / "last.pt")]
    assert any(f"from {weights}/last.pt" in line and line.startswith("Transferred") for line in lines)
    epochs = sorted({int(m.group(1)) for line in lines for m in [re.match(r"Epoch:\[\s*(\d+)\]", line)] if m})
    assert epochs == [1, 2]  # epoch 0 is not trained again
