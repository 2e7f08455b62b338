"""CPU stand-in for Ascend's ``apex`` (see ../README.md): ``amp.initialize`` as a pass-through."""

from . import amp  # noqa: F401
