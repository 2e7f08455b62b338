"""Golden test: the production profile renders the tutorials' own commands, argv and env.

Each expectation is the shell text of the seed document (``../shared/seeds``), split with shlex. Where this
project must differ from a seed, the difference is written next to it and nowhere else.
"""

from __future__ import annotations

import shlex

import pytest

from npuflow.plan import build_plan
from npuflow.recipe import load_recipe

NPU_FLAGS = {"FLAGS_npu_jit_compile": "0", "FLAGS_use_stride_kernel": "0"}
# Adapted everywhere paddle.distributed.launch runs on NPUs: the seeds rely on the paddle-npu image having
# PADDLE_XCCL_BACKEND=npu set; without it NPUs are not recognised (FACTS), so the launcher's env says it.
XCCL = {"PADDLE_XCCL_BACKEND": "npu"}

GOLDEN = [
    # seed 000, section 3 (after `export FLAGS_npu_jit_compile=0; export FLAGS_use_stride_kernel=0`).
    ("ppyoloe_plus_crn_l_80e_coco", "train", "/opt/PaddleDetection", {**XCCL, **NPU_FLAGS},
     "python -u -m paddle.distributed.launch --devices 0,1,2,3,4,5,6,7 "
     "tools/train.py --eval --config configs/ppyoloe/ppyoloe_plus_crn_l_80e_coco.yml --enable_ce True"),
    # seed 000, section 4, in the same shell (so the exported FLAGS still apply).
    ("ppyoloe_plus_crn_l_80e_coco", "export", "/opt/PaddleDetection", NPU_FLAGS,
     "python tools/export_model.py -c configs/ppyoloe/ppyoloe_plus_crn_l_80e_coco.yml "
     "-o weights=output/ppyoloe_plus_crn_l_80e_coco/pipeline/best_model/model.pdparams"),
    # seed 001, section 3.
    ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "train", "/opt/PaddleSeg", XCCL,
     "python -u -m paddle.distributed.launch --devices 0,1,2,3 tools/train.py "
     "--config configs/deeplabv3p/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k.yml --num_workers 8 "
     "--save_dir output/deeplabv3p_resnet50 --log_iters 10 --device npu --do_eval --save_interval 1000 --seed 2048"),
    # seed 001, section 4.
    ("deeplabv3p_resnet50_os8_cityscapes_1024x512_80k", "export", "/opt/PaddleSeg", {},
     "python tools/export.py --config configs/deeplabv3p/deeplabv3p_resnet50_os8_cityscapes_1024x512_80k.yml "
     "--model_path output/deeplabv3p_resnet50/best_model/model.pdparams "
     "--save_dir output/deeplabv3p_resnet50_inference_model"),
    # seed 002, 3.3 multi-card training. Adapted: the seed trains on GPUs (`--gpus 0,1,2,3` with
    # CUDA_VISIBLE_DEVICES); on Ascend the launcher names the cards with --devices and CUDA is not involved.
    ("picodet_s_416_coco_npu_qat", "train", "/opt/PaddleDetection", XCCL,
     "python -m paddle.distributed.launch --devices 0,1,2,3 tools/train.py "
     "-c configs/picodet/picodet_s_416_coco_npu.yml --eval"),
    # seed 002, 3.4. Adapted: exports the checkpoint this run trained, not the seed's download URL.
    ("picodet_s_416_coco_npu_qat", "export", "/opt/PaddleDetection", {},
     "python tools/export_model.py -c configs/picodet/picodet_s_416_coco_npu.yml "
     "-o weights=output/picodet_s_416_coco_npu/best_model.pdparams"),
    # seed 003, training section (single node, 8 cards).
    ("yolor_p6_coco", "train", "/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/YOLOR", {},
     "bash ./test/train_full_8p.sh --data_path=/data/coco"),
    # seed 004, training section; --data_path is the seed's data/coco inside the port's folder.
    ("ssd300_coco", "train", "/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/SSD", {},
     "bash ./test/train_full_8p.sh --data_path=/opt/ModelZoo-PyTorch/PyTorch/contrib/cv/detection/SSD/data/coco"),
]


@pytest.mark.parametrize(("dag_id", "stage", "cwd", "env", "command"), GOLDEN,
                         ids=[f"{g[0]}-{g[1]}" for g in GOLDEN])
def test_production_command_is_the_tutorials(dag_id: str, stage: str, cwd: str, env: dict, command: str) -> None:
    plan = build_plan(load_recipe(dag_id), {"profile": "production"}, run_id="golden")
    rendered = plan.stage(stage)
    assert rendered.argv == shlex.split(command)
    assert rendered.env == env
    assert rendered.cwd == cwd


def test_every_tutorial_train_and_export_stage_is_covered() -> None:
    covered = {(g[0], g[1]) for g in GOLDEN}
    for dag_id in {g[0] for g in GOLDEN}:
        for stage in load_recipe(dag_id).stages.values():
            if stage["kind"] in ("train", "export"):
                assert (dag_id, stage["kind"]) in covered


def test_one_card_count_picks_the_one_card_script() -> None:
    plan = build_plan(load_recipe("yolor_p6_coco"), {"device_count": 1}, run_id="golden")
    assert plan.stage("train").argv == shlex.split("bash ./test/train_full_1p.sh --data_path=/data/coco")
