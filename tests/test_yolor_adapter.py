"""The YOLOR port's adapter (npuflow/torchdet/yolor.py) and the QAT mode it needs, on tensors: the decode gives the
boxes of "threshold, then NMS" with no branch on how many pass, the targets are the port's rows, and the
convolution-wise QAT exports QuantizeLinear/DequantizeLinear pairs. The port's own Darknet, checkpoint and loss
through the adapter run in the YOLOR smoke DAG (tests/test_e2e_smoke.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from torchvision.ops import batched_nms  # noqa: E402

from npuflow.torchdet import qat  # noqa: E402
from npuflow.torchdet.yolor import CONF_THRES, IOU_THRES, MAX_DET, YolorDetector, yolo_targets  # noqa: E402


def _detector(nc: int) -> YolorDetector:
    return YolorDetector(torch.nn.Identity(), nc, {})


def test_the_decode_keeps_the_boxes_of_threshold_then_nms() -> None:
    torch.manual_seed(0)
    n, nc = 500, 3
    xy, wh = torch.rand(n, 2) * 100, torch.rand(n, 2) * 30 + 2
    obj, cls = torch.rand(n, 1) * 0.2, torch.rand(n, 80) * 0.1  # the head has 80 classes, the data 3
    out = _detector(nc).decode(torch.cat([xy, wh, obj, cls], 1))
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    scores, labels = (obj * cls[:, :nc]).max(1)
    keep = torch.where(scores > CONF_THRES)[0]
    ref = keep[batched_nms(boxes[keep], scores[keep], labels[keep], IOU_THRES)][:MAX_DET]
    assert torch.equal(out["boxes"], boxes[ref]) and torch.equal(out["labels"], labels[ref] + 1)
    assert (out["labels"] <= nc).all() and (out["scores"] > CONF_THRES).all()
    none = _detector(nc).decode(torch.cat([xy, wh, obj * 0, cls], 1))  # an untrained model: nothing passes
    assert none["boxes"].shape == (0, 4)


def test_targets_are_the_ports_rows() -> None:
    rows = yolo_targets([{"boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0]]), "labels": torch.tensor([2])},
                         {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
                         {"boxes": torch.tensor([[0.0, 0.0, 64.0, 32.0]]), "labels": torch.tensor([1])}],
                        torch.Size([64, 128]))
    # image index, class (0-based), centre x, centre y (normalised by width and height), width, height
    assert rows.flatten().tolist() == pytest.approx([0, 1, 20 / 128, 40 / 64, 20 / 128, 40 / 64,
                                                     2, 0, 32 / 128, 16 / 64, 64 / 128, 32 / 64])


def test_convolution_wise_qat_fake_quantizes_a_model_fx_cannot_trace(tmp_path: Path) -> None:
    class Routed(torch.nn.Module):  # a forward with a data-dependent branch, like Darknet's route loop
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 1)

        def forward(self, x):
            y = self.a(x)
            if x.shape[-1] > 1:  # FX: "symbolically traced variables cannot be used as inputs to control flow"
                y = y.relu()
            return self.b(y)

    with pytest.raises(Exception, match="control flow"):
        qat.prepare(torch.nn.Sequential(Routed()), "0", (16, 16), "fx")
    model = torch.nn.Sequential(Routed())
    assert qat.prepare(model, "0", (16, 16), "modules") == 6  # input, weights and output of each convolution
    model(torch.rand(2, 3, 16, 16)).sum().backward()  # trains
    qat.freeze(model)
    model.eval()
    out = tmp_path / "q.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, 16, 16),), str(out), dynamo=False, opset_version=17,
                      input_names=["images"])
    from npuflow.model_ops import quantize_ops

    assert quantize_ops(out) == 12  # a QuantizeLinear/DequantizeLinear pair per fake-quant
    from npuflow.programs.onnx_detection_bench import int8_execution, kernels_run

    ran = kernels_run(out, "cpu", 1, {"images": torch.rand(1, 3, 16, 16).numpy()})
    assert ran["QLinearConv"] == {"CPUExecutionProvider": 2} and "Conv" not in ran  # INT8 kernels, both
    assert int8_execution(ran, 12, "cpu").startswith("int8 kernels: QLinearConv x2 on CPUExecutionProvider")
    assert int8_execution(ran, 0, "cpu") is None
    simulated = {"Conv": {"CPUExecutionProvider": 2}, "QuantizeLinear": {"CANNExecutionProvider": 3},
                 "DequantizeLinear": {"CANNExecutionProvider": 3}}
    assert int8_execution(simulated, 6, "npu") == (
        "simulated: no integer kernel ran, the quantize/dequantize ops wrap FP kernels; fell back from "
        "CANNExecutionProvider: Conv x2 on CPUExecutionProvider")
    with pytest.raises(ValueError, match="quant_mode"):
        qat.prepare(torch.nn.Sequential(Routed()), "0", (16, 16), "pt2e")
