"""Stand-in for PaddleDetection's tools/eval.py (same flags) over the pip-installed ppdet."""

from __future__ import annotations

import _common
from ppdet.engine import Trainer, init_parallel_env


def main() -> None:
    flags = _common.parser().parse_args()
    cfg = _common.load(flags)
    init_parallel_env()
    trainer = Trainer(cfg, mode="eval")
    trainer.load_weights(cfg.weights)
    trainer.evaluate()


if __name__ == "__main__":
    main()
