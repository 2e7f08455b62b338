"""Stand-in for PaddleDetection's deploy/auto_compression/eval.py (same flags: --config_path --devices): the
COCO bbox mAP of the inference model that ``Global.model_dir`` names, as a static program."""

from __future__ import annotations

import os

import _act
import paddle


def main() -> None:
    flags = _act.parser(__doc__).parse_args()
    paddle.enable_static()
    paddle.set_device(flags.devices)
    config, reader_cfg = _act.load(flags.config_path)
    glob = config["Global"]
    exe = paddle.static.Executor(paddle.CPUPlace() if flags.devices == "cpu" else paddle.get_device())
    program, feeds, fetches = paddle.static.load_inference_model(
        glob["model_dir"], exe, model_filename=glob["model_filename"], params_filename=glob["params_filename"])
    value = _act.coco_map(exe, program, feeds, fetches, reader_cfg)
    print(f"==> The metric of {os.path.join(glob['model_dir'], glob['model_filename'])} is {value:.4f}")


if __name__ == "__main__":
    main()
