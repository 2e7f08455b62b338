"""Stand-in for PaddleDetection's tools/train.py (same flags) over the pip-installed ppdet."""

from __future__ import annotations

import _common
from ppdet.engine import Trainer, init_parallel_env, set_random_seed


def main() -> None:
    p = _common.parser()
    p.add_argument("--eval", action="store_true", default=False, help="evaluate after each snapshot")
    p.add_argument("-r", "--resume", default=None, help="checkpoint path (without extension) to resume from")
    p.add_argument("--amp", action="store_true", default=False, help="automatic mixed precision")
    # Upstream declares this type=bool, so any non-empty string (even "False") is True; kept as is.
    p.add_argument("--enable_ce", type=bool, default=False, help="fix random seeds (continuous evaluation)")
    flags = p.parse_args()
    cfg = _common.load(flags)
    init_parallel_env()
    if flags.enable_ce:
        set_random_seed(0)
    trainer = Trainer(cfg, mode="train")
    if flags.resume is not None:
        trainer.resume_weights(flags.resume)
    elif cfg.get("pretrain_weights"):
        trainer.load_weights(cfg.pretrain_weights)
    trainer.train(flags.eval)


if __name__ == "__main__":
    main()
