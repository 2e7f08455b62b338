"""Stand-in for PaddleDetection's deploy/auto_compression/run.py (same flags: --config_path --save_dir
--devices): quantization-aware training with distillation of an exported model through
``paddleslim.auto_compression.AutoCompression``, scored on the reader config's EvalDataset."""

from __future__ import annotations

import _act
import paddle
from paddleslim.auto_compression import AutoCompression
from ppdet.core.workspace import create


def main() -> None:
    p = _act.parser(__doc__)
    p.add_argument("--save_dir", default="output", help="where the compressed model is written")
    flags = p.parse_args()
    paddle.enable_static()
    paddle.set_device(flags.devices)
    config, reader_cfg = _act.load(flags.config_path)
    glob = config["Global"]
    feeds = _act.feed_names(glob)

    def train_batches():
        # As upstream: the TrainDataset through the EvalReader's transforms (fixed size, no augmentation).
        return _act.batches(create("EvalReader")(reader_cfg["TrainDataset"], reader_cfg["worker_num"],
                                                 return_list=True), feeds)

    def eval_callback(exe, program, feed_names, fetch_list) -> float:
        return _act.coco_map(exe, program, feed_names, fetch_list, reader_cfg)

    evaluate = glob.get("Evaluation") and paddle.distributed.get_rank() == 0
    AutoCompression(model_dir=glob["model_dir"], model_filename=glob["model_filename"],
                    params_filename=glob["params_filename"], save_dir=flags.save_dir, config=config,
                    train_dataloader=train_batches, eval_callback=eval_callback if evaluate else None).compress()


if __name__ == "__main__":
    main()
