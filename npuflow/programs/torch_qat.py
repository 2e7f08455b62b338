"""Quantization-aware fine-tuning of a PyTorch toolkit's trained checkpoint, exported as an INT8 (QDQ) ONNX model.

    python -m torch.distributed.run --nproc_per_node N -m npuflow.programs.torch_qat --adapter npuflow_adapter \
        --checkpoint last.pt --dataset-root <data> --epochs 2 --batch-size 4 --lr 1e-4 --out <stage>/model.onnx

Under torchrun, one process per card: the adapter's model gets fake-quant modules on its backbone
(npuflow/torchdet/qat.py), is fine-tuned with its own training loss on the training split (DDP), and rank 0 then
freezes the observers and exports the whole detector to ONNX, where every fake-quant becomes a
QuantizeLinear/DequantizeLinear pair. Exit code 78: a problem no retry changes.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from npuflow.errors import refuse
from npuflow.model_ops import quantize_ops
from npuflow.programs.torch_export import example_image, model_arguments


def main(argv: list[str] | None = None) -> int:
    p = model_arguments(__doc__)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4, help="images per card and step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        return refuse(f"checkpoint {args.checkpoint} does not exist")
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        return refuse("--epochs and --batch-size must be >= 1 and --lr > 0")

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, DistributedSampler

    from npuflow.torchdet import dist, qat
    from npuflow.torchdet.adapter import AdapterError, load_adapter
    from npuflow.torchdet.data import CocoBoxes, collate
    from npuflow.torchdet.onnx_io import export

    rank, world, local = dist.init(args.device)
    device = torch.device("cpu") if args.device == "cpu" else \
        torch.device(f"{'cuda' if args.device == 'gpu' else args.device}:{local}")
    torch.manual_seed(args.seed)
    try:
        adapter = load_adapter(args.adapter, args.toolkit_dir)
        model, info = adapter.load(str(args.checkpoint))
        data = adapter.train_data(str(args.dataset_root), info)
    except AdapterError as exc:
        return refuse(str(exc))
    fake_quants = qat.prepare(model, info["quant_target"], tuple(info["img_size"]), info.get("quant_mode", "fx"))
    model.to(device)
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, seed=args.seed) if world > 1 else None
    loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, shuffle=sampler is None, collate_fn=collate)
    net = nn.parallel.DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [local]) \
        if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    if rank == 0:
        print(f"QAT: {fake_quants} fake-quant modules on {info['quant_target']}; {args.epochs} epoch(s) of "
              f"{len(loader)} step(s) on {world} rank(s) from {args.checkpoint}", flush=True)
    try:
        losses = fine_tune(net, optimizer, loader, sampler, device, args.epochs, rank)
    except (AdapterError, FloatingPointError) as exc:  # an NPU-only loss on a CPU; a diverged loss
        return refuse(str(exc))
    if rank == 0:
        model.cpu()  # the export traces on the CPU, whatever the cards
        qat.freeze(model)
        val = CocoBoxes.split(args.dataset_root, args.split, tuple(info["img_size"]))
        try:
            img, _ = example_image(model, val, info)
        except LookupError as exc:
            return refuse(f"after QAT {exc}")
        export(model, info, img, args.out)
        ops = quantize_ops(args.out)
        summary = {"checkpoint": str(args.checkpoint), "onnx": str(args.out), "epochs": args.epochs,
                   "world_size": world, "batch_per_card": args.batch_size, "lr": args.lr,
                   "fake_quant_modules": fake_quants, "quantize_ops": ops, "first_loss": losses[0],
                   "last_loss": losses[-1]}
        args.out.with_name("qat.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"QAT export {args.out}: {ops} QuantizeLinear/DequantizeLinear nodes, "
              f"{args.out.stat().st_size / 1e6:.2f} MB; loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
    dist.barrier(world)
    dist.finish(world)
    return 0


def fine_tune(net: Any, optimizer: Any, loader: Any, sampler: Any, device: Any, epochs: int, rank: int) -> list[float]:
    """The QAT epochs with the toolkit's own loss (``net``: the model, or its DDP wrapper); each step's loss."""
    import torch
    from torch import nn

    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        for i, (imgs, targets) in enumerate(loader):
            t0 = time.perf_counter()
            parts = net([im.to(device) for im in imgs],
                        [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets])
            loss = sum(parts.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"QAT epoch {epoch} step {i + 1}: the loss is {float(loss)}")
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 10.0)
            optimizer.step()
            losses.append(float(loss))
            if rank == 0:
                print(f"QAT epoch [{epoch}][{i + 1}/{len(loader)}] loss: {float(loss):.5f}, "
                      f"time: {time.perf_counter() - t0:.3f}", flush=True)
    return losses


if __name__ == "__main__":
    sys.exit(main())
