"""Shared parts of the stand-in ACT scripts: load the slim config and its ppdet reader, feed the exported
model's inputs, and score a static program with ppdet's COCOMetric, as deploy/auto_compression does."""

from __future__ import annotations

import argparse

# paddle 2.6.2 bundles its own zlib: cv2 must be imported before paddle (FACTS).
import cv2  # noqa: F401
import numpy as np
import paddle
from paddleslim.auto_compression.config_helpers import load_config as load_slim_config
from paddleslim.common.dataloader import get_feed_vars
from ppdet.core.workspace import create
from ppdet.core.workspace import load_config as load_reader_config
from ppdet.metrics import COCOMetric


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config_path", required=True, help="the ACT strategy config (Global, QuantAware, TrainConfig)")
    p.add_argument("--devices", default="gpu", choices=["cpu", "gpu", "xpu", "npu"], help="where to run")
    return p


def load(config_path: str) -> tuple[dict, dict]:
    config = load_slim_config(config_path)
    if "Global" not in config:
        raise SystemExit(f"{config_path}: no Global section")
    return config, load_reader_config(config["Global"]["reader_config"])


def feed_names(glob: dict) -> list[str]:
    """The inputs the exported program declares (image, scale_factor, ...)."""
    return glob.get("input_list") or get_feed_vars(glob["model_dir"], glob["model_filename"], glob["params_filename"])


def batches(loader, names: list[str]):
    """Only the program's feeds, as numpy arrays."""
    for data in loader:
        yield {name: np.array(data[name]) for name in names}


def eval_loader(reader_cfg: dict):
    dataset = reader_cfg["EvalDataset"]
    sampler = paddle.io.BatchSampler(dataset, batch_size=reader_cfg["EvalReader"]["batch_size"])
    return dataset, create("EvalReader")(dataset, reader_cfg["worker_num"], batch_sampler=sampler, return_list=True)


def coco_map(exe, program, feeds: list[str], fetches, reader_cfg: dict) -> float:
    """bbox mAP (IoU 0.5:0.95) of a static program with NMS inside, on the reader's EvalDataset."""
    dataset, loader = eval_loader(reader_cfg)
    metric = COCOMetric(anno_file=dataset.get_anno(), clsid2catid={v: k for k, v in dataset.catid2clsid.items()},
                        IouType="bbox")
    for data in loader:
        outs = exe.run(program, feed={k: np.array(data[k]) for k in feeds}, fetch_list=fetches, return_numpy=False)
        res = {}
        for out in outs:
            value = np.array(out)
            res["bbox" if value.ndim > 1 else "bbox_num"] = value
        metric.update({k: np.array(v) for k, v in data.items()}, res)
    metric.accumulate()
    metric.log()
    value = metric.get_results()["bbox"][0]
    metric.reset()
    return float(value)
