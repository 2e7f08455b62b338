"""Quantization-aware training with distillation (PaddleSlim ACT) of an exported PaddleSeg model, on the stage's device.

Why not PaddleSeg's ``deploy/slim/act/run_seg.py`` at ``npu_cann8.0``: it calls ``paddle.set_device('cpu')`` for
every ``--devices`` other than ``gpu``, so ``--devices npu`` quantizes R50-OS8 on the host's CPU under four ranks
without a word. This program keeps its flags (``--config_path`` the dataset config, ``--act_config_path``,
``--save_dir``, ``--devices``) and its steps - PaddleSeg's own ``Config``/``SegBuilder`` for the datasets, PaddleSlim's
``AutoCompression`` for the compression, PaddleSeg's ``metrics`` for the mIoU it selects on - and sets the device
it is given, refusing (exit 78, no retry) when that device is not the one Paddle then runs on.

One more difference, measured here: PaddleSeg's ``tools/export.py`` at that ref keeps the ASPP's ``dropout`` op in
the inference program without its ``Mask`` output, and PaddleSlim 2.6's distiller cannot merge such a program
(``Incorrect setting for output(s) of operator "dropout", should set: [Mask]``). The program compresses a copy
whose dropout ops declare a Mask (:func:`with_dropout_masks`; the op still does nothing in inference).

Runs under the toolkit's interpreter with the checkout importable (``paddleseg`` from ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2  # noqa: F401  (before paddle: paddle 2.6 bundles its own zlib)
import numpy as np
import paddle
from paddleseg.core.infer import reverse_transform
from paddleseg.cvlibs import Config, SegBuilder
from paddleseg.utils import metrics
from paddleslim.auto_compression import AutoCompression
from paddleslim.common import load_config as load_slim_config
from paddleslim.common.dataloader import get_feed_vars

from npuflow.errors import refuse

DEVICES = ("cpu", "gpu", "npu", "xpu")


def set_device(kind: str) -> str | None:
    """``paddle.set_device`` for ``kind`` with this rank's card; why it cannot run there, or None."""
    if kind == "cpu":
        paddle.set_device("cpu")
    else:
        if kind not in paddle.device.get_all_device_type() and not (kind == "gpu" and paddle.is_compiled_with_cuda()):
            return f"--devices {kind}: this Paddle has no {kind} device ({paddle.device.get_all_device_type()})"
        paddle.set_device(f"{kind}:{paddle.distributed.ParallelEnv().dev_id}")
    place = paddle.device.get_device()
    if not place.startswith(kind):
        return f"--devices {kind}: Paddle runs on {place}"
    print(f"Set device: {place}", flush=True)
    return None


def with_dropout_masks(glob: dict, out_dir: Path) -> bool:
    """Write the model with a ``Mask`` output on every dropout op that lacks one to ``out_dir`` and point ``glob``
    (ACT's Global section) at it; False, and nothing written, when no op lacks it."""
    exe = paddle.static.Executor(paddle.CPUPlace())
    program, _, _ = paddle.static.load_inference_model(
        glob["model_dir"], exe,  # a folder when the file names are given
        model_filename=glob["model_filename"], params_filename=glob["params_filename"])
    block = program.global_block()
    patched = 0
    for op in block.ops:
        if op.type == "dropout" and ("Mask" not in op.output_names or not op.output("Mask")):
            out = op.output("Out")[0]
            mask = block.create_var(name=f"{out}.mask", dtype="uint8", shape=block.var(out).shape)
            op.desc.set_output("Mask", [mask.name])
            patched += 1
    if not patched:
        return False
    # The program as loaded (feed and fetch ops included), written as it is: save_inference_model would prune
    # the unused Mask outputs again. The parameters do not change.
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.pdmodel").write_bytes(program.desc.serialize_to_string())
    shutil.copyfile(Path(glob["model_dir"]) / glob["params_filename"], out_dir / "model.pdiparams")
    print(f"{patched} dropout op(s) without a Mask output: compressing {out_dir} (the same program with masks "
          f"declared, which PaddleSlim's distiller needs)", flush=True)
    glob.update(model_dir=str(out_dir), model_filename="model.pdmodel", params_filename="model.pdiparams")
    return True


def evaluate(exe, program, feed_names, fetch_list, dataset) -> float:
    """mIoU of a static program on ``dataset`` (batch 1) with PaddleSeg's metrics, as run_seg.py selects on."""
    loader = paddle.io.DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0, return_list=True)
    intersect = pred_area = label_area = 0
    for data in loader:
        out = exe.run(program, feed={feed_names[0]: np.array(data["img"])}, fetch_list=fetch_list)[0]
        paddle.disable_static()  # the metrics are dynamic-graph code
        try:
            pred = reverse_transform(paddle.to_tensor(out), data["trans_info"], mode="bilinear")
            if len(pred.shape) == 4:  # logits, not class ids
                pred = paddle.argmax(pred, axis=1, keepdim=True, dtype="int32")
            i, p, lab = metrics.calculate_area(pred, paddle.to_tensor(np.array(data["label"]).astype("int64")),
                                               dataset.num_classes, ignore_index=dataset.ignore_index)
            intersect, pred_area, label_area = intersect + i, pred_area + p, label_area + lab
        finally:
            paddle.enable_static()
    paddle.disable_static()
    try:
        _, miou = metrics.mean_iou(intersect, pred_area, label_area)
    finally:
        paddle.enable_static()
    print(f"[EVAL] #Images: {len(dataset)} mIoU: {miou:.4f}", flush=True)
    return float(miou)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_path", required=True, help="the PaddleSeg config with train_dataset and val_dataset")
    p.add_argument("--act_config_path", required=True, help="the ACT strategy config (Global, QuantAware, ...)")
    p.add_argument("--save_dir", required=True, help="where the compressed model is written")
    p.add_argument("--devices", default="gpu", choices=DEVICES)
    args = p.parse_args(argv)
    paddle.enable_static()
    problem = set_device(args.devices)
    if problem:
        return refuse(problem)
    act = load_slim_config(args.act_config_path)
    glob = act["Global"]
    with_dropout_masks(glob, Path(args.save_dir).parent / f"{Path(args.save_dir).name}_input")
    data = Config(args.config_path)
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
        return evaluate(exe, program, feed_names, fetch_list, val_dataset)

    AutoCompression(model_dir=glob["model_dir"], model_filename=glob["model_filename"],
                    params_filename=glob["params_filename"], save_dir=args.save_dir, config=act,
                    train_dataloader=train_batches,
                    eval_callback=eval_callback if paddle.distributed.get_rank() == 0 else None,
                    deploy_hardware=glob.get("deploy_hardware") or None,
                    input_shapes=glob.get("input_shapes")).compress()
    return 0


if __name__ == "__main__":
    sys.exit(main())
