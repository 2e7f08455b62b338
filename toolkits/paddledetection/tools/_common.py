"""Shared start-up of the stand-in PaddleDetection tools: argument parsing, config and device, as upstream does."""

from __future__ import annotations

import os
import sys

# paddle 2.6.2 bundles its own zlib: cv2 must be imported before paddle or PNG decoding breaks (FACTS).
import cv2  # noqa: F401

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paddle
from ppdet.core.workspace import load_config, merge_config
from ppdet.utils.check import check_config, check_version
from ppdet.utils.cli import ArgsParser, merge_args


def parser() -> ArgsParser:
    return ArgsParser()


def load(flags):
    """Load the config, apply ``-o`` overrides and pick the device the way upstream tools/*.py do."""
    cfg = load_config(flags.config)
    merge_args(cfg, flags)
    merge_config(flags.opt)
    for key in ("use_npu", "use_xpu", "use_gpu", "use_mlu"):
        cfg.setdefault(key, False)
    if cfg.use_gpu:
        paddle.set_device("gpu")
    elif cfg.use_npu:
        paddle.set_device("npu")
    else:
        paddle.set_device("cpu")
    check_config(cfg)
    check_version()
    return cfg
