"""What a stage's Python imports: its interpreter's version, the framework distributions and the toolkit packages
it resolves, asked of that interpreter with the stage's own environment and working directory.

Provenance wants the versions a stage *ran*, not the ones npuflow's venv has: a stage's ``python`` may be
another installation (the stage image's, a rehearsal host's) and its ``PYTHONPATH`` picks the checkout. The
probe looks packages up (``importlib.util.find_spec``, ``importlib.metadata``) without importing a framework,
so it costs a fraction of a second. A stage in a container is not probed here (its image digest is its record).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

#: Distributions whose version decides what a stage computes.
DISTRIBUTIONS = ("paddlepaddle", "paddlepaddle-gpu", "paddle-custom-npu", "paddleslim", "paddle2onnx", "torch",
                 "torch-npu", "torchvision", "onnx", "onnxruntime", "onnxruntime-cann", "mmcv", "mmcv-full", "numpy")
#: Toolkit packages a checkout provides (not installed: where they resolve from is the record).
PACKAGES = ("ppdet", "paddleseg", "mmdet")

_PROBE = r"""
import importlib.metadata as md, importlib.util as iu, json, sys
dists = {}
for name in %r:
    try:
        dists[name] = md.version(name)
    except md.PackageNotFoundError:
        pass
pkgs = {}
for name in %r:
    try:
        spec = iu.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        pkgs[name] = spec.origin
print(json.dumps({"python": sys.version.split()[0], "executable": sys.executable, "distributions": dists,
                  "packages": pkgs}))
"""


def interpreter_of(argv: list[str]) -> str | None:
    """The Python a command runs (its first word when that is a python), else None."""
    if argv and Path(argv[0]).name.startswith("python"):
        return argv[0]
    return None


def probe(argv: list[str], env: dict[str, str], cwd: str, timeout_s: float = 60.0) -> dict[str, object] | None:
    """The stage interpreter's view of its packages, or None when the command is not a Python or the probe fails."""
    python = interpreter_of(argv)
    if python is None:
        return None
    import os

    code = _PROBE % (DISTRIBUTIONS, PACKAGES)
    try:
        out = subprocess.run([python, "-c", code], env={**os.environ, **env}, cwd=cwd, capture_output=True,
                             text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
