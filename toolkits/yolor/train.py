"""Stand-in for the Ascend ModelZoo YOLOR ``train.py`` (same flags, same data layout, same log line, same
checkpoints, the COCO evaluation of test.py after the last epoch), training a tiny single-scale YOLO-style detector
(models/tiny.py) in plain PyTorch under torchrun.

The YOLOR code itself is not installable from a package registry, so the CPU smoke profile runs this instead;
everything around it (torchrun, DDP over gloo, the YOLO-format dataset, ``--resume``, ``weights/last.pt`` and
``epoch_NNN.pt``, the ``Epoch:[e][i/n][npu:N][FPS:x]...`` line) is what the production script does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.tiny import TinyYolo
from test import test, val_categories
from utils.datasets import YoloList

from npuflow.torchdet import dist
from npuflow.torchdet.data import collate


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--cfg", default="tiny", help="model config (the stand-in has one tiny model)")
    p.add_argument("--data", required=True, help="data.yaml with train/val list files, nc and names")
    p.add_argument("--weights", default="", help="initial weights ('' = from scratch)")
    p.add_argument("--hyp", default="", help="hyper-parameter file (the stand-in uses lr0 only)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8, help="total batch size over all ranks")
    p.add_argument("--img", nargs=2, type=int, default=[128, 128])
    p.add_argument("--device", default="cpu", help="cpu, npu or cuda")
    p.add_argument("--project", default="runs/train")
    p.add_argument("--name", default="exp")
    p.add_argument("--resume", default="", help="checkpoint to resume from (epoch, model, optimizer)")
    p.add_argument("--lr0", type=float, default=0.01)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--notest", action="store_true", help="only train; skip the COCO evaluation after the last epoch")
    return p.parse_args()


def main() -> None:
    opt = parse_args()
    rank, world, local = dist.init(opt.device)
    torch.manual_seed(0)
    data = YoloList(Path(opt.data), "train", (opt.img[1], opt.img[0]))
    categories = [] if opt.notest else val_categories(Path(opt.data))
    model = TinyYolo(data.nc)
    optimizer = torch.optim.SGD(model.parameters(), lr=opt.lr0, momentum=0.9)
    start_epoch = 0
    if opt.resume:
        ckpt = torch.load(opt.resume, map_location="cpu")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"] + 1
        if rank == 0:
            print(f"Resuming training from {opt.resume} at epoch {start_epoch}", flush=True)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=0) if world > 1 else None
    per_rank = max(1, opt.batch_size // world)
    loader = DataLoader(data, batch_size=per_rank, sampler=sampler, shuffle=sampler is None,
                        num_workers=opt.workers, collate_fn=collate, drop_last=False)
    wdir = Path(opt.project) / opt.name / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    device_tag = "npu" if opt.device == "npu" else "device"
    for epoch in range(start_epoch, opt.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        for i, (imgs, targets) in enumerate(loader):
            t0 = time.perf_counter()
            parts = model(imgs, targets)
            loss = sum(parts.values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            dt = time.perf_counter() - t0
            if rank == 0:
                print(f"Epoch:[{epoch}][{i + 1}/{len(loader)}][{device_tag}:{local}][FPS:{len(imgs) / dt:.3f}]"
                      f"[time:{dt:.4f}][loss:{float(loss):.5f}][box_loss:{float(parts['box']):.5f}]"
                      f"[obj_loss:{float(parts['obj']):.5f}][cls_loss:{float(parts['cls']):.5f}]"
                      f"[lr:{optimizer.param_groups[0]['lr']:.5f}]", flush=True)
        if rank == 0:
            state = model.module.state_dict() if world > 1 else model.state_dict()
            ckpt = {"epoch": epoch, "model": state, "optimizer": optimizer.state_dict(), "nc": data.nc,
                    "img_size": list(data.size), "categories": categories}
            torch.save(ckpt, wdir / "last.pt")
            torch.save(ckpt, wdir / f"epoch_{epoch:03d}.pt")
        dist.barrier(world)
    if rank == 0 and not opt.notest:
        # As YOLOR's train.py after the final epoch: test.py on last.pt with --save-json (COCO mAP).
        net = model.module if world > 1 else model
        test(net, Path(opt.data), data.size, save_json=wdir / "last_predictions.json")
    dist.barrier(world)
    # Every rank prints a digest of its parameters: DDP must leave them identical on every rank and node.
    net = model.module if world > 1 else model
    dist.print_params_digest(rank, net)
    dist.finish(world)


if __name__ == "__main__":
    main()
