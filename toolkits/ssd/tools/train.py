"""Stand-in for the ModelZoo SSD port's ``tools/train.py`` (MMDetection 2.x): same flags, config loader and work dir.

    python -m torch.distributed.run --nproc_per_node 2 tools/train.py configs/ssd/ssdlite_smoke.py \
        --launcher pytorch --work-dir W [--resume-from W/epoch_N.pth] [--cfg-options k=v ...] [--seed 0]

Writes what the port writes: ``W/epoch_N.pth`` (mmcv layout: ``meta``, ``state_dict``, ``optimizer``),
``W/latest.pth`` -> the newest epoch, and ``W/<YYYYmmdd_HHMMSS>.log.json`` in MMDetection 2.x's format: a metadata
line, then one JSON object per logged step (``mode: train``: epoch, iter, lr, time, data_time, loss_cls,
loss_bbox, loss) and per evaluation (``mode: val``: bbox_mAP, bbox_mAP_50, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch
from mmcv import Config, DictAction
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmdet_standin.model import build_detector

from npuflow.cocoeval import STAT_NAMES, coco_stats
from npuflow.torchdet import dist
from npuflow.torchdet.data import CocoBoxes, collate, evaluate

LOSS_NAMES = {"classification": "loss_cls", "bbox_regression": "loss_bbox"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a detector")
    p.add_argument("config", help="train config file path")
    p.add_argument("--work-dir", help="the dir to save logs and models")
    p.add_argument("--resume-from", help="the checkpoint file to resume from")
    p.add_argument("--no-validate", action="store_true", help="do not evaluate checkpoints during training")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--launcher", choices=["none", "pytorch"], default="none")
    # The port's own parsing and loading: mmcv 1.2.7's DictAction and Config (which, like the port, add a key
    # the config does not have instead of refusing it; tests/test_ssd_port.py holds the recipe's keys to the port's).
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override settings: key=value")
    p.add_argument("--device", default=os.environ.get("NPUFLOW_DEVICE", "cpu"), help="cpu, npu or cuda")
    return p.parse_args(argv)


class JsonLog:
    """MMDetection's ``<timestamp>.log.json``: rank 0 appends one JSON object per line, flushed at once."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.file = path.open("a", buffering=1)
        self.write(meta)

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")


def save_checkpoint(work_dir: Path, epoch: int, it: int, model: nn.Module, optimizer, cfg: dict,
                    categories: list[int]) -> None:
    path = work_dir / f"epoch_{epoch}.pth"
    tmp = path.with_suffix(".pth.tmp")
    torch.save({"meta": {"epoch": epoch, "iter": it, "config": cfg, "categories": categories},
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)  # never a half-written epoch_N.pth for a retry to resume from
    latest = work_dir / "latest.pth"
    latest.unlink(missing_ok=True)
    latest.symlink_to(path.name)  # mmcv links latest.pth to the newest epoch


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config.fromfile(args.config)
    if args.cfg_options is not None:
        config.merge_from_dict(args.cfg_options)
    cfg = config._cfg_dict.to_dict()  # plain values for the checkpoint's meta and the log's header
    rank, world, _ = dist.init(args.device) if args.launcher == "pytorch" else (0, 1, 0)
    if args.seed is not None:
        torch.manual_seed(args.seed + rank)
    size = (int(cfg["model"]["img_size"]),) * 2
    data_cfg = cfg["data"]
    if data_cfg["train"].get("type") == "RepeatDataset" and int(data_cfg["train"]["times"]) != 1:
        raise SystemExit("error: the stand-in repeats no dataset: data.train.times must be 1")
    train_cfg = data_cfg["train"].get("dataset", data_cfg["train"])
    train = CocoBoxes(train_cfg["ann_file"], train_cfg["img_prefix"], size)
    if len(train.categories) != int(cfg["model"]["num_classes"]):
        raise SystemExit(f"error: model.num_classes={cfg['model']['num_classes']} but "
                         f"{train_cfg['ann_file']} has {len(train.categories)} categories")
    val = None if args.no_validate else CocoBoxes(data_cfg["val"]["ann_file"], data_cfg["val"]["img_prefix"], size)
    work_dir = Path(args.work_dir or Path("work_dirs") / Path(args.config).stem)
    work_dir.mkdir(parents=True, exist_ok=True)

    model = build_detector(cfg["model"])
    opt_cfg = cfg["optimizer"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0))
    max_epochs = int(cfg["total_epochs"])
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed or 0) \
        if world > 1 else None
    loader = DataLoader(train, batch_size=int(data_cfg["samples_per_gpu"]), sampler=sampler,
                        shuffle=sampler is None, num_workers=int(data_cfg.get("workers_per_gpu", 0)),
                        collate_fn=collate)
    total_iters = max_epochs * len(loader)
    min_lr = cfg.get("lr_config", {}).get("min_lr", 0.0)

    def lr_at(it: int) -> float:  # mmcv's CosineAnnealing, by iteration
        return min_lr + (opt_cfg["lr"] - min_lr) * (1 + math.cos(math.pi * it / total_iters)) / 2

    start_epoch = 1
    if args.resume_from:
        ckpt = torch.load(args.resume_from, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["meta"]["epoch"] + 1
        if rank == 0:
            print(f"resumed epoch {ckpt['meta']['epoch']}, iter {ckpt['meta']['iter']} from {args.resume_from}",
                  flush=True)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    log = None
    if rank == 0:
        stamp = time.strftime("%Y%m%d_%H%M%S")
        log = JsonLog(work_dir / f"{stamp}.log.json",
                      {"env_info": f"sys.platform: {sys.platform}\nPython: {platform.python_version()}\n"
                                   f"PyTorch: {torch.__version__}", "config": json.dumps(cfg),
                       "seed": args.seed, "exp_name": Path(args.config).name, "hook_msgs": {}})
    interval = int(cfg.get("log_config", {}).get("interval", 50))
    eval_every = int(cfg.get("evaluation", {}).get("interval", 1))
    clip = cfg.get("optimizer_config", {}).get("grad_clip") or {}
    it = (start_epoch - 1) * len(loader)
    for epoch in range(start_epoch, max_epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        t_data = time.perf_counter()
        for i, (imgs, targets) in enumerate(loader):
            t0 = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = lr_at(it)
            losses = net(imgs, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip["max_norm"]))
            optimizer.step()
            it += 1
            now = time.perf_counter()
            if log is not None and (i + 1) % interval == 0:
                parts = {LOSS_NAMES.get(k, k): round(float(v), 5) for k, v in losses.items()}
                rec = {"mode": "train", "epoch": epoch, "iter": i + 1, "lr": optimizer.param_groups[0]["lr"],
                       "memory": 0, "data_time": round(t0 - t_data, 5), **parts, "loss": round(float(loss), 5),
                       "time": round(now - t_data, 5)}
                log.write(rec)
                print(f"Epoch [{epoch}][{i + 1}/{len(loader)}]\tlr: {rec['lr']:.3e}, time: {rec['time']:.3f}, "
                      f"data_time: {rec['data_time']:.3f}, memory: 0, "
                      + ", ".join(f"{k}: {v:.4f}" for k, v in parts.items()) + f", loss: {float(loss):.4f}",
                      flush=True)
            t_data = time.perf_counter()
        if rank == 0:
            save_checkpoint(work_dir, epoch, it, model, optimizer, cfg, train.categories)
            if val is not None and (epoch % eval_every == 0 or epoch == max_epochs):
                stats = coco_stats(data_cfg["val"]["ann_file"], evaluate(model, val))
                keep = {k: round(v, 4) for k, v in stats.items() if k.startswith("bbox_mAP")}
                copypaste = " ".join(f"{keep[k]:.3f}" for k in STAT_NAMES[:6])
                assert log is not None
                log.write({"mode": "val", "epoch": epoch, "iter": len(loader), "lr": optimizer.param_groups[0]["lr"],
                           **keep, "bbox_mAP_copypaste": copypaste})
                print(f"Epoch(val) [{epoch}][{len(val)}]\tbbox_mAP: {keep['bbox_mAP']:.4f}, "
                      f"bbox_mAP_50: {keep['bbox_mAP_50']:.4f}, bbox_mAP_copypaste: {copypaste}", flush=True)
        dist.barrier(world)
    # Every rank prints a digest of its parameters: DDP must leave them identical on every rank and node.
    dist.print_params_digest(rank, model)
    dist.finish(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
