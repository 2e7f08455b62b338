"""Stand-in for PaddleDetection's tools/export_model.py (same flags) over the pip-installed ppdet."""

from __future__ import annotations

import _common
from ppdet.engine import Trainer


def main() -> None:
    p = _common.parser()
    p.add_argument("--output_dir", type=str, default="output_inference", help="where the model is written")
    flags = p.parse_args()
    cfg = _common.load(flags)
    trainer = Trainer(cfg, mode="test")
    trainer.load_weights(cfg.weights)
    trainer.export(flags.output_dir)


if __name__ == "__main__":
    main()
