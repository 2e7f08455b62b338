"""The toolkits at their pinned refs (npuflow/toolkits/): each Paddle production break of issue 20 held by a test that
asks or runs the toolkit's own code from the checkout ``npuflow toolkits sync`` put in place (shared/upstream here).

The end-to-end runs of the three Paddle smoke DAGs through these checkouts are in tests/test_e2e_smoke.py, the
resume of the real ppdet training after a killed rank in tests/test_training.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from npuflow.kinds import kind
from npuflow.plan import build_plan
from npuflow.recipe import PROJECT_ROOT, RecipeError, load_recipe, validate_recipe_data
from npuflow.toolkits import registry, toolkit
from npuflow.toolkits.checkout import checkout_dir, sync

PPYOLOE = "ppyoloe_plus_crn_l_80e_coco"
PICODET = "picodet_s_416_coco_npu_qat"
DEEPLAB = "deeplabv3p_resnet50_os8_cityscapes_1024x512_80k"
PADDLE_DAGS = (PPYOLOE, PICODET, DEEPLAB)
#: What the smoke profiles set for paddle 2.6.2 on this machine (the recipes' smoke env, documented there).
ZLIB = "/usr/lib/x86_64-linux-gnu/libz.so.1"
#: Toolkit stages whose script is the project's, not the checkout's, and why.
PROJECT_PROGRAMS = {
    (DEEPLAB, "compress"): "run_seg.py at npu_cann8.0 quantizes on the CPU for every --devices but gpu",
}
#: Toolkit stages whose smoke profile runs the project's stand-in (toolkits/) with the production argv, and why.
STAND_INS = {
    ("ssd300_coco", "train"): "the SSD port's training calls Ascend-only operators (torch_npu.npu_bounding_box_encode) "
                              "and gives DDP a card index, which a CPU module refuses (docs/architecture.md)",
}


def _plan(dag_id: str, profile: str, tmp_path: Path, **params):
    return build_plan(load_recipe(dag_id), {"profile": profile, **params}, run_id="r", runs_root=tmp_path)


def _toolkit_stages(dag_id: str) -> list[str]:
    return [n for n, s in load_recipe(dag_id).stages.items() if kind(s["kind"]).toolkit]


@pytest.fixture(scope="module", autouse=True)
def checkouts() -> None:
    """The set-up step, as ``make test`` runs it (idempotent)."""
    for tk in registry().values():
        for ref in tk.refs:
            sync(tk, ref, clone=False)


def test_each_recipe_names_its_toolkit_at_a_modelled_ref_and_the_checkout_is_there() -> None:
    for dag_id in PADDLE_DAGS:
        recipe = load_recipe(dag_id)
        assert recipe.toolkit is not None and recipe.toolkit_ref in recipe.toolkit.refs
        assert (checkout_dir(recipe.toolkit.name, recipe.toolkit_ref) / "tools").is_dir()


def test_picodet_on_release_2_6_is_refused_because_its_runtime_wants_a_gpu() -> None:
    """The break: PicoDet's recipe named release/2.6, whose runtime.yml sets use_gpu: true (check_gpu exits on an
    NPU build). The NPU branch's runtime and both detection configs are in the one checkout."""
    data = yaml.safe_load(load_recipe(PICODET).path.read_text())
    data["toolkit"]["ref"] = "release/2.6"
    with pytest.raises(RecipeError, match=r"toolkit.ref: PaddleDetection is modelled at \['release_2_7_npu'\]"):
        validate_recipe_data(data, "picodet.yaml")
    tree = checkout_dir("PaddleDetection", "release_2_7_npu")
    runtime = yaml.safe_load((tree / "configs/runtime.yml").read_text())
    assert runtime["use_npu"] is True and runtime["use_gpu"] is False
    for dag_id in (PPYOLOE, PICODET):
        recipe = load_recipe(dag_id)
        assert (tree / recipe.data["vars"]["config"]).is_file()
        assert (tree / "deploy/auto_compression" / recipe.data["vars"]["act_config_file"]).is_file()


def _ppdet_config(plan, stage: str) -> dict:
    """Ask PaddleDetection's own config loader what the stage's -c/-o make of save_dir and output_eval."""
    argv = plan.stage(stage).argv
    config = argv[argv.index("-c" if "-c" in argv else "--config") + 1]
    opts = argv[argv.index("-o") + 1:]
    opts = opts[:next((i for i, a in enumerate(opts) if a.startswith("-")), len(opts))]
    code = ("import cv2, json, sys\n"
            "from ppdet.core.workspace import load_config, merge_config\n"
            "from ppdet.utils.cli import ArgsParser\n"
            "cfg = load_config(sys.argv[1])\n"
            "merge_config(ArgsParser()._parse_opt(sys.argv[2:]))\n"
            "print(json.dumps({k: cfg.get(k) for k in ('save_dir', 'output_eval', 'weights', 'use_npu')}))\n")
    tree = checkout_dir("PaddleDetection", "release_2_7_npu")
    out = subprocess.run([sys.executable, "-c", code, config, *opts], cwd=tree, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tree), "LD_PRELOAD": ZLIB}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_id", [PPYOLOE, PICODET])
def test_ppdet_itself_resolves_the_production_save_dir_to_this_runs_folder(dag_id: str, tmp_path: Path) -> None:
    """The break: PP-YOLOE+'s config says save_dir: ./output/ppyoloe_plus_crn_l_80e_coco/pipeline and PicoDet's
    output; the plan waited for <config_name>/ subfolders ppdet never writes. Now every profile passes -o save_dir
    under the run, and ppdet's loader (not our reading of it) says that is where the checkpoints go."""
    plan = _plan(dag_id, "production", tmp_path)
    resolved = _ppdet_config(plan, "train")
    assert resolved["save_dir"] == plan.variables["save_dir"] == str(tmp_path / dag_id / "r/train/output")
    assert resolved["output_eval"] == str(tmp_path / dag_id / "r/train")
    assert resolved["use_npu"] is True  # production trains on the cards the runtime names
    train = plan.stage("train")
    assert train.outputs["best_model"] == [f"{resolved['save_dir']}/best_model.pdparams"]
    assert train.resume["checkpoints"] == f"{resolved['save_dir']}/[0-9]*.pdparams"
    assert train.resume["argv"] == ["-r", "{checkpoint_stem}"]


def test_the_layout_is_what_the_real_training_wrote(tmp_path: Path) -> None:
    """Run ppdet's tools/train.py (PicoDet smoke, 2 epochs): its files match the toolkit module's layout, which
    production uses unchanged, and ppdet's own resume reads the newest one."""
    from npuflow.execute import execute_stage
    from npuflow.resume import find_checkpoint

    recipe = load_recipe(PICODET)
    plan = _plan(PICODET, "smoke", tmp_path, epochs=2)
    for name in ("prepare_dataset", "validate_dataset", "train"):
        execute_stage(plan, plan.stage(name), log=lambda _: None, log_format=recipe.log_format)
    save_dir = Path(plan.variables["save_dir"])
    # snapshot_epoch=1: epoch 0 is 0.pdparams, the last epoch model_final.pdparams (ppdet's Checkpointer)
    assert {p.name for p in save_dir.glob("[0-9]*.pdparams")} == {"0.pdparams"}
    assert (save_dir / "model_final.pdparams").is_file()
    assert (save_dir / "best_model.pdparams").is_file() and (save_dir / "best_model/model.pdparams").is_file()
    newest, _, _ = find_checkpoint(plan.stage("train").resume)
    assert newest is not None and newest.path == save_dir / "0.pdparams"
    assert newest.path.with_suffix(".pdopt").is_file()
    production = _plan(PICODET, "production", tmp_path)
    for p in (plan, production):  # the same layout, relative to the run
        rel = Path(p.stage("train").resume["checkpoints"]).relative_to(p.run_dir)
        assert str(rel) == "train/output/[0-9]*.pdparams"


@pytest.mark.parametrize("dag_id", PADDLE_DAGS)
def test_every_production_output_is_under_this_runs_folder(dag_id: str, tmp_path: Path) -> None:
    """The break: ACT's --save_dir=./output/, output/ and output_inference/ in the shared checkout were overwritten
    every night under the consumers of the assets that announced them."""
    plan = _plan(dag_id, "production", tmp_path)
    run_dir = Path(plan.run_dir)
    for name in _toolkit_stages(dag_id):
        stage = plan.stage(name)
        for paths in stage.outputs.values():
            for path in paths:
                assert (Path(stage.cwd) / path).is_relative_to(run_dir), (name, path)
        argv = stage.argv
        for i, arg in enumerate(argv):
            written = None
            if arg in ("--save_dir", "--output_dir", "--log_dir"):
                written = argv[i + 1]
            elif arg.startswith(("--save_dir=", "save_dir=", "output_eval=")):
                written = arg.split("=", 1)[1]
            if written is not None:
                assert (Path(stage.cwd) / written).is_relative_to(run_dir), (name, arg, written)


@pytest.mark.parametrize("dag_id", PADDLE_DAGS)
def test_smoke_toolkit_stages_run_the_pinned_checkout_with_every_production_flag(dag_id: str, tmp_path: Path) -> None:
    recipe = load_recipe(dag_id)
    smoke, production = _plan(dag_id, "smoke", tmp_path), _plan(dag_id, "production", tmp_path)
    tree = checkout_dir(recipe.toolkit.name, recipe.toolkit_ref)
    for name in _toolkit_stages(dag_id):
        s, p = smoke.stage(name), production.stage(name)
        assert Path(s.cwd).is_relative_to(tree), (name, s.cwd)
        assert Path(s.cwd).relative_to(tree) == Path(p.cwd).relative_to(recipe.data["vars"]["toolkit_dir"])
        scripts = [a for a in s.argv if a.endswith(".py")]
        if (dag_id, name) in PROJECT_PROGRAMS:
            assert all(Path(a).is_relative_to(PROJECT_ROOT / "npuflow") for a in scripts)
        else:
            assert scripts and all((Path(s.cwd) / a).resolve().is_relative_to(tree.resolve()) for a in scripts)
            assert [a for a in p.argv if a.endswith(".py")] == scripts  # the same script, relative to the cwd
        # The script's own flags and -o keys; the launcher's differ with the card count (one CPU process runs
        # the single-card form), which is a value.
        prod, mine = (argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):] for argv in (p.argv, s.argv))
        flags = {a.split("=")[0] for a in prod if a.startswith("-")}
        keys = {a.split("=")[0] for a in prod if "=" in a and not a.startswith("-")}
        assert flags <= {a.split("=")[0] for a in mine}, (name, flags)
        assert keys <= {a.split("=")[0] for a in mine}, (name, keys)


@pytest.mark.parametrize("dag_id", PADDLE_DAGS)
def test_the_rehearsal_is_production_with_other_values_and_one_card(dag_id: str, tmp_path: Path) -> None:
    """A platform team proves a new checkout, image or recipe on one card with tiny data before it commits eight
    cards for days: same stages, kinds, edges, scripts, working folders, environment names and flags."""
    production, rehearsal = _plan(dag_id, "production", tmp_path), _plan(dag_id, "rehearsal", tmp_path)
    assert rehearsal.device["kind"] == production.device["kind"] == "npu" and rehearsal.device["count"] == 1
    shape = [(s.name, s.kind, s.needs) for s in production.stages]
    assert [(s.name, s.kind, s.needs) for s in rehearsal.stages] == shape
    for p, r in zip(production.stages, rehearsal.stages, strict=True):
        assert (p.cwd, sorted(p.env)) == (r.cwd, sorted(r.env)), p.name
        assert [a for a in p.argv if a.endswith(".py")] == [a for a in r.argv if a.endswith(".py")], p.name
        flags = lambda argv: {a.split("=")[0] for a in argv if a.startswith("-")}  # noqa: E731
        assert flags(p.argv) <= flags(r.argv), (p.name, flags(p.argv) - flags(r.argv))
        assert p.argv[0] == r.argv[0]  # the host's Python, not this machine's


def test_segmentation_compression_config_exists_at_the_ref_and_keeps_its_bases(tmp_path: Path) -> None:
    """The break: configs/datasets/cityscapes_1024x512_scale1.0.yml exists in no PaddleSeg branch. The dataset
    config is now the tutorial's own training config, and its per-run copy still inherits its _base_."""
    from npuflow.kinds.base import DatasetResult, ModelResult
    from npuflow.kinds.compress import write_stage_config

    plan = _plan(DEEPLAB, "production", tmp_path, toolkit_dir=str(checkout_dir("PaddleSeg", "npu_cann8.0")))
    stage = plan.stage("compress")
    assert (Path(stage.cwd) / stage.settings["reader_config"]).is_file()
    model = ModelResult(model_dir="/m", files={"model": "/m/model.pdmodel", "params": "/m/model.pdiparams"},
                        precision="fp32", size_mb=1.0)
    write_stage_config(stage, model, DatasetResult(root="/data/cityscapes", source="local", format="cityscapes"))
    reader = yaml.safe_load(Path(stage.builtins["act_reader"]).read_text())
    bases = reader["_base_"] if isinstance(reader["_base_"], list) else [reader["_base_"]]
    assert bases and all(Path(b).is_absolute() and Path(b).is_file() for b in bases)
    assert reader["train_dataset"]["dataset_root"] == reader["val_dataset"]["dataset_root"] == "/data/cityscapes"


def test_segmentation_compression_refuses_a_device_paddle_does_not_have(tmp_path: Path) -> None:
    """The break: run_seg.py treats every device but gpu as the CPU, so --devices npu would quantize on the host.
    The project's program sets the device it is given and refuses (78, no retry) one this Paddle lacks."""
    tree = checkout_dir("PaddleSeg", "npu_cann8.0")
    out = subprocess.run([sys.executable, str(PROJECT_ROOT / "npuflow/programs/paddleseg_act.py"), "--config_path",
                          "x.yml", "--act_config_path", "y.yml", "--save_dir", str(tmp_path), "--devices", "npu"],
                         cwd=tree, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(tree), "LD_PRELOAD": ZLIB})
    assert out.returncode == 78, out.stderr[-2000:]
    assert "error: --devices npu: this Paddle has no npu device" in out.stderr
    assert toolkit("PaddleSeg").variables["config_base_key"] == "_base_"


@pytest.mark.parametrize("dag_id", [PICODET, DEEPLAB])
def test_a_stage_on_one_card_is_given_the_card_it_claimed(dag_id: str, tmp_path: Path) -> None:
    """The break: benchmark, eval_int8 and infer ran --device npu on card 0 with no pool claim, and in a container
    they got no NPU device at all. Each claims one slot (tests/test_dags.py) and gets the layout's first card."""
    plan = _plan(dag_id, "production", tmp_path, runner="docker", devices="4,5,6,7")
    for name in [s.name for s in plan.stages if kind(s.kind).uses_card]:
        stage = plan.stage(name)
        assert stage.env["ASCEND_RT_VISIBLE_DEVICES"] == "4", name
        assert [d for d in stage.container["devices"] if "davinci" in d and "manager" not in d] == \
            ["/dev/davinci4:/dev/davinci4:rwm"], name
        assert stage.container["env"]["ASCEND_VISIBLE_DEVICES"] == "4"
    train = plan.stage("train")
    assert [d for d in train.container["devices"] if d.startswith("/dev/davinci") and "manager" not in d] == \
        [f"/dev/davinci{i}:/dev/davinci{i}:rwm" for i in (4, 5, 6, 7)]
