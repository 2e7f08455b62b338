"""The adapter: what a PyTorch toolkit offers so that the project's export and QAT programs can use its model.

An adapter is a module importable from the toolkit's folder (the stage's cwd), named by the recipe
(``settings.adapter``). It defines:

``load(checkpoint: str) -> tuple[nn.Module, dict]``
    The model with the checkpoint's weights, following torchvision's detection convention (see the package
    docstring), and its ``info``: ``img_size`` [h, w] the model takes, ``categories`` (the COCO category id of
    each label 1..K) and ``quant_target``, the dotted name of the submodule QAT fake-quantizes (the backbone;
    it must take the image batch tensor).
``train_data(dataset_root: str, info: dict) -> Dataset``
    The training split as (image CHW float in [0, 1] at ``img_size``, target with ``boxes`` and ``labels``).

Either, and the model's training forward, raise ``AdapterError`` for what no retry changes (a checkpoint the toolkit
did not write, other categories, a loss that cannot run on this device): the programs then refuse with exit 78.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

REQUIRED = ("load", "train_data")


class AdapterError(RuntimeError):
    """The toolkit has no usable adapter: nothing a retry can change."""


def load_adapter(name: str, folder: Path | str = ".") -> ModuleType:
    folder = str(Path(folder).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise AdapterError(f"no adapter module {name!r} in {folder}: the toolkit must provide it (see "
                           f"npuflow/torchdet/adapter.py) for the ONNX export and QAT stages") from None
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise AdapterError(f"adapter {module.__file__} lacks {', '.join(missing)}")
    return module
