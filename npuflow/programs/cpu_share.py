"""Run a training script on this rank's share of the node's CPU cores, as a ModelZoo launch script's ``taskset``.

    python -m torch.distributed.run --nproc_per_node N ... -m npuflow.programs.cpu_share tools/train.py <args>

The SSD port's ``tools/dist_train.sh`` starts rank r of the node's N under ``taskset -c r*K-(r*K+K-1)`` with
K = nproc / N. torchrun starts the processes itself, so each binds itself first, in the same process: the pid
torchrun watches stays the training's, and the data loader workers it forks inherit the mask as taskset's child
does. The cores are those this process may use (what nproc counts: a container's cpuset), in their order. The
script then runs as ``python <script>`` runs it: ``__main__``, its folder first on ``sys.path``, its argv.
Python 3.9 compatible (the stage images).
"""

from __future__ import annotations

import os
import runpy
import sys


def share(cores: list[int], local_rank: int, local_world_size: int) -> list[int]:
    """Rank ``local_rank``'s K = len(cores) // local_world_size consecutive cores; all of them when there are
    fewer cores than ranks (where dist_train.sh's K = 0 makes taskset refuse its range)."""
    per = len(cores) // local_world_size
    if per < 1:
        return list(cores)
    return list(cores[local_rank * per:(local_rank + 1) * per])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m npuflow.programs.cpu_share <script> [args...]")
    rank, world = int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = share(sorted(os.sched_getaffinity(0)), rank, world)
    os.sched_setaffinity(0, cores)
    print(f"cpu_share: local rank {rank} of {world} on cores {cores[0]}-{cores[-1]}", flush=True)
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
