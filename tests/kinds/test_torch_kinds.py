"""The PyTorch kinds (onnx_export, qat) on real child processes, and ONNX op counting without onnx.

As in test_compress: the stage is planned from a real recipe, its upstream results are put in the run
directory, and the command is swapped for a small real program that writes what the real one would.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from npuflow.errors import StageRefused
from npuflow.execute import execute_stage
from npuflow.kinds.base import DatasetResult, TrainResult
from npuflow.model_ops import op_types, quantize_ops
from npuflow.plan import build_plan
from npuflow.recipe import load_recipe, load_recipe_file
from npuflow.rundir import write_stage_result

YOLOR = "yolor_p6_coco"

# Writes <out> as an ONNX graph, with QuantizeLinear/DequantizeLinear nodes or without, and the summary beside it.
WRITE_ONNX = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from onnx import TensorProto, helper, save
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [0])
    if sys.argv[-1] == "quantized":
        nodes = [helper.make_node("QuantizeLinear", ["images", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    else:
        nodes = [helper.make_node("Relu", ["images"], ["y"])]
    save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, zero])), str(out))
    out.with_name("qat.json").write_text(json.dumps({"first_loss": 1.0, "last_loss": 0.5, "epochs": 2,
                                                     "world_size": 2}))
""")


def plan_with_upstreams(tmp_path: Path, recipe=None):
    plan = build_plan(recipe or load_recipe(YOLOR), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)
    train, prepare = plan.stage("train"), plan.stage("prepare_dataset")
    checkpoint = Path(train.outputs["checkpoint"][0])
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"ckpt")
    write_stage_result(train.stage_dir, {"ok": True, "kind": "train", "result": TrainResult(
        metrics={}, outputs={"checkpoint": str(checkpoint)}).to_dict()})
    Path(prepare.provides["root"]).mkdir(parents=True)
    Path(prepare.stage_dir).mkdir(parents=True, exist_ok=True)
    (Path(prepare.stage_dir) / "dataset.json").write_text("{}")
    write_stage_result(prepare.stage_dir, {"ok": True, "kind": "prepare_dataset", "result": DatasetResult(
        root=prepare.provides["root"], source="synthetic", format="yolo").to_dict()})
    return plan


def _run_qat(plan, flavour: str) -> dict:
    stage = plan.stage("compress")
    assert "npuflow.programs.torch_qat" in stage.argv and stage.argv[1:3] == ["-m", "torch.distributed.run"]
    assert stage.argv[stage.argv.index("--checkpoint") + 1] == plan.stage("train").outputs["checkpoint"][0]
    stage.argv = [sys.executable, "-c", WRITE_ONNX, "--out", stage.outputs["model"][0], flavour]
    return execute_stage(plan, stage, log=lambda _: None, log_format="yolor")


def test_qat_result_is_an_int8_onnx_model_with_its_qdq_nodes_counted(tmp_path: Path) -> None:
    result = _run_qat(plan_with_upstreams(tmp_path), "quantized")["result"]
    assert result["precision"] == "int8" and result["source"] == "train" and result["quantize_ops"] == 2
    assert Path(result["files"]["model"]).name == "model.onnx" and Path(result["files"]["summary"]).is_file()


def test_an_unquantized_qat_result_is_refused_not_passed_on(tmp_path: Path) -> None:
    with pytest.raises(StageRefused, match="holds no QuantizeLinear/DequantizeLinear nodes: the model was not"):
        _run_qat(plan_with_upstreams(tmp_path), "plain")


def test_an_export_from_a_train_stage_without_the_named_checkpoint_is_refused_at_plan_time(tmp_path: Path) -> None:
    data = yaml.safe_load(load_recipe(YOLOR).path.read_text())
    del data["stages"]["train"]["outputs"]
    path = tmp_path / "yolor_p6_coco.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StageRefused, match="the train stage 'train' declares no output 'checkpoint'"):
        build_plan(load_recipe_file(path), {"profile": "smoke"}, run_id="t", runs_root=tmp_path)


def test_onnx_op_types_are_read_without_onnx_and_match_onnx_including_subgraphs(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    cond = helper.make_tensor("c", TensorProto.BOOL, [], [True])
    branch = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
                                helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], "b", [], [y])
    nodes = [helper.make_node("NonMaxSuppression", ["x", "x"], ["n"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(nodes, "g", [x], [y], [cond, helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert op_types(path) == {"NonMaxSuppression": 1, "If": 1, "QuantizeLinear": 2, "DequantizeLinear": 2}
    assert quantize_ops(path) == 4


def test_the_export_program_refuses_a_toolkit_without_an_adapter_with_exit_78(tmp_path: Path) -> None:
    import subprocess

    ckpt = tmp_path / "last.pt"
    ckpt.write_bytes(b"x")
    argv = [sys.executable, "-m", "npuflow.programs.torch_export", "--adapter", "npuflow_adapter", "--toolkit-dir",
            str(tmp_path), "--checkpoint", str(ckpt), "--dataset-root", str(tmp_path), "--out", str(tmp_path / "m.onnx")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78
    assert f"no adapter module 'npuflow_adapter' in {tmp_path}: the toolkit must provide it" in proc.stderr
    proc = subprocess.run([*argv[:8], str(tmp_path / "none.pt"), *argv[9:]], capture_output=True, text=True)
    assert proc.returncode == 78 and "none.pt does not exist" in proc.stderr


def _constant_detector(path: Path, boxes: list[list[float]], labels: list[int]) -> Path:
    """An ONNX graph with the export's inputs and outputs that returns the given detections."""
    def const(name: str, dtype: int, dims: list[int], values: list) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(f"{name}_v", dtype, dims, values))

    n = len(boxes)
    nodes = [const("boxes", TensorProto.FLOAT, [n, 4], [v for b in boxes for v in b]),
             const("scores", TensorProto.FLOAT, [n], [0.5] * n),
             const("labels", TensorProto.INT64, [n], labels)]
    outputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [n, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [n]),
               helper.make_tensor_value_info("labels", TensorProto.INT64, [n])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 4, 4])],
                              outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_the_export_check_matches_boxes_whatever_order_the_runtimes_give_them(tmp_path: Path) -> None:
    """Near-tied scores come out of torch and onnxruntime in either order (an SSD trained one epoch failed its
    export with "boxes differ by 124.7 px" when the check compared box i with box i): the check pairs each box
    with the nearest of the same label, and still sees a moved box, a changed label or a missing box."""
    import torch

    from npuflow.programs.torch_export import onnx_mismatch

    img = torch.zeros(3, 4, 4)
    torch_det = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 90, 90], [5, 5, 20, 20]]),
                 "labels": torch.tensor([1, 2, 1])}
    swapped = _constant_detector(tmp_path / "a.onnx", [[5, 5, 20, 20], [0, 0, 10, 10], [50, 50, 90, 90]], [1, 1, 2])
    assert onnx_mismatch(swapped, img, torch_det) == 0.0
    moved = _constant_detector(tmp_path / "b.onnx", [[5, 5, 20, 20], [0, 0, 10, 10], [50, 50, 90, 93]], [1, 1, 2])
    assert onnx_mismatch(moved, img, torch_det) == pytest.approx(3.0)
    relabelled = _constant_detector(tmp_path / "c.onnx", [[5, 5, 20, 20], [0, 0, 10, 10], [50, 50, 90, 90]],
                                    [1, 1, 3])
    assert onnx_mismatch(relabelled, img, torch_det) == float("inf")
    fewer = _constant_detector(tmp_path / "d.onnx", [[5, 5, 20, 20], [0, 0, 10, 10]], [1, 1])
    assert onnx_mismatch(fewer, img, torch_det) == float("inf")
