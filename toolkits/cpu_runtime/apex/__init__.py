"""CPU stand-in for Ascend's ``apex`` (see ../README.md): ``amp.initialize`` as a pass-through, no fused optimizers."""

from . import amp, optimizers  # noqa: F401
