"""Stand-in for PaddleSeg's deploy/slim/act/run_seg.py (same flags: --config_path --act_config_path --save_dir
--devices): quantization-aware training with distillation of an exported segmentation model through
``paddleslim.auto_compression.AutoCompression``, scored by mIoU on the dataset config's val_dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))

import _common  # noqa: F401  (cv2 before paddle; the paddle 2.6 workarounds)
import numpy as np
import paddle
from paddleseg.cvlibs import Config, SegBuilder
from paddleseg.cvlibs.config_checker import ConfigChecker
from paddleslim.auto_compression import AutoCompression
from paddleslim.common import load_config as load_slim_config
from paddleslim.common.dataloader import get_feed_vars


def miou(exe, program, feed_names, fetch_list, dataset) -> float:
    """mIoU of a static program on ``dataset`` (batch 1), as PaddleSeg's metrics compute it."""
    n = dataset.num_classes
    confusion = np.zeros((n, n), np.int64)
    loader = paddle.io.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, return_list=True)
    for data in loader:
        out = exe.run(program, feed={feed_names[0]: np.array(data["img"])}, fetch_list=fetch_list)[0]
        pred = out.argmax(axis=1) if out.ndim == 4 and out.shape[1] > 1 else out.reshape(out.shape[0], *out.shape[-2:])
        label = np.array(data["label"]).reshape(pred.shape).astype(np.int64)
        keep = label != dataset.ignore_index
        confusion += np.bincount(label[keep] * n + pred[keep].astype(np.int64), minlength=n * n).reshape(n, n)
    intersect = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersect
    value = float(np.where(union > 0, intersect / np.maximum(union, 1), 0.0).mean())
    print(f"[EVAL] #Images: {len(dataset)} mIoU: {value:.4f}")
    return value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config_path", required=True, help="the PaddleSeg dataset config (train_dataset, val_dataset)")
    p.add_argument("--act_config_path", required=True, help="the ACT strategy config (Global, QuantAware, ...)")
    p.add_argument("--save_dir", default=None, help="where the compressed model is written")
    p.add_argument("--devices", default="gpu", choices=["cpu", "gpu", "npu", "xpu"])
    args = p.parse_args()
    paddle.enable_static()
    paddle.set_device(args.devices)
    act = load_slim_config(args.act_config_path)
    glob = act["Global"]
    # A dataset-only config: paddleseg 2.8's default checker would want a model, an optimizer and iters in it.
    data = Config(args.config_path, checker=ConfigChecker([], allow_update=True))
    builder = SegBuilder(data)
    train_dataset, val_dataset = builder.train_dataset, builder.val_dataset
    feed = get_feed_vars(glob["model_dir"], glob["model_filename"], glob["params_filename"])[0]
    sampler = paddle.io.DistributedBatchSampler(train_dataset, batch_size=data.batch_size, shuffle=True,
                                                drop_last=True)
    loader = paddle.io.DataLoader(train_dataset, batch_sampler=sampler, num_workers=0, return_list=True)

    def train_batches():
        for batch in loader():
            yield {feed: np.array(batch["img"])}

    def eval_callback(exe, program, feed_names, fetch_list) -> float:
        return miou(exe, program, feed_names, fetch_list, val_dataset)

    AutoCompression(model_dir=glob["model_dir"], model_filename=glob["model_filename"],
                    params_filename=glob["params_filename"], save_dir=args.save_dir, config=act,
                    train_dataloader=train_batches,
                    eval_callback=eval_callback if paddle.distributed.get_rank() == 0 else None).compress()


if __name__ == "__main__":
    main()
