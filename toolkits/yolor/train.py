"""Stand-in for the Ascend ModelZoo YOLOR ``train.py`` (same flags, same data layout, same log line, same
checkpoints), training a tiny single-scale YOLO-style detector in plain PyTorch under torchrun.

The YOLOR code itself is not installable from a package registry, so the CPU smoke profile runs this instead;
everything around it (torchrun, DDP over gloo, the YOLO-format dataset, ``--resume``, ``weights/last.pt`` and
``epoch_NNN.pt``, the ``Epoch:[e][i/n][npu:N][FPS:x]...`` line) is what the production script does.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler


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
    return p.parse_args()


class YoloList(Dataset):
    """Images listed in a YOLO list file; labels at images/ -> labels/, .jpg -> .txt (``cls xc yc w h``)."""

    def __init__(self, data_yaml: Path, split: str, size: tuple[int, int]) -> None:
        meta = json.loads(data_yaml.read_text())  # derive writes JSON, which is YAML
        root = data_yaml.parent
        self.files = [root / line.strip() for line in (root / meta[split]).read_text().splitlines() if line.strip()]
        self.nc = int(meta["nc"])
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        path = self.files[i]
        img = Image.open(path).convert("RGB").resize(self.size)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        label = Path(str(path).replace("/images/", "/labels/")).with_suffix(".txt")
        rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines() if ln.strip()] \
            if label.exists() else []
        return x, torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


class TinyYolo(nn.Module):
    """Five stride-2 conv blocks and a 1x1 head predicting (x, y, w, h, obj, classes) per grid cell."""

    def __init__(self, nc: int) -> None:
        super().__init__()
        chans = [3, 16, 32, 64, 64, 128]
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b),
                                                  nn.SiLU()) for a, b in itertools.pairwise(chans)])
        self.head = nn.Conv2d(chans[-1], 5 + nc, 1)
        self.nc = nc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def yolo_loss(pred: torch.Tensor, targets: list[torch.Tensor], nc: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Each box is assigned to the cell holding its centre: box L1 + objectness BCE + class CE."""
    n, _, gh, gw = pred.shape
    obj_t = torch.zeros(n, gh, gw)
    box_l, cls_l, boxes = pred.new_zeros(()), pred.new_zeros(()), 0
    for b, rows in enumerate(targets):
        for cls, xc, yc, w, h in rows.tolist():
            gx, gy = min(int(xc * gw), gw - 1), min(int(yc * gh), gh - 1)
            obj_t[b, gy, gx] = 1.0
            p = pred[b, :, gy, gx]
            box_t = torch.tensor([xc * gw - gx, yc * gh - gy, w, h])
            box_l = box_l + F.l1_loss(torch.sigmoid(p[:4]), box_t, reduction="sum")
            cls_l = cls_l + F.cross_entropy(p[5:].unsqueeze(0), torch.tensor([int(cls) % nc]))
            boxes += 1
    obj_l = F.binary_cross_entropy_with_logits(pred[:, 4], obj_t)
    boxes = max(boxes, 1)
    loss = obj_l + box_l / boxes + cls_l / boxes
    return loss, {"box": float(box_l) / boxes, "obj": float(obj_l), "cls": float(cls_l) / boxes}


def main() -> None:
    opt = parse_args()
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    backend = {"npu": "hccl", "cuda": "nccl"}.get(opt.device, "gloo")
    if world > 1:  # a short timeout: a lost peer must fail the job in seconds, not after 30 minutes (FACTS)
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(0)
    data = YoloList(Path(opt.data), "train", tuple(opt.img))
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
            loss, parts = yolo_loss(model(imgs), targets, data.nc)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            dt = time.perf_counter() - t0
            if rank == 0:
                print(f"Epoch:[{epoch}][{i + 1}/{len(loader)}][{device_tag}:{local}][FPS:{len(imgs) / dt:.3f}]"
                      f"[time:{dt:.4f}][loss:{float(loss):.5f}][box_loss:{parts['box']:.5f}]"
                      f"[obj_loss:{parts['obj']:.5f}][cls_loss:{parts['cls']:.5f}]"
                      f"[lr:{optimizer.param_groups[0]['lr']:.5f}]", flush=True)
        if rank == 0:
            state = model.module.state_dict() if world > 1 else model.state_dict()
            ckpt = {"epoch": epoch, "model": state, "optimizer": optimizer.state_dict()}
            torch.save(ckpt, wdir / "last.pt")
            torch.save(ckpt, wdir / f"epoch_{epoch:03d}.pt")
        if world > 1:
            dist.barrier()
    # Every rank prints a digest of its parameters: DDP must leave them identical on every rank and node.
    net = model.module if world > 1 else model
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in net.parameters())).hexdigest()[:16]
    print(f"rank {rank}: params sha256 {digest}", flush=True)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
