"""The ModelZoo SSD port (issue 21, second half): each production break of the tutorial's script held by a test on
the port's own files at the pinned commit.

The script (test/train_full_8p.sh) is not run: production starts what it starts, tools/dist_train.sh's per-rank
``python tools/train.py <config> --launcher pytorch <script's --cfg-options>``, one rank per card under torchrun.
The smoke profile runs the same argv on the stand-in tools/train.py (toolkits/ssd); its training, resume after a
killed rank and crash handling are in tests/test_training.py, the whole DAG in tests/test_e2e_smoke.py.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from npuflow.kinds.train import _script_fps
from npuflow.logparse import calc_fps
from npuflow.plan import Plan, PlanError, build_plan
from npuflow.recipe import load_recipe
from npuflow.toolkits import toolkit
from npuflow.toolkits.checkout import checkout_dir, sync

SSD = "ssd300_coco"
PORT = checkout_dir("ModelZoo-PyTorch", "master") / "PyTorch/contrib/cv/detection/SSD"


@pytest.fixture(scope="module", autouse=True)
def checkout() -> None:
    sync(toolkit("ModelZoo-PyTorch"), "master", clone=False)


def _script() -> str:
    return (PORT / "test" / "train_full_8p.sh").read_text()


def _script_launch_line() -> list[str]:
    """The script's ``PORT=29500 tools/dist_train.sh <config> <cards> --cfg-options ...`` line, as argv."""
    line = next(ln for ln in _script().splitlines() if "tools/dist_train.sh" in ln)
    return shlex.split(line.split(">")[0])


def _script_default(name: str) -> str:
    return re.search(rf"^{name}=(\S+)", _script(), re.M).group(1)


def _production(**params: Any) -> Plan:
    return build_plan(load_recipe(SSD), {"profile": "production", **params}, run_id="golden")


def _entry(argv: list[str]) -> list[str]:
    """The argv from tools/train.py on (what follows the launcher)."""
    return argv[argv.index("tools/train.py"):]


def _cfg_options(argv: list[str]) -> dict[str, str]:
    values = argv[argv.index("--cfg-options") + 1:]
    return dict(v.split("=", 1) for v in values if "=" in v)


def test_production_starts_what_the_8p_script_starts_one_rank_per_card() -> None:
    env_line, script, config, cards, *rest = _script_launch_line()
    assert (env_line, script) == ("PORT=29500", "tools/dist_train.sh")
    # dist_train.sh: one `python tools/train.py $CONFIG --launcher pytorch ${@:3}` per rank, RANK/WORLD_SIZE set.
    dist = (PORT / "tools" / "dist_train.sh").read_text()
    assert re.search(r'python \$\(dirname "\$0"\)/train.py \\\s+\$CONFIG \\\s+--launcher pytorch \$\{@:3\}', dist)
    train = _production().stage("train")
    argv = train.argv
    assert argv[argv.index("--nproc_per_node") + 1] == cards == "8"
    assert _entry(argv)[:4] == ["tools/train.py", config, "--launcher", "pytorch"]
    assert train.cwd == "/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/SSD"
    # The script's --cfg-options, at its default values (train_epochs=24, batch_size=8).
    script_options = dict(o.split("=", 1) for o in rest[1:])
    assert rest[0] == "--cfg-options" and set(script_options) == {"total_epochs", "data.samples_per_gpu"}
    ours = _cfg_options(argv)
    assert ours["total_epochs"] == _script_default("train_epochs") == "24"
    assert ours["data.samples_per_gpu"] == _script_default("batch_size") == "8"


def test_one_card_trains_the_1p_scripts_config_and_environment() -> None:
    """test/train_full_1p.sh: ``python3 ./tools/train.py configs/ssd/ssd300_coco_npu.py --cfg-options
    total_epochs= data.samples_per_gpu= --gpu-ids <card>`` (no launcher) after sourcing env_npu.sh and ``export
    TASK_QUEUE_ENABLE=0``; that config is the 8p one's with the learning rate divided by 8 (one card's batch
    instead of eight's)."""
    script = (PORT / "test" / "train_full_1p.sh").read_text()
    line = shlex.split(next(ln for ln in script.splitlines() if "tools/train.py" in ln).split(">")[0])
    config = line[2]
    assert "export TASK_QUEUE_ENABLE=0" in script
    assert re.search(r"lr=2e-3/8\b", (PORT / config).read_text())
    train = _production(profile="production_1p", devices="5").stage("train")
    argv = train.argv
    assert argv[:3] == ["python", "tools/train.py", config] and line[:2] == ["python3", "./tools/train.py"]
    # The script's flags, and the run's own work dir; the card is the stage's (the script's --device_id).
    assert {a for a in argv if a.startswith("--")} == {a for a in line if a.startswith("--")} | {"--work-dir"}
    assert argv[argv.index("--gpu-ids") + 1] == "5" and line[line.index("--gpu-ids") + 1] == "${device_id}"
    assert train.env["TASK_QUEUE_ENABLE"] == "0" and "ASCEND_RT_VISIBLE_DEVICES" not in train.env
    ours = _cfg_options(argv)
    assert ours["total_epochs"] == re.search(r"^train_epochs=(\S+)", script, re.M)[1]
    assert ours["data.samples_per_gpu"] == re.search(r"^batch_size=(\S+)", script, re.M)[1]


def test_the_runs_epochs_and_batch_size_reach_the_port() -> None:
    ours = _cfg_options(_production(epochs=12, batch_size=4).stage("train").argv)
    assert ours["total_epochs"] == "12" and ours["data.samples_per_gpu"] == "4"
    # The option keys name what the port's config has (mmdet 2.6: total_epochs; train is a RepeatDataset).
    schedule = (PORT / "configs/_base_/schedules/schedule_2x.py").read_text()
    config = (PORT / "configs/ssd/ssd300_coco.py").read_text()
    assert re.search(r"^total_epochs = 24$", schedule, re.M)
    assert "type='RepeatDataset'" in config and "samples_per_gpu=8" in config


def test_production_env_is_env_npu_sh_and_dist_train_sh() -> None:
    exports = dict(re.findall(r"^export (\w+)=(\S*)", (PORT / "test" / "env_npu.sh").read_text(), re.M))
    exports.pop("HCCL_IF_IP")  # $(hostname -I ...): the node's own address, computed on the node by HCCL
    train = _production().stage("train")
    assert {k: v.strip('"') for k, v in exports.items()} == {k: train.env[k] for k in exports}
    # dist_train.sh: export PYTHONPATH="$(dirname $0)/..":$PYTHONPATH (the vendored mmdet), first.
    assert train.env["PYTHONPATH"].split(":")[0] == train.cwd


def test_each_rank_runs_on_its_share_of_the_cores_as_dist_train_sh_tasksets_it() -> None:
    """dist_train.sh: KERNEL_NUM=$(($(nproc)/GPUS)); rank r under ``taskset -c r*K-(r*K+K-1)``."""
    dist = (PORT / "tools" / "dist_train.sh").read_text()
    assert "KERNEL_NUM=$(($(nproc)/GPUS))" in dist and "PID_START=$((KERNEL_NUM*(RANK_ID%GPUS)))" in dist
    assert "nohup taskset -c $PID_START-$PID_END" in dist
    argv = _production().stage("train").argv
    assert argv[argv.index("tools/train.py") - 2:argv.index("tools/train.py")] == ["-m", "npuflow.programs.cpu_share"]


def test_nothing_runs_the_script_that_deletes_the_dataset_and_the_shared_work_dir() -> None:
    """The script runs ``rm -rf <port>/data/coco`` (then links --data_path there) and ``rm -rf
    ./work_dirs/ssd300_coco_npu_8p/``, logs to test/output and ends with a bare ``wait`` (exit status 0 whatever
    the ranks did). No stage runs it, and no path a stage is given lies in the checkout's data/ or work_dirs/."""
    text = _script()
    assert "rm -rf ${default_data_path}/coco" in text and "rm -rf ./work_dirs/ssd300_coco_npu_8p/" in text
    assert re.search(r"&\n\nwait\n", text) and "> ${test_path_dir}/output/" in text
    for params in ({}, {"device_count": 1}, {"dataset_root": "/mnt/coco"}):
        plan = _production(**params)
        port = Path(plan.stage("train").cwd)
        for stage in plan.stages:
            assert "bash" not in stage.argv and not any(a.endswith(".sh") for a in stage.argv), stage.name
            for arg in stage.argv:
                for path in re.findall(r"(/[^\s=,]+)", arg):  # every absolute path in the argument
                    for owned in ("data", "work_dirs"):
                        assert not Path(path).resolve().is_relative_to(port / owned), (stage.name, arg)


def test_outputs_are_this_runs_and_found_where_the_port_writes_them() -> None:
    """tools/train.py: ``cfg.work_dir = args.work_dir`` (CLI first); mmcv's runner saves epoch_N.pth and latest.pth
    there and its TextLoggerHook <timestamp>.log.json; the stage reads them from this run's folder."""
    source = (PORT / "tools" / "train.py").read_text()
    assert "if args.work_dir is not None:" in source and "cfg.work_dir = args.work_dir" in source
    assert "cfg.resume_from = args.resume_from" in source  # the retry's --resume-from
    plan = _production()
    train = plan.stage("train")
    work_dir = train.argv[train.argv.index("--work-dir") + 1]
    assert work_dir == f"{plan.run_dir}/train/work_dir"
    assert train.outputs["checkpoint"] == [f"{work_dir}/latest.pth"]
    assert train.metrics_file == f"{work_dir}/*.log.json"
    assert train.resume is not None and train.resume["checkpoints"] == f"{work_dir}/epoch_*.pth"
    assert train.resume["argv"] == ["--resume-from", "{checkpoint}"]


def test_the_smoke_profile_runs_the_production_argv_with_other_values() -> None:
    prod, smoke = _production().stage("train"), build_plan(
        load_recipe(SSD), {"profile": "smoke"}, run_id="golden").stage("train")
    assert [a.split("=", 1)[0] for a in _entry(prod.argv) if a != "configs/ssd/ssd300_coco_npu_8p.py"] == \
        [a.split("=", 1)[0] for a in _entry(smoke.argv) if a not in ("configs/ssd/ssdlite_smoke.py", "--seed", "0")]


def test_a_param_the_recipe_does_not_use_is_refused_not_ignored() -> None:
    with pytest.raises(PlanError, match="iters"):
        _production(iters=10)


def _log_json(path: Path, epochs: int, iters: int, interval: int, times: tuple[float, ...]) -> Path:
    """An MMDetection 2.x log.json as the port's TextLoggerHook writes it: a metadata line, train lines every
    ``interval`` iterations (``iter`` counts within the epoch), a val line after each epoch."""
    lines = [json.dumps({"env_info": "sys.platform: linux", "seed": None})]
    for epoch in range(1, epochs + 1):
        for n, it in enumerate(range(interval, iters + 1, interval)):
            lines.append(json.dumps({"mode": "train", "epoch": epoch, "iter": it, "lr": 0.002,
                                     "time": times[n % len(times)], "data_time": 0.01, "loss": 3.0}))
        lines.append(json.dumps({"mode": "val", "epoch": epoch, "iter": iters, "bbox_mAP": 0.1}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_fps_is_the_ports_calc_fps_py_run_on_the_log(tmp_path: Path) -> None:
    """The stage runs the checkout's calc_fps.py rather than re-deriving it: the mean of per-line images/s past
    iteration 50 of each epoch (8 cards x 8 images at 0.5 s and 1.0 s: (128 + 64) / 2 = 96), not images over the
    mean step time (64 / 0.75 = 85.3)."""
    script = PORT / "calc_fps.py"
    log = _log_json(tmp_path / "20261207_010203.log.json", epochs=2, iters=210, interval=10, times=(0.5, 1.0))
    fps, source = _script_fps(str(script), str(tmp_path / "*.log.json"), 8, 8)
    assert fps == pytest.approx(96.0) and source == f"calc_fps.py {log.name} 8 8"
    assert calc_fps(0.75, 8, 8) == pytest.approx(85.33, abs=0.01)


def test_a_log_calc_fps_py_cannot_read_falls_back_and_says_why(tmp_path: Path) -> None:
    """calc_fps.py divides by zero when no epoch logs past iteration 50 (the smoke profile's two-step epochs)."""
    _log_json(tmp_path / "20261207_010203.log.json", epochs=2, iters=2, interval=1, times=(0.5,))
    fps, why = _script_fps(str(PORT / "calc_fps.py"), str(tmp_path / "*.log.json"), 2, 4)
    assert fps is None and "ZeroDivisionError" in why
    fps, why = _script_fps(str(tmp_path / "calc_fps.py"), str(tmp_path / "*.log.json"), 2, 4)
    assert fps is None and "is not there" in why


def _has(cfg: Any, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("profile", ["production", "production_1p", "smoke"])
def test_every_cfg_option_names_a_key_the_config_has_when_the_ports_own_loader_reads_it(profile: str) -> None:
    """mmcv's ``Config.merge_from_dict`` adds a key the config lacks instead of refusing it, so a misspelt or
    wrong-version key (``runner.max_epochs`` is MMDetection 2.7+; the port is 2.6.0) trains with the default
    silently. Each key the recipe passes must name one the config has, loaded by the port's loader."""
    from mmcv import Config, DictAction

    assert not _has(Config.fromfile(str(PORT / "configs/ssd/ssd300_coco_npu_8p.py"))._cfg_dict.to_dict(),
                    "runner.max_epochs")
    train = build_plan(load_recipe(SSD), {"profile": profile, "epochs": 3}, run_id="golden").stage("train")
    config_path = Path(train.argv[train.argv.index("tools/train.py") + 1])
    root = PORT if profile.startswith("production") else Path(train.cwd)
    config = Config.fromfile(str(root / config_path))
    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)  # as the port's tools/train.py parses them
    options = parser.parse_known_args(train.argv)[0].cfg_options
    missing = [key for key in options if not _has(config._cfg_dict.to_dict(), key)]
    assert not missing, f"{config_path}: no such key {missing}"
    config.merge_from_dict(options)
    assert config.total_epochs == 3
    assert config.data.train.dataset.ann_file.endswith("/annotations/instances_train2017.json")


def test_production_exports_the_ports_own_detector_through_its_adapter() -> None:
    """Export and QAT in production rebuild the port's detector (npuflow/torchdet/mmdet_ssd.py), not the stand-in's:
    the smoke profile alone names the stand-in's adapter."""
    production = _production()
    smoke = build_plan(load_recipe(SSD), {"profile": "smoke"}, run_id="golden")
    for name in ("export", "compress"):
        argv = production.stage(name).argv
        assert argv[argv.index("--adapter") + 1] == "npuflow.torchdet.mmdet_ssd"
        assert production.stage(name).cwd.endswith("PyTorch/contrib/cv/detection/SSD")
        assert smoke.stage(name).argv[smoke.stage(name).argv.index("--adapter") + 1] == "npuflow_adapter"


def test_the_adapter_refuses_a_checkpoint_the_port_did_not_write_and_other_categories(tmp_path: Path) -> None:
    import torch

    from npuflow.torchdet import mmdet_ssd
    from npuflow.torchdet.adapter import AdapterError

    stand_in = tmp_path / "epoch_1.pth"
    torch.save({"state_dict": {}, "meta": {"epoch": 1}}, stand_in)
    with pytest.raises(AdapterError, match=r"not a checkpoint that the SSD port's tools/train\.py writes"):
        mmdet_ssd.load(str(stand_in))
    ann = tmp_path / "instances_val2017.json"
    ann.write_text(json.dumps({"categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                                              {"id": 18, "name": "dog"}]}))
    assert mmdet_ssd.categories(ann, ["person", "car", "dog"]) == [1, 3, 18]
    assert mmdet_ssd.categories(ann, ["car"]) == [3]  # the port's get_cat_ids(cat_names=CLASSES): named ones only
    with pytest.raises(AdapterError, match="names 1 of the checkpoint's 2 classes"):
        mmdet_ssd.categories(ann, ["car", "bicycle"])
