"""Quantization-aware training: fake-quant modules on the backbone, then a QDQ ONNX graph.

Chosen deliberately: ``torch.ao.quantization``'s FX graph mode (``prepare_qat_fx``), although it is deprecated
in favour of torchao's PT2E flow. It ships with the torch we pin (no second package whose compatibility with
torch 2.14.1 is unmeasured), it prepares the backbone of a torchvision detector in place (PT2E needs a
``torch.export`` capture of the module first, which the detectors' data-dependent post-processing refuses),
it trains under DDP like any module, and its ``FakeQuantize`` modules export through the legacy ONNX exporter as
QuantizeLinear/DequantizeLinear pairs, the format onnxruntime runs as INT8. Moving to PT2E touches only this
file. The scheme matches onnxruntime's QDQ defaults: activations U8 per tensor (affine), weights S8 per output
channel (symmetric).

A model whose forward FX cannot trace (the YOLOR port's Darknet loops over its layers with routes and shortcuts)
says ``quant_mode: modules`` in its adapter's info: every ``Conv2d`` of the target is swapped for its QAT twin
(weights fake-quantized) with its input and output fake-quantized too, eager mode, the same scheme. The export
turns each into QuantizeLinear/DequantizeLinear pairs around the convolution, the pattern onnxruntime fuses into
QLinearConv (measured on the smoke YOLOR-P6: all 145 convolutions; with the output alone, none).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def _qconfig_mapping():
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
        QConfigMapping,
    )

    act = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                 dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-128, quant_max=127,
                                    dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfigMapping().set_global(QConfig(activation=act, weight=weight))


MODES = ("fx", "modules")


def prepare(model: nn.Module, target: str, img_size: tuple[int, int], mode: str = "fx") -> int:
    """Fake-quantize ``model.<target>`` (train mode): its FX graph, or (``modules``) each of its convolutions;
    returns the fake-quant count."""
    if mode not in MODES:
        raise ValueError(f"quant_mode {mode!r}: one of {MODES}")
    parent_name, _, leaf = target.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    sub = getattr(parent, leaf)
    sub.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, once per observer
        if mode == "fx":
            from torch.ao.quantization.quantize_fx import prepare_qat_fx

            setattr(parent, leaf, prepare_qat_fx(sub, _qconfig_mapping(), (torch.rand(1, 3, *img_size),)))
        else:
            from torch.ao.nn.qat import Conv2d as QatConv2d
            from torch.ao.quantization import prepare_qat

            qconfig = _qconfig_mapping().global_qconfig
            for module in sub.modules():
                if isinstance(module, nn.Conv2d):
                    module.qconfig = qconfig
            prepare_qat(sub, mapping={nn.Conv2d: QatConv2d}, inplace=True)  # weights, and the output
            for module in sub.modules():
                if isinstance(module, QatConv2d):
                    module.input_fake_quant = qconfig.activation()
                    module.register_forward_pre_hook(_quantize_input)
    return fake_quant_count(model)


def _quantize_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (module.input_fake_quant(args[0]), *args[1:])


def fake_quant_count(model: nn.Module) -> int:
    from torch.ao.quantization import FakeQuantizeBase

    return sum(isinstance(m, FakeQuantizeBase) for m in model.modules())


def freeze(model: nn.Module) -> None:
    """Stop the observers (scales and zero points stay as trained): an export must not update them, and
    their in-place updates do not trace."""
    from torch.ao.quantization import disable_observer

    model.apply(disable_observer)
