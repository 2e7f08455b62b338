"""CPU stand-in for ``torch_npu`` (see ../README.md): only the calls the YOLOR port makes with ``--device cpu``."""

import types

import torch

torch.npu = types.SimpleNamespace(set_option=lambda option: None)  # CANN's operator cache options
torch.Tensor.npu = lambda self, *args, **kwargs: self  # on a CPU host the tensor stays where it is
