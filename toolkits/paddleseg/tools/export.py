"""Stand-in for PaddleSeg's tools/export.py (same flags) over the paddleseg wheel: the trained model as a static
inference program (``model.pdmodel`` + ``model.pdiparams``) and ``deploy.yaml`` with its preprocessing."""

from __future__ import annotations

import argparse
import os

import _common  # noqa: F401  (cv2 before paddle; the paddle 2.6 workarounds)
import paddle
import yaml
from paddleseg.cvlibs import Config, SegBuilder
from paddleseg.utils import logger, utils


class InferenceNet(paddle.nn.Layer):
    """The model's first output, reduced as deployment wants it (class ids by default)."""

    def __init__(self, model: paddle.nn.Layer, output_op: str) -> None:
        super().__init__()
        self.model = model
        self.output_op = output_op

    def forward(self, x):
        out = self.model(x)[0]
        if self.output_op == "argmax":
            out = paddle.argmax(out, axis=1, keepdim=True, dtype="int32")
        elif self.output_op == "softmax":
            out = paddle.nn.functional.softmax(out, axis=1)
        return out


def drop_dropout(layer: paddle.nn.Layer) -> None:
    """Replace Dropout layers by the identity they are in eval mode, so the program has no dropout op: the
    same function, and PaddleSlim's distiller (ACT) cannot merge a program whose dropout op lacks its Mask."""
    for name, child in list(layer.named_children()):
        if isinstance(child, (paddle.nn.Dropout, paddle.nn.Dropout2D)):
            setattr(layer, name, paddle.nn.Identity())
        else:
            drop_dropout(child)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--model_path", required=True, help="the trained model.pdparams (best_model/)")
    p.add_argument("--save_dir", default="./output/inference_model")
    p.add_argument("--input_shape", nargs="+", type=int, default=None, help="fixed N C H W; default dynamic")
    p.add_argument("--output_op", choices=["argmax", "softmax", "none"], default="argmax")
    args = p.parse_args()
    cfg = Config(args.config)
    model = SegBuilder(cfg).model
    utils.load_entire_model(model, args.model_path)
    model.eval()
    drop_dropout(model)
    net = InferenceNet(model, args.output_op)
    shape = args.input_shape or [None, 3, None, None]
    static = paddle.jit.to_static(net, input_spec=[paddle.static.InputSpec(shape=shape, dtype="float32", name="x")])
    os.makedirs(args.save_dir, exist_ok=True)
    paddle.jit.save(static, os.path.join(args.save_dir, "model"))
    deploy = {"Deploy": {"model": "model.pdmodel", "params": "model.pdiparams",
                         "transforms": cfg.val_dataset_cfg.get("transforms", [{"type": "Normalize"}]),
                         "input_shape": args.input_shape, "output_op": args.output_op, "output_dtype": "int32"}}
    with open(os.path.join(args.save_dir, "deploy.yaml"), "w") as fh:
        yaml.dump(deploy, fh)
    logger.info(f"The inference model is saved in {args.save_dir}")


if __name__ == "__main__":
    main()
