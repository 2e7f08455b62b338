"""Stand-in for PaddleSeg's tools/train.py (same flags, log lines and output layout) over the paddleseg wheel."""

from __future__ import annotations

import argparse
import random

import _common
import numpy as np
import paddle
from paddleseg.core import train
from paddleseg.cvlibs import Config, SegBuilder


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True, help="the model's YAML config")
    p.add_argument("--device", default="gpu", choices=["cpu", "gpu", "npu", "xpu", "mlu"])
    p.add_argument("--save_dir", default="./output", help="iter_N/ snapshots and best_model/ go here")
    p.add_argument("--num_workers", type=int, default=0)
    p.add_argument("--do_eval", action="store_true", help="evaluate at every save_interval, keep best_model")
    p.add_argument("--use_vdl", action="store_true")
    p.add_argument("--save_interval", type=int, default=1000)
    p.add_argument("--keep_checkpoint_max", type=int, default=5)
    p.add_argument("--log_iters", type=int, default=10)
    p.add_argument("--resume_model", default=None, help="an iter_N folder to continue from")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--learning_rate", type=float, default=None)
    p.add_argument("--opts", nargs="+", default=None, help="key=value overrides of the config")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.seed is not None:
        paddle.seed(args.seed)
        np.random.seed(args.seed)
        random.seed(args.seed)
    cfg = Config(args.config, learning_rate=args.learning_rate, iters=args.iters, batch_size=args.batch_size,
                 opts=args.opts)
    _common.set_device(args.device)
    builder = SegBuilder(cfg)
    train(builder.model, builder.train_dataset, val_dataset=builder.val_dataset if args.do_eval else None,
          optimizer=builder.optimizer, save_dir=args.save_dir, iters=cfg.iters, batch_size=cfg.batch_size,
          resume_model=args.resume_model, save_interval=args.save_interval, log_iters=args.log_iters,
          num_workers=args.num_workers, use_vdl=args.use_vdl, losses=builder.loss,
          keep_checkpoint_max=args.keep_checkpoint_max, test_config=cfg.test_config)


if __name__ == "__main__":
    main()
