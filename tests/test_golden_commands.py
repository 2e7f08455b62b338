"""Golden test: the production profile renders the tutorials' own commands, argv and env.

Each expectation is the shell text of the seed document (``../shared/seeds``), split with shlex. Where this
project must differ from a seed, the difference is written next to it and nowhere else.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from npuflow.kinds import kind
from npuflow.plan import build_plan
from npuflow.recipe import PROJECT_ROOT, list_recipes, load_recipe

NPU_FLAGS = {"FLAGS_npu_jit_compile": "0", "FLAGS_use_stride_kernel": "0"}
# Adapted everywhere paddle.distributed.launch runs on NPUs: the seeds rely on the paddle-npu image having
# PADDLE_XCCL_BACKEND=npu set; without it NPUs are not recognised (FACTS), so the launcher's env says it.
XCCL = {"PADDLE_XCCL_BACKEND": "npu"}

# Adapted in every Paddle stage (issue 20): outputs go under this run's folder, never the shared checkout's output/,
# output_inference/ or ACT's ./output/: ppdet's `-o save_dir= output_eval=` and `--output_dir`, PaddleSeg's
# `--save_dir`, the launcher's `--log_dir` and ACT's `--save_dir`. So no night overwrites a model another run's
# asset announced, and a retry finds its own checkpoints.
R = "{run_dir}"
# Adapted in every stage that runs on one card (infer, evaluate, benchmark): the card its pool slot claimed is the
# only one the runtime sees, so its "card 0" is that card (the seeds run these on an otherwise idle host).
ONE_CARD = {"ASCEND_RT_VISIBLE_DEVICES": "0"}
YOLOR_DIR = "/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/YOLOR"
# test/env_npu.sh's exports (tests/test_yolor_port.py reads them from the checkout).
ENV_NPU = {"ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "ASCEND_GLOBAL_EVENT_ENABLE": "0",
           "TASK_QUEUE_ENABLE": "1", "HCCL_WHITELIST_DISABLE": "1", "PTCOPY_ENABLE": "1",
           "DYNAMIC_OP": "ADD#MUL#DIV#EQ#MASKFill#ADDCDIV#ADDCMUL", "COMBINED_ENABLE": "1", "TRI_COMBINED_ENABLE": "1",
           "HCCL_CONNECT_TIMEOUT": "1800"}
SSD_DIR = "/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/SSD"
# The SSD port's test/env_npu.sh exports (HCCL_IF_IP, the node's address, is HCCL's own to find).
SSD_ENV_NPU = {"ASCEND_SLOG_PRINT_TO_STDOUT": "0", "ASCEND_GLOBAL_LOG_LEVEL": "3", "ASCEND_GLOBAL_EVENT_ENABLE": "0",
               "TASK_QUEUE_ENABLE": "1", "PTCOPY_ENABLE": "1", "COMBINED_ENABLE": "1", "DYNAMIC_OP": "ADD#MUL",
               "HCCL_WHITELIST_DISABLE": "1"}

GOLDEN = [
    # seed 000, section 3 (after `export FLAGS_npu_jit_compile=0; export FLAGS_use_stride_kernel=0`).
    ("ppyoloe_plus_crn_l_80e_coco", "train", "/opt/PaddleDetection", {**XCCL, **NPU_FLAGS},
     f"python -u -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 --log_dir {R}/train/log "
     f"tools/train.py --eval --config configs/ppyoloe/ppyoloe_plus_crn_l_80e_coco.yml --enable_ce True "
     f"-o save_dir={R}/train/output output_eval={R}/train"),
    # seed 000, section 4, in the same shell (so the exported FLAGS still apply); the best model is where
    # release_2_7_npu writes it for that save_dir (npuflow/toolkits/paddledetection.py).
    ("ppyoloe_plus_crn_l_80e_coco", "export", "/opt/PaddleDetection", NPU_FLAGS,
     f"python tools/export_model.py -c configs/ppyoloe/ppyoloe_plus_crn_l_80e_coco.yml "
     f"-o weights={R}/train/output/best_model.pdparams --output_dir {R}/export/model"),
    # seed 001, section 3.
    ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "train", "/opt/PaddleSeg", XCCL,
     f"python -u -m paddle.distributed.launch --devices 0,1,2,3 --log_dir {R}/train/log tools/train.py "
     f"--config configs/deeplabv3p/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k.yml --num_workers 8 "
     f"--save_dir {R}/train/output --log_iters 10 --device npu --do_eval --save_interval 1000 --seed 2048"),
    # seed 001, section 4.
    ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "export", "/opt/PaddleSeg", {},
     f"python tools/export.py --config configs/deeplabv3p/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k.yml "
     f"--model_path {R}/train/output/best_model/model.pdparams --save_dir {R}/export/model"),
    # seed 001, PaddleInference section. Adapted: the seed wgets cityscapes_demo.png into the checkout by hand; the
    # infer stage copies the first val frame of this run's dataset to its input (npuflow/kinds/infer.py).
    ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "infer", "/opt/PaddleSeg", ONE_CARD,
     f"python deploy/python/infer.py --config {R}/export/model/deploy.yaml "
     f"--image_path {R}/infer/input/demo.png --save_dir {R}/infer/output --device npu"),
    # seed 002, 3.3 multi-card training. Adapted: the seed trains on GPUs (`--gpus 0,1,2,3` with
    # CUDA_VISIBLE_DEVICES); on Ascend the launcher names the cards with --devices and CUDA is not involved.
    ("picodet_s_416_coco_npu_qat", "train", "/opt/PaddleDetection", XCCL,
     f"python -m paddle.distributed.launch --devices 0,1,2,3 --log_dir {R}/train/log tools/train.py "
     f"-c configs/picodet/picodet_s_416_coco_npu.yml --eval -o save_dir={R}/train/output output_eval={R}/train"),
    # seed 002, 3.4. Adapted: exports the checkpoint this run trained, not the seed's download URL.
    ("picodet_s_416_coco_npu_qat", "export", "/opt/PaddleDetection", {},
     f"python tools/export_model.py -c configs/picodet/picodet_s_416_coco_npu.yml "
     f"-o weights={R}/train/output/best_model.pdparams --output_dir {R}/export/model"),
    # seed 002, 3.5 multi-card QAT, run from deploy/auto_compression. Adapted: --devices for --gpus as in 3.3;
    # --config_path is this run's copy of configs/picodet_s_qat_dis.yaml with Global.model_dir = this run's export
    # and the reader's dataset_dir = the dataset (the two edits the seed asks for by hand); --devices npu because
    # run.py defaults to gpu.
    ("picodet_s_416_coco_npu_qat", "compress", "/opt/PaddleDetection/deploy/auto_compression", XCCL,
     f"python -m paddle.distributed.launch --devices 0,1,2,3 --log_dir {R}/compress/log run.py "
     f"--config_path={R}/compress/picodet_s_qat_dis.yaml --save_dir={R}/compress/model --devices npu"),
    # seed 002, 3.5 evaluation of the quantized model. Adapted: the config is this run's copy with model_dir
    # pointing at the INT8 output (the seed says to edit model_dir); --devices npu for eval.py's gpu default.
    ("picodet_s_416_coco_npu_qat", "eval_int8", "/opt/PaddleDetection/deploy/auto_compression", ONE_CARD,
     f"python eval.py --config_path={R}/eval_int8/picodet_s_qat_dis.yaml --devices npu"),
    # PaddleDetection deploy/auto_compression/README.md's multi-card form with the PP-YOLOE+-l config it ships,
    # on seed 000's eight cards and NPU flags; adapted as for seed 002 above.
    ("ppyoloe_plus_crn_l_80e_coco", "compress", "/opt/PaddleDetection/deploy/auto_compression", {**XCCL, **NPU_FLAGS},
     f"python -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 --log_dir {R}/compress/log run.py "
     f"--config_path={R}/compress/ppyoloe_plus_l_qat_dis.yaml --save_dir={R}/compress/model --devices npu"),
    # seed 003, training section (single node, 8 cards): the line test/train_full_8p.sh runs (its non-aarch64 branch;
    # tests/test_yolor_port.py reads it from the checkout), not the script, which links --data_path over the checkout's
    # data/coco, logs to test/output/ and drops the exit status. Adapted: --data is the dataset stage's coco.yaml;
    # --project/--exist-ok keep the outputs under this run at a fixed path; --npu 0 names a one-card run's card;
    # --workers the loaders; no --full (its test.py line is the test stage); env: test/env_npu.sh's exports.
    ("yolor_p6_coco", "train", YOLOR_DIR, ENV_NPU,
     "python train.py --cfg cfg/yolor_p6.cfg --data /data/coco/coco.yaml --addr 127.0.0.1 --weights '' "
     "--batch-size 64 --img 1280 1280 --local_rank 0 --device npu --device-num 8 --npu 0 --name yolor_p6_npu_8p_full "
     "--hyp hyp.scratch.1280.yaml --epochs 300 --project {run_dir}/train/runs --exist-ok --workers 8"),
    # train.py --full's test.py line. Adapted as for train, and --save-json (the script's data/coco.yaml turns it on).
    ("yolor_p6_coco", "test", YOLOR_DIR, {**ENV_NPU, **ONE_CARD},
     "python test.py --data /data/coco/coco.yaml --img 1280 --batch 32 --conf 0.001 --iou 0.65 --cfg cfg/yolor_p6.cfg "
     "--weights {run_dir}/train/runs/yolor_p6_npu_8p_full/weights/last.pt --name yolor_val --device npu --npu 0 "
     "--project {run_dir}/test --exist-ok --save-json"),
    # seed 004, training section: test/train_full_8p.sh -> tools/dist_train.sh's per-rank line (one process per
    # card, here under torchrun) with the script's --cfg-options and test/env_npu.sh's exports. Adapted: this run's
    # --work-dir (the script wipes the shared ./work_dirs/ssd300_coco_npu_8p) and its dataset as --cfg-options (the
    # script deletes <port>/data/coco to link --data_path there); tests/test_ssd_port.py holds each to the script.
    # dist_train.sh's `taskset -c` of each rank to its nproc/8 cores is npuflow.programs.cpu_share, which binds the
    # rank and runs tools/train.py in the same process (so the project follows the port on PYTHONPATH).
    ("ssd300_coco", "train", SSD_DIR,
     {"ASCEND_RT_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", **SSD_ENV_NPU, "PYTHONPATH": f"{SSD_DIR}:{PROJECT_ROOT}"},
     "python -m torch.distributed.run --nproc_per_node 8 --standalone -m npuflow.programs.cpu_share "
     "tools/train.py configs/ssd/ssd300_coco_npu_8p.py "
     "--launcher pytorch --work-dir {run_dir}/train/work_dir --cfg-options total_epochs=24 data.samples_per_gpu=8 "
     "data.train.dataset.ann_file=/data/coco/annotations/instances_train2017.json "
     "data.train.dataset.img_prefix=/data/coco/train2017/ "
     "data.val.ann_file=/data/coco/annotations/instances_val2017.json data.val.img_prefix=/data/coco/val2017/ "
     "data.test.ann_file=/data/coco/annotations/instances_val2017.json data.test.img_prefix=/data/coco/val2017/"),
]


@pytest.mark.parametrize(("dag_id", "stage", "cwd", "env", "command"), GOLDEN,
                         ids=[f"{g[0]}-{g[1]}" for g in GOLDEN])
def test_production_command_is_the_tutorials(dag_id: str, stage: str, cwd: str, env: dict, command: str) -> None:
    plan = build_plan(load_recipe(dag_id), {"profile": "production"}, run_id="golden")
    rendered = plan.stage(stage)
    assert rendered.argv == shlex.split(command.replace("{run_dir}", plan.run_dir))
    assert rendered.env == env
    assert rendered.cwd == cwd


def test_every_toolkit_stage_is_covered() -> None:
    """Every stage that runs a toolkit's own command is held to its tutorial here."""
    covered = {(g[0], g[1]) for g in GOLDEN}
    for dag_id in list_recipes():
        for name, stage in load_recipe(dag_id).stages.items():
            if kind(stage["kind"]).toolkit:
                assert (dag_id, name) in covered or (dag_id, name) in NOT_FROM_A_SEED, (dag_id, name)


# Toolkit stages whose command no seed prints: the PP-YOLOE+ INT8 evaluation (seed 000 has no QAT; the command is
# deploy/auto_compression's eval.py as for seed 002); DeepLabv3+'s compression (seed 001 has none: PaddleSeg's
# deploy/slim/act/run_seg.py) and the logits export it compresses (seed 001's export with --output_op none).
NOT_FROM_A_SEED = {("ppyoloe_plus_crn_l_80e_coco", "eval_int8"),
                   ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "compress"),
                   ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "export_act")}


def test_the_compression_config_points_at_this_runs_export_and_dataset(tmp_path, monkeypatch) -> None:
    """The per-run ACT config: the tutorial's file with model_dir = this run's export, the reader at the dataset."""
    import yaml

    from npuflow.kinds.base import DatasetResult, ModelResult
    from npuflow.kinds.compress import write_stage_config

    plan = build_plan(load_recipe("picodet_s_416_coco_npu_qat"), {"profile": "smoke"}, run_id="golden",
                      runs_root=tmp_path)
    stage = plan.stage("compress")
    model = ModelResult(model_dir="/runs/x/export/model", files={"model": "/runs/x/export/model/model.pdmodel",
                                                                "params": "/runs/x/export/model/model.pdiparams"},
                        precision="fp32", size_mb=1.0)
    written = write_stage_config(stage, model, DatasetResult(root="/data/coco", source="local", format="coco"))
    on_disk = yaml.safe_load(Path(stage.builtins["act_config"]).read_text())
    assert on_disk["Global"]["model_dir"] == "/runs/x/export/model" == written["Global"]["model_dir"]
    assert on_disk["Global"]["model_filename"] == "model.pdmodel"
    # the tutorial's configs/picodet_s_qat_dis.yaml with the profile's TrainConfig values (rendered text -> numbers)
    assert on_disk["TrainConfig"]["train_iter"] == 8 and on_disk["TrainConfig"]["learning_rate"]["T_max"] == 8
    assert on_disk["QuantAware"]["weight_bits"] == 8
    reader = Path(on_disk["Global"]["reader_config"]).read_text()
    assert "!COCODataSet" in reader and reader.count("dataset_dir: /data/coco") == 2  # tags kept, both datasets


def test_one_card_yolor_trains_one_rank_on_card_0() -> None:
    """train.py with --device-num 1 and --npu 0: one process on the run's card (test/train_performance_1p.sh's form)."""
    plan = build_plan(load_recipe("yolor_p6_coco"), {"device_count": 1}, run_id="golden")
    argv = plan.stage("train").argv
    assert argv[argv.index("--device-num") + 1] == "1" and argv[argv.index("--npu") + 1] == "0"
    assert argv[argv.index("--name") + 1] == "yolor_p6_npu_1p_full"

